"""Benchmark: how many images and epochs a convolutional VAE needs on a folder of colour images.

Writes the folder notebook 05 draws (32x32 RGB PNGs, a centred disc or square of a random light
colour and size on a random dark plain background, two class folders), then for every IMAGES
trains ``python -m pyro_vae.fit --data FOLDER --net conv --likelihood discretized-logistic`` in a
fresh process (one torch thread) on the first IMAGES of the folder, split 0.8 / 0.1 / 0.1, and
records the test ELBO in bits per dimension (on the whole test split) after each of the EPOCHS,
with the wall and CPU time. One run per folder size serves every epoch budget: the learning rate
falls by the same factor after every epoch and nothing depends on the number of epochs asked
for, so a run's epoch-k record is what a k-epoch run ends with. A model that gives each of the
256 values of every pixel the same probability scores 8 bits/dim.

    nice -n 10 python benchmarks/own_data_bits.py --out benchmarks/results/own_data_bits.json
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from reference import machine

# The notebook's settings (notebooks/05_your_own_data.ipynb), the ones its table in
# docs/own-data.md was measured with.
FIT_ARGS = [
    "--net", "conv", "--likelihood", "discretized-logistic", "--latent-dim", "16", "--hidden", "256",
    "--batch-size", "32", "--lr", "5e-3", "--accelerator", "cpu",
]  # fmt: skip
SIDE = 32


def draw_shapes(folder: Path, n: int, seed: int = 0) -> None:
    """The notebook's n pictures: image i is a disc (i even) or a square (i odd), in
    ``folder/disc`` or ``folder/square``."""
    from PIL import Image, ImageDraw

    rng = np.random.default_rng(seed)
    for i in range(n):
        kind = ("disc", "square")[i % 2]
        image = Image.new("RGB", (SIDE, SIDE), tuple(int(c) for c in rng.integers(0, 120, 3)))
        r = int(rng.integers(7, 14))  # half the side: 15 to 27 pixels across, centred
        shape = ImageDraw.Draw(image).ellipse if kind == "disc" else ImageDraw.Draw(image).rectangle
        c = SIDE // 2
        shape([c - r, c - r, c + r, c + r], fill=tuple(int(v) for v in rng.integers(140, 256, 3)))
        (folder / kind).mkdir(parents=True, exist_ok=True)
        image.save(folder / kind / f"{i:05d}.png")


def subset(folder: Path, n: int, into: Path) -> Path:
    """A folder holding the first n pictures of ``folder`` (hard links: no copies)."""
    for path in sorted(folder.rglob("*.png")):
        if int(path.stem) < n:
            (into / path.parent.name).mkdir(parents=True, exist_ok=True)
            os.link(path, into / path.parent.name / path.name)
    return into


def train(images: Path, epochs: list[int], work: Path, extra: list[str]) -> list[dict]:
    """One fit of max(epochs) epochs in a fresh process: for each epoch budget, the test, valid and
    train bits per dimension then, and the training seconds so far; the run's wall and CPU time."""
    run = work / "run"
    command = [
        sys.executable, "-m", "pyro_vae.fit", "--data", str(images), "--epochs", str(max(epochs)),
        "--data-dir", str(work / "cache"), "--out", str(run), *FIT_ARGS, *extra,
    ]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        raise SystemExit(f"fit failed:\n{done.stderr[-3000:]}")
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    elapsed = np.cumsum([r["seconds"] for r in records])
    return [
        {
            "epochs": k,
            "test_bits_per_dim": records[k - 1]["test_bits_per_dim"],
            "valid_bits_per_dim": records[k - 1]["valid_bits_per_dim"],
            "train_bits_per_dim": records[k - 1]["train_bits_per_dim"],
            "training_seconds_so_far": float(elapsed[k - 1]),
            "run_wall_seconds": wall,
            "run_cpu_seconds": (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime),
        }
        for k in sorted(epochs)
    ]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=int, nargs="+", default=[1000, 3000], help="folder sizes")
    parser.add_argument("--epochs", type=int, nargs="+", default=[2, 4, 6, 8], help="epoch budgets")
    parser.add_argument("--fit-args", default="", help="more fit arguments, one string (e.g. '--lr 1e-3')")
    parser.add_argument("--out", required=True, help="JSON file for the results")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    result = {**machine(), "config": {"fit_args": FIT_ARGS + args.fit_args.split(), "side": SIDE}, "runs": []}
    work = Path(tempfile.mkdtemp(prefix="pyro-vae-own-data-bits-"))
    try:
        draw_shapes(work / "all", max(args.images))
        for n in args.images:
            folder = subset(work / "all", n, work / f"first-{n}")
            for entry in train(folder, args.epochs, work / f"run-{n}", args.fit_args.split()):
                result["runs"].append({"images": n, **entry})
                print(json.dumps(result["runs"][-1]), flush=True)
            shutil.rmtree(work / f"run-{n}")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    result["load_average_at_end"] = list(os.getloadavg())
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
