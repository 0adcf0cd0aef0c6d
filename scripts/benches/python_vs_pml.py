"""dml's Python package against pytorch-metric-learning (pml), from Python, on the same inputs.

Two parts, each alternating the sides round by round (the order swapping every round), so each
ratio compares two measurements taken close together on a noisy machine:

* accuracy: `AccuracyCalculator(include=("precision_at_1", "r_precision",
  "mean_average_precision_at_r"), k="max_bin_count")` (leave-one-out, no NMI/AMI), dml's against
  pml's with faiss, on clustered unit-norm embeddings of three shapes: 35,000 x 64 in 5 classes,
  an SOP-like 60,000 x 128 (classes of 2-12 items), and pml issue #566's 120,000 x 128 in 6
  classes. `--default-calculator` adds pml's default calculator (`AccuracyCalculator()`: every
  metric at k=None) on the first shape. Each run is a fresh process (the inputs loaded from .npy,
  a warm-up call on 2,000 items, then the timed call), so its peak resident set (VmHWM, reset
  just before the call) and what the call added to the resident set are its own. Every run is
  capped at --cap-gib of resident memory (polled every 0.1 s) and an address-space limit 4 GiB
  above it, so a run that would exhaust the machine is stopped and reported instead.
* miners: pml's BatchHardMiner, TripletMarginMiner (0.2; "semihard" and pml's default "all"),
  MultiSimilarityMiner (0.1), DistanceWeightedMiner (0.5, 1.4) and PairMarginMiner (0.2, 0.8)
  against dml's of the same names and arguments, at B = 256 and 1,024 (P x K with K = 4,
  128-d clustered unit-norm embeddings), both given the same CPU torch tensor (dml reads it in
  place and returns torch tensors), in one process. pml runs twice per round, with torch at 2
  threads and at 1 (on a busy machine the OpenMP regions of pml's many small torch operations
  wait for a descheduled second thread, and one thread can be faster); the round's pml figure is
  the faster of the two. Per round each side makes enough calls for about 0.2 s (at least 5, 3
  above 0.5 s a call), each timed on its own, and the round's figure is the median call, which
  leaves out the calls that waited for the machine, on both sides; the three sides take turns
  going first.

Both sides use 2 threads (torch, faiss' OpenMP; dml's rayon pool has one thread per core).

Run from the repository root, after `cargo xtask python` (a release wheel in target/wheels/),
with the reference stack of `cargo xtask pyref` (torch, pml, faiss):

    .venv-ref/bin/python -m pip install --no-deps --upgrade --target target/py-bench/site target/wheels/dml-*.whl
    PYTHONPATH=target/py-bench/site .venv-ref/bin/python scripts/benches/python_vs_pml.py

It writes target/py-bench/python_vs_pml.json (every round; `--out NAME` for another file) and
prints the markdown tables of docs/benchmarks.md. `--only accuracy|miners`, `--rounds N`
(accuracy rounds, default 3), `--cases` (a comma-separated subset of the accuracy shapes),
`--miners` (comma-separated parts of miner names, e.g. `PairMargin,BatchHard`) and `--batches`
(e.g. `256`) for a subset of the miners, `--report` (only the tables).
"""

import argparse
import json
import os
import pathlib
import resource
import statistics
import subprocess
import sys
import time

import numpy as np

ROOT = pathlib.Path(__file__).resolve().parents[2]
WORK = ROOT / "target" / "py-bench"
THREADS = 2
R_METRICS = ("precision_at_1", "r_precision", "mean_average_precision_at_r")
GIB = 1 << 30


# --- inputs ----------------------------------------------------------------------------------


def clustered(sizes, d, seed):
    """Unit-norm points around one standard-normal centre per class (classes in blocks)."""
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(len(sizes)), sizes)
    x = rng.standard_normal((len(sizes), d))[labels] + rng.standard_normal((len(labels), d))
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x.astype(np.float32), labels.astype(np.int64)


def sop_like_sizes(total, lo, hi, seed):
    rng = np.random.default_rng(seed)
    sizes = []
    while sum(sizes) < total:
        sizes.append(int(rng.integers(lo, hi + 1)))
    sizes[-1] -= sum(sizes) - total
    if sizes[-1] < lo:
        sizes[-2] += sizes.pop()
    return sizes


ACCURACY_CASES = {
    "35000x64_5classes": lambda: clustered([7_000] * 5, 64, 1),
    "60000x128_sop_like": lambda: clustered(sop_like_sizes(60_000, 2, 12, 5), 128, 2),
    "120000x128_6classes": lambda: clustered([20_000] * 6, 128, 3),
}


def inputs(name):
    xp, yp = WORK / f"{name}_x.npy", WORK / f"{name}_y.npy"
    if not xp.exists():
        x, y = ACCURACY_CASES[name]()
        WORK.mkdir(parents=True, exist_ok=True)
        np.save(xp, x)
        np.save(yp, y)
    return xp, yp


# --- one accuracy run in a child process -------------------------------------------------------


def status_kib(field):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


def child(side, xp, yp, default_calculator):
    x, y = np.load(xp), np.load(yp)
    kw = {} if default_calculator else {"include": R_METRICS, "k": "max_bin_count"}
    if side == "pml":
        import faiss
        import torch
        from pytorch_metric_learning.utils.accuracy_calculator import AccuracyCalculator

        torch.set_num_threads(THREADS)
        faiss.omp_set_num_threads(THREADS)
        calc = AccuracyCalculator(device=torch.device("cpu"), **kw)
    else:
        import dml

        calc = dml.AccuracyCalculator(**kw)
    calc.get_accuracy(x[:2_000], y[:2_000])  # warm-up: thread pools, lazy imports
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # VmHWM := VmRSS
    before = status_kib("VmRSS")
    t = time.perf_counter()
    result = calc.get_accuracy(x, y)
    secs = time.perf_counter() - t
    hwm = status_kib("VmHWM")
    print(json.dumps({"secs": secs, "rss_before_mib": before / 1024, "hwm_mib": hwm / 1024, "result": result}))


def run_child(side, name, cap_gib, timeout_s, default_calculator):
    xp, yp = inputs(name)
    cmd = [sys.executable, __file__, "--child", side, str(xp), str(yp)]
    if default_calculator:
        cmd.append("--default-calculator")
    limit = int((cap_gib + 4) * GIB)

    def cap():
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))

    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, preexec_fn=cap)
    start, peak_kib, killed = time.monotonic(), 0, None
    while proc.poll() is None:
        try:
            with open(f"/proc/{proc.pid}/status") as f:
                rss = next((int(l.split()[1]) for l in f if l.startswith("VmRSS:")), 0)
        except OSError:
            rss = 0
        peak_kib = max(peak_kib, rss)
        if rss > cap_gib * GIB / 1024:
            killed = f"stopped at {rss / 1024 / 1024:.1f} GiB resident (cap {cap_gib} GiB)"
        elif time.monotonic() - start > timeout_s:
            killed = f"stopped after {timeout_s} s"
        if killed:
            proc.kill()
            break
        time.sleep(0.1)
    out, err = proc.communicate()
    if killed or proc.returncode != 0:
        reason = killed or f"exit {proc.returncode}: " + (err.strip().splitlines() or ["?"])[-1][:300]
        return {"side": side, "failed": reason, "wall_s": time.monotonic() - start, "peak_rss_mib": peak_kib / 1024}
    rec = json.loads(out.strip().splitlines()[-1])
    rec["side"] = side
    return rec


def accuracy(args):
    rows = []
    plan = [(name, False) for name in args.cases]
    if args.default_calculator:
        plan.append(("35000x64_5classes", True))
    for name, default in plan:
        inputs(name)
        rounds = []
        for r in range(args.rounds):
            sides = ["dml", "pml"] if r % 2 == 0 else ["pml", "dml"]
            got = {}
            for side in sides:
                if side == "pml" and any("failed" in x["pml"] for x in rounds):
                    got[side] = {"side": side, "failed": "not rerun: it failed in an earlier round"}
                    continue
                time.sleep(0.2)
                got[side] = run_child(side, name, args.cap_gib, args.timeout, default)
                print(f"{name}{' default' if default else ''} round {r} {side}: {summary(got[side])}", flush=True)
            rounds.append(got)
        rows.append({"case": name, "default_calculator": default, "rounds": rounds})
        save(args, "accuracy", rows)
    return rows


def summary(rec):
    if "failed" in rec:
        return f"FAILED ({rec['failed']})"
    return f"{rec['secs']:.2f} s, peak {rec['hwm_mib']:.0f} MiB, added {rec['hwm_mib'] - rec['rss_before_mib']:.0f} MiB"


# --- miners ----------------------------------------------------------------------------------


def miners(args):
    import torch
    from pytorch_metric_learning import miners as pml_miners

    import dml

    pairs = [
        ("BatchHardMiner()", dml.BatchHardMiner, pml_miners.BatchHardMiner, {}),
        ("TripletMarginMiner(0.2, semihard)", dml.TripletMarginMiner, pml_miners.TripletMarginMiner,
         {"margin": 0.2, "type_of_triplets": "semihard"}),
        ("TripletMarginMiner(0.2, all)", dml.TripletMarginMiner, pml_miners.TripletMarginMiner,
         {"margin": 0.2, "type_of_triplets": "all"}),
        ("MultiSimilarityMiner(0.1)", dml.MultiSimilarityMiner, pml_miners.MultiSimilarityMiner, {"epsilon": 0.1}),
        ("DistanceWeightedMiner(0.5, 1.4)", dml.DistanceWeightedMiner, pml_miners.DistanceWeightedMiner,
         {"cutoff": 0.5, "nonzero_loss_cutoff": 1.4}),
        ("PairMarginMiner(0.2, 0.8)", dml.PairMarginMiner, pml_miners.PairMarginMiner,
         {"pos_margin": 0.2, "neg_margin": 0.8}),
    ]
    wanted = [w for w in args.miners.split(",") if w]
    pairs = [p for p in pairs if not wanted or any(w in p[0] for w in wanted)]
    rows = []
    for b in (int(v) for v in args.batches.split(",")):
        x, y = clustered([4] * (b // 4), 128, 10 + b)
        xt, yt = torch.from_numpy(x), torch.from_numpy(y)
        for name, dml_cls, pml_cls, kw in pairs:
            ours, theirs = dml_cls(**kw), pml_cls(**kw)
            same = agree(name, ours(xt, yt), theirs(xt, yt))
            calls = {"dml": lambda: ours(xt, yt), "pml2": lambda: theirs(xt, yt), "pml1": lambda: theirs(xt, yt)}
            threads = {"dml": THREADS, "pml2": 2, "pml1": 1}
            for side, f in calls.items():
                torch.set_num_threads(threads[side])
                for _ in range(3):
                    f()  # warm-up
            reps = {}
            for side, f in calls.items():
                torch.set_num_threads(threads[side])
                t = once(f)
                reps[side] = max(3 if t > 0.5 else 5, int(0.2 / t))
            rounds = []
            sides = list(calls)
            for r in range(args.miner_rounds):
                order = sides[r % 3 :] + sides[: r % 3]  # each side first in turn
                got = {}
                for side in order:
                    torch.set_num_threads(threads[side])
                    time.sleep(0.2)
                    got[side] = statistics.median(once(calls[side]) for _ in range(reps[side]))
                got["pml"] = min(got["pml1"], got["pml2"])
                rounds.append(got)
            rows.append({"miner": name, "batch": b, "tuples_agree": same, "reps": reps, "rounds": rounds})
            print(f"B={b} {name}: {miner_line(rows[-1])}", flush=True)
            save(args, "miners", rows)
    return rows


def once(f):
    t = time.perf_counter()
    f()
    return max(time.perf_counter() - t, 1e-6)


def agree(name, ours, theirs):
    """Deterministic miners must return pml's tuples (as sets: pml's multi-similarity order is an
    unstable sort); the random one only tuples of the same shape."""
    ours = [t.tolist() for t in ours]
    theirs = [t.tolist() for t in theirs]
    if name.startswith("DistanceWeighted"):
        return "random (not compared)"
    if len(ours) == 3:
        return sorted(zip(*ours)) == sorted(zip(*theirs))
    return sorted(zip(*ours[:2])) == sorted(zip(*theirs[:2])) and sorted(zip(*ours[2:])) == sorted(zip(*theirs[2:]))


def miner_line(row):
    d = statistics.median(r["dml"] for r in row["rounds"])
    p = statistics.median(r["pml"] for r in row["rounds"])
    p1 = statistics.median(r["pml1"] for r in row["rounds"])
    p2 = statistics.median(r["pml2"] for r in row["rounds"])
    q = quartiles([r["dml"] / r["pml"] for r in row["rounds"]])
    return f"dml {d * 1e3:.2f} ms, pml {p * 1e3:.2f} ms (1 thread {p1 * 1e3:.2f}, 2 threads {p2 * 1e3:.2f}), ratio {q[1]:.3f} ({q[0]:.3f}-{q[2]:.3f}), same tuples: {row['tuples_agree']}"


def quartiles(v):
    v = sorted(v)
    if len(v) < 3:
        return (v[0], statistics.median(v), v[-1])
    q = statistics.quantiles(v, n=4, method="inclusive")
    return (q[0], q[1], q[2])


# --- report ----------------------------------------------------------------------------------


def save(args, key, rows):
    path = WORK / args.out
    data = json.loads(path.read_text()) if path.exists() else {}
    data[key] = rows
    data["machine"] = {"cpus": os.cpu_count(), "threads": THREADS, "python": sys.version.split()[0]}
    WORK.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=1))


def fmt_s(s):
    if s >= 1:
        return f"{s:.2f} s"
    if s >= 1e-3:
        return f"{s * 1e3:.3g} ms"
    return f"{s * 1e6:.0f} µs"


def fmt_ratio(q):
    f = (lambda v: f"{v:.3f}") if q[1] < 0.1 else (lambda v: f"{v:.2f}")
    return f"**{f(q[1])}×** ({f(q[0])}–{f(q[2])})"


def report(args):
    data = json.loads((WORK / args.out).read_text())
    lines = []
    if "accuracy" in data:
        lines += ["| case | dml time | pml time | dml / pml | dml peak (added) | pml peak (added) |", "|---|--:|--:|--:|--:|--:|"]
        for row in data["accuracy"]:
            name = row["case"] + (" (`AccuracyCalculator()`)" if row["default_calculator"] else "")
            ok = [r for r in row["rounds"] if "failed" not in r["dml"] and "failed" not in r["pml"]]
            dml_ok = [r["dml"] for r in row["rounds"] if "failed" not in r["dml"]]
            pml_fail = [r["pml"]["failed"] for r in row["rounds"] if "failed" in r["pml"]]

            def mem(recs):
                hwm = statistics.median(r["hwm_mib"] for r in recs)
                add = statistics.median(r["hwm_mib"] - r["rss_before_mib"] for r in recs)
                return f"{hwm:,.0f} MiB ({add:,.0f})"

            d = statistics.median(r["secs"] for r in dml_ok)
            if ok:
                p = statistics.median(r["pml"]["secs"] for r in ok)
                q = quartiles([r["dml"]["secs"] / r["pml"]["secs"] for r in ok])
                pml_mem = mem([r["pml"] for r in ok])
                ratio = fmt_ratio(q)
                pml_t = fmt_s(p)
            else:
                pml_t, ratio, pml_mem = "failed", "–", pml_fail[0]
            lines.append(f"| {name} | {fmt_s(d)} | {pml_t} | {ratio} | {mem(dml_ok)} | {pml_mem} |")
        lines.append("")
    if "miners" in data:
        lines += ["| miner | B | dml | pml, 2 threads | pml, 1 thread | dml / pml (faster) | same tuples |", "|---|--:|--:|--:|--:|--:|---|"]
        for row in data["miners"]:
            d = statistics.median(r["dml"] for r in row["rounds"])
            p1 = statistics.median(r["pml1"] for r in row["rounds"])
            p2 = statistics.median(r["pml2"] for r in row["rounds"])
            q = quartiles([r["dml"] / r["pml"] for r in row["rounds"]])
            same = {True: "yes", False: "**no**"}.get(row["tuples_agree"], row["tuples_agree"])
            lines.append(
                f"| `{row['miner']}` | {row['batch']} | {fmt_s(d)} | {fmt_s(p2)} | {fmt_s(p1)} | {fmt_ratio(q)} | {same} |"
            )
    text = "\n".join(lines) + "\n"
    (WORK / args.out).with_suffix(".md").write_text(text)
    print(text)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--child", nargs=3, metavar=("SIDE", "X", "Y"))
    parser.add_argument("--only", choices=["accuracy", "miners"])
    parser.add_argument("--cases", default=",".join(ACCURACY_CASES))
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--miner-rounds", type=int, default=11)
    parser.add_argument("--miners", default="", help="comma-separated parts of miner names: only those miners")
    parser.add_argument("--batches", default="256,1024", help="comma-separated batch sizes of the miners")
    parser.add_argument("--cap-gib", type=float, default=16.0)
    parser.add_argument("--timeout", type=float, default=1800.0)
    parser.add_argument("--default-calculator", action="store_true")
    parser.add_argument("--report", action="store_true", help="only print the tables of the saved run")
    parser.add_argument("--out", default="python_vs_pml.json", help="results file under target/py-bench/")
    args = parser.parse_args()
    if args.child:
        side, xp, yp = args.child
        child(side, xp, yp, args.default_calculator)
        return
    if not args.report:
        args.cases = [c for c in args.cases.split(",") if c]
        if args.only in (None, "miners"):
            miners(args)
        if args.only in (None, "accuracy"):
            accuracy(args)
    report(args)


if __name__ == "__main__":
    main()
