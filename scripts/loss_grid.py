"""Train every loss of configs/losses/ on MNIST and Fashion-MNIST over several seeds with the
`dml` binary, and tabulate them beside the multi-similarity recipe and the two baselines.

    cargo build --release -p dml
    python3 scripts/loss_grid.py --jobs 2            # trains what is missing, then tabulates
    python3 scripts/loss_grid.py --tabulate-only     # re-renders the tables and charts

Each run is `dml train` on configs/losses/<loss>.toml (the MNIST recipe of configs/mnist.toml
with that loss; for Fashion-MNIST only the data set changes) with `run.seed` set, written to
runs/loss-grid/<set>/<loss>/seed-<s>/. A run whose report.json exists is not trained again, so
the script can be stopped and restarted. The held-out evaluation is the recipe's (34,265 digits
or 35,000 garments of the five held-out classes, every metric).

The table starts from runs/results/<set>/compare.json, the three-seed multi-similarity grid of
docs/results.md (made by `dml compare --seeds 0,1,2`), which holds the raw-input baseline and the
untrained network of each seed. The untrained network does not depend on the loss (its weights
are drawn before the loss's), so the first run of each seed evaluates it again and the script
checks that it matches. The merged grid is written to runs/loss-grid/<set>/compare.json and
rendered by `dml compare --tabulate` (compare.md, map_at_r.png/svg).
"""

import argparse
import concurrent.futures
import json
import pathlib
import re
import subprocess
import sys
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]
DML = ROOT / "target" / "release" / "dml"
LOSSES = [
    "proxy_anchor",
    "proxy_nca",
    "normalized_softmax",
    "cosface",
    "arcface",
    "sub_center_arcface",
    "soft_triple",
    "sup_con",
]
SETS = {
    "mnist": ('kind = "mnist"\npath = "data/mnist"', "configs/mnist.toml"),
    "fashion-mnist": ('kind = "fashion_mnist"\npath = "data/fashion-mnist"', "configs/fashion-mnist.toml"),
}


def config_text(loss, data_set, seed, out_dir, eval_before):
    text = (ROOT / "configs" / "losses" / f"{loss}.toml").read_text()
    data, _ = SETS[data_set]
    text = text.replace('kind = "mnist"\npath = "data/mnist"', data)
    text = re.sub(r"(?m)^seed = \d+$", f"seed = {seed}", text, count=1)
    text = re.sub(r'(?m)^output_dir = ".*"$', f"output_dir = {json.dumps(str(out_dir))}", text, count=1)
    text = re.sub(r'(?m)^name = ".*"$', f'name = "{data_set}-{loss}"', text, count=1)
    extra = f"\neval_before = {'true' if eval_before else 'false'}\nplots = false\n"
    text = text.replace("[train]\n", "[train]" + extra, 1)
    text = text.replace("[eval]\n", "[eval]\nraw_input = false\n", 1)
    return text


def run_dir(out, data_set, loss, seed):
    return out / data_set / loss / f"seed-{seed}"


def train(out, data_set, loss, seed, eval_before):
    d = run_dir(out, data_set, loss, seed)
    if (d / "report.json").exists():
        return d, 0.0
    d.mkdir(parents=True, exist_ok=True)
    cfg = d / "run.toml"
    cfg.write_text(config_text(loss, data_set, seed, d, eval_before))
    start = time.time()
    with open(d / "train.log", "w") as log:
        subprocess.run([str(DML), "train", "--config", str(cfg)], cwd=ROOT, stdout=log, stderr=log, check=True)
    return d, time.time() - start


def tabulate(out, data_set, losses, seeds):
    base = json.loads((ROOT / "runs" / "results" / data_set / "compare.json").read_text())
    untrained = {u["seed"]: u["metrics"] for u in base["untrained"]}
    for loss in losses:
        runs = []
        for seed in seeds:
            d = run_dir(out, data_set, loss, seed)
            if not (d / "report.json").exists():
                continue
            report = json.loads((d / "report.json").read_text())
            if report.get("initial_metrics"):
                got, want = report["initial_metrics"], untrained[seed]
                for k in ("precision_at_1", "map_at_r"):
                    if abs(got[k] - want[k]) > 1e-9:
                        sys.exit(f"{d}: untrained {k} {got[k]} differs from the grid's {want[k]}")
            runs.append({"seed": seed, "metrics": report["final_metrics"], "train_seconds": report["train_seconds"]})
        if runs:
            base["cells"].append({"loss": loss, "miner": "none", "runs": runs})
    target = out / data_set
    target.mkdir(parents=True, exist_ok=True)
    (target / "compare.json").write_text(json.dumps(base, indent=2) + "\n")
    _, recipe = SETS[data_set]
    subprocess.run(
        [str(DML), "compare", "--tabulate", "--config", recipe, "--output-dir", str(target)],
        cwd=ROOT,
        check=True,
    )


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sets", default="mnist,fashion-mnist")
    ap.add_argument("--losses", default=",".join(LOSSES))
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--jobs", type=int, default=2, help="runs at once (each uses one LibTorch thread)")
    ap.add_argument("--out", default=str(ROOT / "runs" / "loss-grid"))
    ap.add_argument("--tabulate-only", action="store_true")
    a = ap.parse_args()
    sets = a.sets.split(",")
    losses = a.losses.split(",")
    seeds = [int(s) for s in a.seeds.split(",")]
    out = pathlib.Path(a.out)
    if not a.tabulate_only:
        # Seeds outer, so one seed of every cell is done first.
        jobs = [(s, d, l) for s in seeds for d in sets for l in losses]
        total = len(jobs)
        with concurrent.futures.ThreadPoolExecutor(a.jobs) as pool:
            futures = {
                pool.submit(train, out, d, l, s, l == losses[0]): (d, l, s)
                for (s, d, l) in jobs
            }
            for n, f in enumerate(concurrent.futures.as_completed(futures), 1):
                d, l, s = futures[f]
                path, secs = f.result()
                print(f"[{n}/{total}] {d} {l} seed {s}: {secs:.0f} s ({path})", flush=True)
    for d in sets:
        tabulate(out, d, losses, seeds)


if __name__ == "__main__":
    main()
