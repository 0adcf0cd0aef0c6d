"""The torch.distributed (Gloo) side of the collective bandwidth comparison.

benches/examples/collectives.rs runs it beside dml-distributed (`cargo xtask bench
--collectives`). Without rank variables it launches itself twice (ranks 0 and 1 on a free
loopback port), waits, and prints rank 0's JSON lines on stdout:

  python benches/python/collectives.py [--reps SCALE] [--sizes 1,16,128]

Each rank: torch.set_num_threads(1), init_process_group("gloo", tcp://127.0.0.1:PORT) with
GLOO_SOCKET_IFNAME=lo unless set (dml binds Gloo to 127.0.0.1 the same way), then for each size
(MiB of f32 per rank) 2 warm-up calls, a barrier, and `reps` calls timed one by one of
  all_reduce  dist.all_reduce(t) (sum, in place);
  all_gather  dist.all_gather(out, t) into a list of 2 tensors allocated once per size. Equal
              sizes on every rank and no header round: dml's all_gather first gathers a small
              shape header (per-rank row counts may differ) and allocates its outputs per call.
The line format matches the Rust side: "gbps" = bytes per rank / median seconds per call / 1e9.
"""

import argparse
import datetime
import json
import os
import socket
import statistics
import subprocess
import sys
import time

RANK_VAR = "DML_COLLECTIVES_RANK"
PORT_VAR = "DML_COLLECTIVES_PORT"
WORLD = 2
WARM_UP = 2
DEFAULT_SIZES = [(1, 20), (16, 10), (128, 4)]
BANDWIDTH_DEFINITION = (
    "GB/s = bytes per rank (the tensor each rank passes) / median seconds per call / 1e9"
)


def reps_for(mib, scale):
    base = DEFAULT_SIZES[0][1]
    for m, r in DEFAULT_SIZES:
        if mib >= m:
            base = r
    return max(1, round(base * scale))


def result_line(op, mib, nbytes, times):
    med = statistics.median(times)
    return json.dumps(
        {
            "kind": "result",
            "impl": "torch",
            "op": op,
            "mib": mib,
            "bytes": nbytes,
            "reps": len(times),
            "median_s": med,
            "mean_s": sum(times) / len(times),
            "min_s": min(times),
            "times_s": times,
            "gbps": nbytes / med / 1e9,
        }
    )


def timed(dist, reps, call):
    for _ in range(WARM_UP):
        call()
    dist.barrier()
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return times


def worker(rank, port, args):
    import torch
    import torch.distributed as dist

    torch.set_num_threads(1)
    dist.init_process_group(
        "gloo",
        init_method=f"tcp://127.0.0.1:{port}",
        rank=rank,
        world_size=WORLD,
        timeout=datetime.timedelta(seconds=120),
    )
    if rank == 0:
        print(
            json.dumps(
                {
                    "kind": "meta",
                    "impl": "torch",
                    "torch": torch.__version__,
                    "world_size": WORLD,
                    "torch_threads": torch.get_num_threads(),
                    "gloo_socket_ifname": os.environ.get("GLOO_SOCKET_IFNAME"),
                    "bandwidth": BANDWIDTH_DEFINITION,
                    "all_gather": "dist.all_gather into a preallocated list; equal sizes, "
                    "no header round",
                }
            ),
            flush=True,
        )
    value = float(rank + 1)
    for mib in args.sizes:
        nbytes = mib << 20
        numel = nbytes // 4
        reps = reps_for(mib, args.reps)

        t = torch.full((numel,), value, dtype=torch.float32)
        dist.all_reduce(t)
        got = t[-1].item()
        if got != 3.0:
            raise SystemExit(f"all_reduce at {mib} MiB: got {got}, expected 3")
        times = timed(dist, reps, lambda: dist.all_reduce(t))
        if rank == 0:
            print(result_line("all_reduce", mib, nbytes, times), flush=True)
        del t

        t = torch.full((numel,), value, dtype=torch.float32)
        out = [torch.empty_like(t) for _ in range(WORLD)]
        dist.all_gather(out, t)
        got = [o[-1].item() for o in out]
        if got != [1.0, 2.0]:
            raise SystemExit(f"all_gather at {mib} MiB: got {got}, expected [1, 2]")
        times = timed(dist, reps, lambda: dist.all_gather(out, t))
        if rank == 0:
            print(result_line("all_gather", mib, nbytes, times), flush=True)
        del t, out
    dist.barrier()
    dist.destroy_process_group()


def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch(args, argv):
    port = free_port()
    children = []
    for rank in range(WORLD):
        env = dict(os.environ)
        env[RANK_VAR] = str(rank)
        env[PORT_VAR] = str(port)
        env.setdefault("GLOO_SOCKET_IFNAME", "lo")
        children.append(
            subprocess.Popen(
                [sys.executable, os.path.abspath(__file__), *argv],
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
        )
    outputs = []
    for c in children:
        try:
            out, err = c.communicate(timeout=300)
        except subprocess.TimeoutExpired:
            for k in children:
                k.kill()
            raise SystemExit("collectives.py: ranks still running after 300 s, killed")
        outputs.append((c.returncode, out, err))
    if any(code != 0 for code, _, _ in outputs):
        for rank, (code, out, err) in enumerate(outputs):
            print(f"--- rank {rank} (exit {code}) ---\n{out}{err}", file=sys.stderr)
        raise SystemExit(1)
    for line in outputs[0][1].splitlines():
        if line.lstrip().startswith("{"):
            print(line)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=float, default=1.0, help="scale of the timed calls")
    parser.add_argument(
        "--sizes",
        type=lambda s: [int(x) for x in s.split(",")],
        default=[m for m, _ in DEFAULT_SIZES],
        help="comma-separated MiB of f32 per rank",
    )
    argv = sys.argv[1:]
    args = parser.parse_args(argv)
    if RANK_VAR in os.environ:
        worker(int(os.environ[RANK_VAR]), int(os.environ[PORT_VAR]), args)
    else:
        launch(args, argv)


if __name__ == "__main__":
    main()
