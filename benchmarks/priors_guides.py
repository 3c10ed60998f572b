"""Benchmark: test log p(x) (K = 5000) of standard vs VampPrior x diagonal vs IAF guide on MNIST,
each trained with one stated budget, next to Tomczak & Welling (2018).

Every pair is trained by the real command, ``python -m pyro_vae.fit``, with the same flags apart
from ``--prior`` and ``--guide``, then scored by the importance-weighted estimator on the same test
images with the same seed. The reference measured in the same run is the standard-prior,
diagonal-guide VAE: each other pair is reported as a paired difference to it (same images, so
the standard error is that of the per-image differences).

    python benchmarks/priors_guides.py --epochs 20 --threads 1 --out benchmarks/results/priors_guides.json

Tomczak & Welling's one-layer VAE (40 latent units, 300 gated hidden units, warm-up, early
stopping over hundreds of epochs) reached -88.56 (standard) and -85.57 (VampPrior); our budget
is far smaller, which the JSON and the README say next to the numbers.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

# (name, prior, guide); the first is the reference
PAIRS = (
    ("standard + diag", "standard", "diag"),
    ("standard + iaf", "standard", "iaf"),
    ("vamp + diag", "vamp", "diag"),
)
# VampPrior x IAF is left out: log q(z | u_k) of a flow guide inverts the flow for every image x
# pseudo-input pair (B x 500 per step); even in one pass of its network a step costs about 150 times
# the diagonal guide's (docs/performance.md), about an hour of one core per epoch.
PUBLISHED = {"standard": -88.56, "vamp": -85.57}  # Tomczak & Welling 2018, Table 2, VAE (L = 1)


def fit_command(prior: str, guide: str, args, out: Path) -> list[str]:
    return (
        [
            sys.executable,
            "-m",
            "pyro_vae.fit",
            "--prior",
            prior,
            "--guide",
            guide,
            "--epochs",
            str(args.epochs),
            "--latent-dim",
            str(args.latent_dim),
            "--warmup-epochs",
            str(args.warmup_epochs),
            "--device",
            args.device,
            "--seed",
            str(args.seed),
            "--out",
            str(out),
            "--overwrite",
        ]
        + (["--data-dir", args.data_dir] if args.data_dir else [])
        + (["--train-size", str(args.train_size)] if args.train_size else [])
    )


# what the fit command above decides; a reused run must have been trained with these values
CHECKED_KEYS = (
    "prior",
    "guide",
    "epochs",
    "latent_dim",
    "warmup_epochs",
    "seed",
    "hidden",
    "lr",
    "lr_decay",
    "batch_size",
    "binarize",
    "elbo",
    "particles",
    "likelihood",
    "net",
    "activation",
    "optimizer",
    "flow_layers",
    "flow_hidden",
    "train_size",
    "dataset",
)


def check_reused_run(run_dir: Path, command: list[str]) -> None:
    """Refuse a finished run whose config.json differs from what ``command`` (from
    :func:`fit_command`) would have trained: its flags read by fit's own parser over fit's defaults."""
    from pyro_vae.cli.fit import build_parser, resolve_config

    given = vars(build_parser().parse_args(command[3:]))  # after: python -m pyro_vae.fit
    expected = resolve_config(
        {k: v for k, v in given.items() if k not in ("config", "resume", "overwrite")}, None, None
    )
    saved = json.loads((run_dir / "config.json").read_text())
    wrong = [
        f"{key}: {saved.get(key)!r}, not {getattr(expected, key)!r}"
        for key in CHECKED_KEYS
        if json.loads(json.dumps(getattr(expected, key))) != saved.get(key)
    ]
    if wrong:
        raise SystemExit(
            f"{run_dir} was not trained as this benchmark trains a pair ({'; '.join(wrong)}); remove it or drop --reuse"
        )


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--latent-dim", type=int, default=40, help="40, as Tomczak & Welling")
    parser.add_argument("--warmup-epochs", type=float, default=5.0)
    parser.add_argument("--k", type=int, default=5000)
    parser.add_argument("--test-images", type=int, default=1000, help="first N test images (default 1000)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--train-size", type=int, default=None, help="first N training images (smoke runs)")
    parser.add_argument("--runs", default="benchmarks/results/priors_guides_runs")
    parser.add_argument("--out", default="benchmarks/results/priors_guides.json")
    parser.add_argument(
        "--reuse",
        action="store_true",
        help="evaluate runs already finished under --runs instead of training them again",
    )
    args = parser.parse_args(argv)
    env = dict(os.environ)
    if args.threads:
        env["OMP_NUM_THREADS"] = str(args.threads)
        import torch

        torch.set_num_threads(args.threads)
    import pyro
    import torch

    from pyro_vae.api import load
    from pyro_vae.atomic import write_json
    from pyro_vae.data import evaluation_images, load_dataset
    from pyro_vae.engine import resolve_device
    from pyro_vae.evaluation import evaluate_log_px

    pyro.settings.set(module_local_params=True)
    device = resolve_device(args.device)
    device_name = (
        torch.cuda.get_device_name(device)
        if device.type == "cuda"
        else f"CPU ({platform.processor() or platform.machine()}, {torch.get_num_threads()} torch threads)"
    )
    rows, per_image = [], {}
    for name, prior, guide in PAIRS:
        run_dir = Path(args.runs) / f"{prior}-{guide}"
        command = fit_command(prior, guide, args, run_dir)
        reused = args.reuse and (run_dir / "summary.json").is_file()
        if reused:
            print(f"reusing the finished run {run_dir}", flush=True)
            check_reused_run(run_dir, command)
        else:
            print("$", " ".join(command[1:]), flush=True)
            subprocess.run(command, check=True, env=env)
        summary_json = json.loads((run_dir / "summary.json").read_text())
        if summary_json["epochs"] != args.epochs:
            raise SystemExit(f"{run_dir} has {summary_json['epochs']} epochs, not {args.epochs}; remove it")
        fit_seconds = summary_json["seconds"]  # the training loop, per-epoch evaluation included
        vae = load(run_dir, checkpoint="best", device=device)
        images, description = evaluation_images(load_dataset("mnist", args.data_dir).test, vae.config.binarize)
        images = images[: args.test_images]
        result = evaluate_log_px(
            vae.model,
            vae.guide,
            images,
            k=args.k,
            batch_size=200,
            seed=args.seed,
            split="test",
            device=device,
            memory_budget_mb=1024,
            progress=False,
        )
        per_image[name] = result.log_px
        summary = result.summary()
        rows.append(
            {
                "pair": name,
                "prior": prior,
                "guide": guide,
                "fit_command": " ".join(command[1:]),
                "reused_run": str(run_dir) if reused else None,  # trained earlier, not by this run
                "fit_seconds": fit_seconds,
                "eval_seconds": result.seconds,
                "test_log_px": result.mean_log_px(),
                "test_log_px_stderr": result.stderr_log_px(),
                "test_elbo": float(result.elbo.mean()),
                "khat_share_above_0.7": summary.get("khat_share_above_0.7"),
                "published_log_px": PUBLISHED[prior] if guide == "diag" else None,
            }
        )
        print(
            f"{name}: log p(x) {rows[-1]['test_log_px']:.2f} +- {rows[-1]['test_log_px_stderr']:.2f} "
            f"(fit {fit_seconds / 60:.1f} min, K={args.k} eval {result.seconds / 60:.1f} min)",
            flush=True,
        )
        del vae
    reference = per_image[PAIRS[0][0]]
    for row in rows:
        diff = per_image[row["pair"]] - reference
        row["difference_to_reference"] = float(diff.mean())
        row["difference_stderr"] = float(diff.std(ddof=1) / np.sqrt(len(diff)))
    report = {
        "benchmark": "priors_guides",
        "date": datetime.now(timezone.utc).date().isoformat(),
        "device": device_name,
        "k": args.k,
        "test_images": int(reference.shape[0]),
        "test_binarization": description,
        "epochs": args.epochs,
        "latent_dim": args.latent_dim,
        "warmup_epochs": args.warmup_epochs,
        "reference": PAIRS[0][0],
        "rows": rows,
        "published": "Tomczak & Welling 2018, Table 2 (one-layer VAE, 40 latents, full test set)",
    }
    write_json(Path(args.out), report)
    print(f"\n| pair | test log p(x), K={args.k} | vs {PAIRS[0][0]} | fit | eval | Tomczak & Welling |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        published = "" if r["published_log_px"] is None else f"{r['published_log_px']:.2f}"
        print(
            f"| {r['pair']} | {r['test_log_px']:.2f} ± {r['test_log_px_stderr']:.2f} | "
            f"{r['difference_to_reference']:+.2f} ± {r['difference_stderr']:.2f} | "
            f"{r['fit_seconds'] / 60:.1f} min | {r['eval_seconds'] / 60:.1f} min | {published} |"
        )
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
