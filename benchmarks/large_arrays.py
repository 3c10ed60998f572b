"""Benchmark: training on a large .npy array file with --train-size, by peak resident memory.

Generates an (N, D) float32 .npy of values in [0, 1] (default 50,000 x 4,096: 819 MB) and, in
fresh processes, trains one epoch on it with ``--train-size`` and ``--eval-size``, each run
measured by its peak resident memory (``ru_maxrss``, which counts the pages of memory-mapped files
a process touches) and its time:
  - ``large``: the run on the large file;
  - ``baseline``: the same run on a file just large enough for the rows it uses -- what torch, the
    model, the rows used and the evaluation sets cost, whatever the file's size.
``--before PATH`` also runs ``large`` with the checkout at PATH (e.g. the code before a change), on
the same file. The files are deleted afterwards.

    nice python benchmarks/large_arrays.py --before /path/to/other/checkout --out large_arrays.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
GENERATE_ROWS = 1024  # rows generated at a time
CHILD = """
import json, resource, sys, time
import torch
torch.set_num_threads(1)
from pyro_vae.cli.fit import main
start = time.perf_counter()
status = main(sys.argv[1:])
print(json.dumps({"status": status, "seconds": time.perf_counter() - start,
                  "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024}))
"""


def write_array(path: Path, rows: int, dims: int, seed: int = 0) -> None:
    """An (rows, dims) float32 .npy of values in [0, 1], written a block at a time."""
    rng = np.random.default_rng(seed)
    out = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=(rows, dims))
    for start in range(0, rows, GENERATE_ROWS):
        stop = min(rows, start + GENERATE_ROWS)
        out[start:stop] = rng.random((stop - start, dims), dtype=np.float32)
    out.flush()
    del out


def fit(data: Path, out: Path, args, code: Path) -> dict:
    """One epoch of `fit` on ``data`` in a fresh process running the checkout ``code``."""
    argv = ["--data", str(data), "--out", str(out), "--train-size", str(args.train_size)]
    argv += ["--eval-size", str(args.eval_size), "--epochs", "1", "--batch-size", "128"]
    argv += ["--latent-dim", "8", "--hidden", "64", "--device", "cpu"]
    env = {**os.environ, "PYTHONPATH": str(code), "OMP_NUM_THREADS": "1"}
    done = subprocess.run(  # run outside any checkout: `python -c` puts the working folder first on sys.path
        [sys.executable, "-c", CHILD, *argv], capture_output=True, text=True, env=env, cwd=out.parent, timeout=3600
    )
    if done.returncode != 0:
        raise SystemExit(f"fit on {data} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=50_000)
    parser.add_argument("--dims", type=int, default=4096)
    parser.add_argument("--train-size", type=int, default=512)
    parser.add_argument("--eval-size", type=int, default=256)
    parser.add_argument("--before", type=Path, help="a checkout to run the large case with as well")
    parser.add_argument("--out", type=Path, help="write the JSON here as well as printing it")
    args = parser.parse_args()
    used = args.train_size + 2 * args.eval_size  # the first rows of train, valid and test
    row_bytes = 4 * args.dims
    # a file whose 0.8 / 0.1 / 0.1 split just holds those rows
    small_rows = max(args.train_size * 10 // 8, args.eval_size * 10) + 10
    work = Path(tempfile.mkdtemp(prefix="large-arrays-"))
    try:
        start = time.perf_counter()
        write_array(work / "large.npy", args.rows, args.dims)
        write_array(work / "small.npy", small_rows, args.dims)
        generated = time.perf_counter() - start
        runs = {"baseline": fit(work / "small.npy", work / "run-small", args, REPO)}
        runs["large"] = fit(work / "large.npy", work / "run-large", args, REPO)
        if args.before is not None:
            runs["large_before"] = fit(work / "large.npy", work / "run-before", args, args.before.resolve())
        file_bytes = (work / "large.npy").stat().st_size
    finally:
        shutil.rmtree(work, ignore_errors=True)
    rows_used_bytes = used * row_bytes
    result = {
        "benchmark": "large_arrays",
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": platform.processor() or platform.machine(),
        "file": {"shape": [args.rows, args.dims], "dtype": "float32", "bytes": file_bytes},
        "generate_seconds": generated,
        "train_size": args.train_size,
        "eval_size": args.eval_size,
        "rows_used": used,
        "rows_used_bytes": rows_used_bytes,
        "runs": runs,
        # the large file's cost beyond the baseline run, in units of the rows used
        "excess_over_baseline_in_rows_used": {
            name: (run["peak_rss_bytes"] - runs["baseline"]["peak_rss_bytes"]) / rows_used_bytes
            for name, run in runs.items()
            if name != "baseline"
        },
        "peak_over_file_size": {name: run["peak_rss_bytes"] / file_bytes for name, run in runs.items()},
    }
    text = json.dumps(result, indent=2)
    print(text)
    if args.out is not None:
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
