"""Compare two trained runs on the same test images: the paired difference of their log p(x).

Both runs are scored as ``python -m pyro_vae.evaluate`` scores them (the run's test split, its
fixed binarization, K importance samples per image, seed 0), image by image, and the JSON holds
both means with their standard errors and the mean of the per-image differences B - A with the
*paired* standard error, std(d) / sqrt(n). Two models scored on the same images differ far less
from image to image than either model's log p(x) does, so the paired error is the one that says
whether B beats A on this test set. It says nothing about the spread over training seeds: one
seed per run is one draw of each training procedure.

    python benchmarks/paired_runs.py RUN_A RUN_B --k 5000 --jobs 2 --out benchmarks/results/paired.json

Both runs must have been trained on the same data set (their test splits are compared).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path

import torch

from pyro_vae.data import evaluation_images, load_data
from pyro_vae.engine.load import load
from pyro_vae.engine.records import read_metrics
from pyro_vae.evaluation import evaluate_log_px
from pyro_vae.plots import figure, save_figure


def per_image_log_px(run: Path, *, k: int, limit: int | None, checkpoint: str, batch_size: int, threads: int):
    """log p_K(x) of each test image of ``run`` (float64), a digest of the images scored, their
    description and the CPU seconds taken."""
    torch.set_num_threads(threads)
    start = time.process_time()
    vae = load(run, checkpoint=checkpoint)
    split = load_data(vae.config, log=lambda _line: None).test
    images, description = evaluation_images(split, vae.config.binarize, limit=limit)
    result = evaluate_log_px(
        vae.model, vae.guide, images, k=k, batch_size=batch_size, seed=0, progress=True, split="test"
    )
    digest = hashlib.sha256(images.contiguous().numpy().tobytes()).hexdigest()
    return torch.as_tensor(result.log_px, dtype=torch.float64), digest, description, time.process_time() - start


def paired_summary(a: torch.Tensor, b: torch.Tensor) -> dict:
    """Means with their standard errors and the mean paired difference b - a with its error."""
    n = a.numel()
    d = b - a

    def stderr(v):
        return float(v.std(unbiased=True) / math.sqrt(n))

    return {
        "images": n,
        "mean_a": float(a.mean()),
        "stderr_a": stderr(a),
        "mean_b": float(b.mean()),
        "stderr_b": stderr(b),
        "difference_b_minus_a": float(d.mean()),
        "paired_stderr": stderr(d),
        "b_better_on_fraction_of_images": float((d > 0).double().mean()),
    }


def plot_pair(summary: dict, path: Path, names: tuple[str, str]) -> Path:
    """The two runs' test ELBO against passes (from their metrics.jsonl), titled with the paired
    difference of their log p(x)."""
    fig, ax = figure((6.4, 4.0))
    for run, name in zip((summary["run_a"], summary["run_b"]), names):
        records = [r for r in read_metrics(Path(run) / "metrics.jsonl") if "test_elbo" in r]
        ax.plot([r["epoch"] for r in records], [r["test_elbo"] for r in records], marker="o", label=name)
    ax.set_xlabel("passes over the training set")
    ax.set_ylabel("test ELBO (nats per image)")
    ax.set_title(
        f"log p(x), K = {summary['k']}: {names[1]} - {names[0]} = "
        f"{summary['difference_b_minus_a']:+.2f} +- {summary['paired_stderr']:.2f} nats (paired)",
        fontsize=9,
    )
    ax.legend()
    ax.grid(alpha=0.3)
    return save_figure(fig, path)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_a", type=Path)
    parser.add_argument("run_b", type=Path)
    parser.add_argument("--k", type=int, default=5000, help="importance samples per image (default 5000)")
    parser.add_argument("--limit", type=int, default=None, help="the first N test images only")
    parser.add_argument("--checkpoint", choices=("best", "last"), default="last")
    parser.add_argument("--batch-size", type=int, default=100)
    parser.add_argument("--threads", type=int, default=1, help="torch threads per run scored")
    parser.add_argument("--jobs", type=int, default=1, help="score the two runs in this many processes (1 or 2)")
    parser.add_argument("--out", type=Path, default=None, help="JSON file to write")
    parser.add_argument("--plot", type=Path, default=None, help="PNG of both runs' test ELBO against passes")
    parser.add_argument("--names", nargs=2, default=("A", "B"), help="the two runs' names in the picture")
    args = parser.parse_args(argv)
    options = dict(k=args.k, limit=args.limit, checkpoint=args.checkpoint, batch_size=args.batch_size)
    runs = (args.run_a, args.run_b)
    if args.jobs > 1:  # each run in a process of its own, one after the other on one core otherwise
        with ProcessPoolExecutor(max_workers=2, mp_context=get_context("spawn")) as pool:
            futures = [pool.submit(per_image_log_px, run, **options, threads=args.threads) for run in runs]
            scores = [future.result() for future in futures]
    else:
        scores = [per_image_log_px(run, **options, threads=args.threads) for run in runs]
    (a, digest_a, description, seconds_a), (b, digest_b, _, seconds_b) = scores
    if digest_a != digest_b:
        print("the two runs' test images differ: train both on the same data set", file=sys.stderr)
        return 2
    result = {
        "run_a": str(args.run_a),
        "run_b": str(args.run_b),
        "k": args.k,
        "checkpoint": args.checkpoint,
        "test_images": description,
        **paired_summary(a, b),
        "cpu_seconds": [seconds_a, seconds_b],
        "date": time.strftime("%Y-%m-%d"),
        "command": "python benchmarks/paired_runs.py " + " ".join(sys.argv[1:] if argv is None else argv),
    }
    if args.plot is not None:
        plot_pair(result, args.plot, tuple(args.names))
    text = json.dumps(result, indent=2)
    print(text)
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
