#!/usr/bin/env python3
"""Convert torchvision's ImageNet ResNet weights into a backbone file for dml-models.

dml-models builds its ResNet backbones with tch's `vision::resnet`, whose variable names are
torchvision's (`conv1.weight`, `layer1.0.bn1.running_mean`, `layer2.0.downsample.0.weight`, ...).
The conversion therefore only has to

* drop the ImageNet classifier (`fc.weight`, `fc.bias`): dml-models puts its own embedding head
  there;
* drop batch norm's `num_batches_tracked` counters, which tch's batch norm does not have;
* store every tensor as contiguous float32 in a safetensors file (torch's pickle `.pth` format
  cannot be read from Rust).

Usage (needs torch and torchvision, which the Rust side never needs):

    python scripts/convert_torchvision_weights.py --arch resnet50 --out resnet50-imagenet.safetensors
    python scripts/convert_torchvision_weights.py --arch resnet18 --weights IMAGENET1K_V1 --out r18.safetensors
    # Offline, from a state dict already downloaded with torch.save / torch.hub:
    python scripts/convert_torchvision_weights.py --arch resnet50 --state-dict resnet50-11ad3fa6.pth --out r50.safetensors

Then in Rust: `net.load_backbone(&mut vs, "resnet50-imagenet.safetensors")?`.
The images must then be preprocessed as torchvision's were: RGB in [0, 1], normalised with
mean (0.485, 0.456, 0.406) and std (0.229, 0.224, 0.225).
"""

from __future__ import annotations

import argparse
import json
import os
import struct
import sys
import tempfile

ARCHS = ("resnet18", "resnet50")


def convert_key(name: str) -> str | None:
    """The dml-models backbone name of a torchvision ResNet state-dict key, or None to drop it.

    Names below the model root are identical in torchvision and tch's `vision::resnet`; only the
    classifier and the batch-norm step counters have no counterpart.
    """
    if name == "fc" or name.startswith("fc."):
        return None
    if name.rsplit(".", 1)[-1] == "num_batches_tracked":
        return None
    return name


def convert_names(names):
    """(torchvision name, converted name) for each kept key, in order."""
    out = []
    for name in names:
        new = convert_key(name)
        if new is not None:
            out.append((name, new))
    return out


def write_safetensors(tensors, path):
    """Write {name: float32 torch tensor} as safetensors, atomically (temp file, fsync, rename).

    Written by hand (the format is an 8-byte little-endian header length, a JSON header, then the
    raw little-endian data) so that the script needs no package beyond torch and torchvision.
    """
    import torch

    header = {}
    blobs = []
    offset = 0
    for name in sorted(tensors):
        t = tensors[name].detach().to(device="cpu", dtype=torch.float32).contiguous()
        data = t.numpy().astype("<f4", copy=False).tobytes()
        header[name] = {"dtype": "F32", "shape": list(t.shape), "data_offsets": [offset, offset + len(data)]}
        blobs.append(data)
        offset += len(data)
    head = json.dumps(header, separators=(",", ":")).encode("utf-8")
    head += b" " * (-len(head) % 8)  # the data section starts 8-byte aligned
    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(dir=folder, prefix="." + os.path.basename(path) + ".", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(struct.pack("<Q", len(head)))
            f.write(head)
            for blob in blobs:
                f.write(blob)
            f.flush()
            os.fsync(f.fileno())
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp's files are private; give a plain file's mode
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def load_state_dict(arch, weights, state_dict_path):
    import torch

    if state_dict_path is not None:
        sd = torch.load(state_dict_path, map_location="cpu", weights_only=True)
        if isinstance(sd, dict) and "state_dict" in sd and isinstance(sd["state_dict"], dict):
            sd = sd["state_dict"]
        return sd
    try:
        import torchvision
    except ImportError:
        sys.exit("torchvision is not installed: `pip install torchvision`, or pass --state-dict FILE")
    model = torchvision.models.get_model(arch, weights=weights)
    return model.state_dict()


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--arch", choices=ARCHS, required=True)
    parser.add_argument(
        "--weights",
        default="DEFAULT",
        help="torchvision weights enum member, e.g. IMAGENET1K_V1 or IMAGENET1K_V2 (default: DEFAULT)",
    )
    parser.add_argument("--state-dict", help="convert this torch.save'd state dict instead of downloading")
    parser.add_argument("--out", required=True, help="the .safetensors file to write")
    args = parser.parse_args(argv)

    sd = load_state_dict(args.arch, args.weights, args.state_dict)
    kept = convert_names(sd.keys())
    dropped = sorted(set(sd.keys()) - {old for old, _ in kept})
    write_safetensors({new: sd[old] for old, new in kept}, args.out)
    n_params = sum(sd[old].numel() for old, _ in kept)
    print(f"wrote {len(kept)} tensors ({n_params} values) to {args.out}; dropped {len(dropped)}: "
          f"{', '.join(d for d in dropped if not d.endswith('num_batches_tracked'))}"
          f" and {sum(d.endswith('num_batches_tracked') for d in dropped)} num_batches_tracked")


if __name__ == "__main__":
    main()
