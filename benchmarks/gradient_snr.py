"""Benchmark: the signal-to-noise ratio of the gradient estimates of the encoder's and the decoder's
parameters, for K = 1, 5, 50, 500 particles, with IWAE, DReG (``iwae-dreg``) and PIWAE, on a trained
MNIST model.

Rainforth et al. (2018) define the SNR of a gradient estimator for one scalar parameter as

    SNR = |E[g]| / std[g]

over independent draws of the estimate g (the same data, new particles each time). Here g is the
gradient of one estimator's loss on a fixed batch of a few binarized test images, drawn
``--estimates`` times with seeds 0, 1, ... (the same seeds for every estimator, so IWAE and DReG see
the same particles); mean and (unbiased) standard deviation are taken per scalar parameter and the
JSON reports the mean and the median over each network's scalar parameters, and the mean per
parameter tensor. A parameter whose estimate is exactly 0 every time (an encoder weight of a pixel
that is 0 in every image of the batch) has no SNR and is left out; the JSON counts them.

The model is Burda et al.'s one-layer architecture (784-200-200-50, tanh, Glorot init, Adam with
eps 1e-4, batch 20), trained by ``pyro_vae.fit`` with IWAE (K = 5) for ``--epochs`` epochs into
``--run``; a later call reuses that run if it was trained with the same settings.

PIWAE draws K particles in K / ``--piwae-inner`` groups (one group when K is smaller): its decoder
gradient is IWAE(K)'s, its encoder gradient MIWAE(K / inner, inner)'s.

    python benchmarks/gradient_snr.py --data-dir /work/data --plot docs/img/gradient_snr.png
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import pyro
import torch
from pyro import poutine
from reference import machine

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from pyro_vae.atomic import write_json  # noqa: E402
from pyro_vae.config import FitConfig  # noqa: E402
from pyro_vae.engine.reproduce import BURDA_ONE_LAYER  # noqa: E402
from pyro_vae.objectives import MAX_PLATE_NESTING, build_elbo, trace_log_density  # noqa: E402

NETWORKS = ("encoder", "decoder")  # the guide's parameters, the model's
# Burda et al.'s one-layer MNIST architecture and optimizer, trained with IWAE (K = 5) on the
# training images for --epochs passes at a constant learning rate
SCHEDULE = ("train_on_validation", "adam_beta1", "adam_beta2", "lr_schedule", "epochs")
TRAINING = {k: v for k, v in BURDA_ONE_LAYER.items() if k not in SCHEDULE} | {"elbo": "iwae", "particles": 5}


def trained_model(args):
    """The VAE of ``args.run``: trained now, or reused if its config.json has these settings."""
    import pyro_vae

    wanted = {**TRAINING, "epochs": args.epochs, "seed": args.seed, "train_size": args.train_size}
    run = Path(args.run)
    if (run / "summary.json").is_file():
        saved = json.loads((run / "config.json").read_text())
        if all(json.loads(json.dumps(value)) == saved.get(key) for key, value in wanted.items()):
            print(f"reusing the trained model in {run}", flush=True)
            return pyro_vae.load(run, device="cpu"), True
        print(f"{run} was trained with other settings: training again", flush=True)
    print(f"training {run}: {wanted}", flush=True)
    pyro_vae.fit(**wanted, data_dir=args.data_dir, accelerator="cpu", out=str(run), overwrite=True)
    return pyro_vae.load(run, device="cpu"), False


def loss_module(vae, name: str, particles: int, piwae_inner: int):
    bounds = max(1, particles // piwae_inner) if name in ("piwae", "miwae") else None
    config = FitConfig(elbo=name, particles=particles, iw_bounds=bounds)
    return build_elbo(name, particles, config)(vae.model, vae.guide), bounds


def parameters_of(vae) -> dict[str, list[tuple[str, torch.nn.Parameter]]]:
    return {
        "encoder": list(vae.guide.named_parameters()),
        "decoder": list(vae.model.named_parameters()),
    }


def draw_moments(vae, loss, images: torch.Tensor, estimates: int) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """Per network, the sums over ``estimates`` draws of the flattened gradient and of its square
    (float64), the draw with seed m using ``pyro.set_rng_seed(m)``."""
    params = parameters_of(vae)
    sums = {net: None for net in NETWORKS}
    for m in range(estimates):
        pyro.set_rng_seed(m)
        for p in vae.parameters():
            p.grad = None
        loss(images).backward()
        for net in NETWORKS:
            g = torch.cat([p.grad.reshape(-1) for _, p in params[net]]).double()
            s1, s2 = sums[net] if sums[net] is not None else (torch.zeros_like(g), torch.zeros_like(g))
            sums[net] = (s1 + g, s2 + g * g)
    return sums


def snr_summary(vae, sums, estimates: int) -> dict[str, dict]:
    """Per network: the per-parameter SNR |mean| / std summarised over its scalar parameters."""
    out = {}
    for net, (s1, s2) in sums.items():
        mean = s1 / estimates
        var = (s2 - estimates * mean * mean).clamp_min(0.0) / (estimates - 1)
        std = var.sqrt()
        live = std > 0
        snr = torch.where(live, mean.abs() / std.clamp_min(1e-300), torch.zeros_like(mean))
        per_tensor, start = {}, 0
        for name, p in parameters_of(vae)[net]:
            block, alive = snr[start : start + p.numel()], live[start : start + p.numel()]
            per_tensor[name] = float(block[alive].mean()) if alive.any() else None
            start += p.numel()
        out[net] = {
            "mean_snr": float(snr[live].mean()),
            "median_snr": float(snr[live].median()),
            "parameters": int(snr.numel()),
            "always_zero_parameters": int((~live).sum()),
            "per_tensor_mean_snr": per_tensor,
        }
    return out


def effective_sample_size(vae, images: torch.Tensor, particles: int, seed: int = 0) -> float:
    """Kish's effective sample size 1 / sum_k w~_k^2 of K draws per image (mean over the images):
    near 1 when one particle carries all the weight, near K when the guide is the posterior."""
    pyro.set_rng_seed(seed)
    plate = pyro.plate("num_particles_vectorized", particles, dim=-1 - MAX_PLATE_NESTING)
    with torch.no_grad():
        guide_trace = poutine.trace(plate(vae.guide)).get_trace(images)
        model_trace = poutine.trace(poutine.replay(plate(vae.model), trace=guide_trace)).get_trace(images)
        log_w = trace_log_density(model_trace) - trace_log_density(guide_trace, who="guide")  # (K, B)
        weights = torch.softmax(log_w.reshape(particles, images.shape[0]), dim=0)
        return float((1.0 / (weights**2).sum(0)).mean())


def measure(vae, images: torch.Tensor, args) -> list[dict]:
    rows = []
    for name in args.estimators:
        for particles in args.particles:
            loss, bounds = loss_module(vae, name, particles, args.piwae_inner)
            start = time.perf_counter()
            sums = draw_moments(vae, loss, images, args.estimates)
            row = {"estimator": name, "particles": particles, "iw_bounds": bounds}
            row["effective_sample_size"] = effective_sample_size(vae, images, particles)
            row.update(snr_summary(vae, sums, args.estimates), seconds=time.perf_counter() - start)
            print(
                f"{name:10s} K={particles:4d}  encoder SNR {row['encoder']['mean_snr']:.4g} "
                f"(median {row['encoder']['median_snr']:.4g})  decoder SNR {row['decoder']['mean_snr']:.4g} "
                f"(median {row['decoder']['median_snr']:.4g})  ESS {row['effective_sample_size']:.3g}  "
                f"{row['seconds']:.1f} s",
                flush=True,
            )
            rows.append(row)
    return rows


def plot(rows: list[dict], path: Path, title: str, piwae_inner: int) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    styles = {"iwae": ("C0", "o", "-"), "iwae-dreg": ("C1", "s", "--"), "piwae": ("C2", "^", ":")}
    labels = {"piwae": f"piwae (K/{piwae_inner} groups of {piwae_inner})"}
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.6))
    for ax, net in zip(axes, NETWORKS):
        for name in dict.fromkeys(r["estimator"] for r in rows):
            mine = [r for r in rows if r["estimator"] == name]
            color, marker, line = styles.get(name, (None, "x", "-"))
            ax.plot(
                [r["particles"] for r in mine],
                [r[net]["mean_snr"] for r in mine],
                color=color,
                marker=marker,
                linestyle=line,
                label=labels.get(name, name),
            )
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("K (particles per image)")
        ax.set_ylabel("mean SNR over parameters")
        ax.set_title(f"{net} ({'guide' if net == 'encoder' else 'model'}) gradient")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend()
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def parse(argv):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=3, help="training epochs of the model (IWAE, K = 5)")
    parser.add_argument("--train-size", type=int, default=None, help="first N training images (smoke runs)")
    parser.add_argument("--particles", default="1,5,50,500", help="comma-separated K")
    parser.add_argument("--estimators", default="iwae,iwae-dreg,piwae", help="comma-separated --elbo names")
    parser.add_argument("--piwae-inner", type=int, default=5, help="particles per PIWAE group (K / this groups)")
    parser.add_argument("--estimates", type=int, default=200, help="gradient draws per estimator and K")
    parser.add_argument("--images", type=int, default=5, help="the fixed batch: the first N binarized test images")
    parser.add_argument("--seed", type=int, default=0, help="training seed")
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--run", default="benchmarks/results/gradient_snr_run", help="the trained model's run folder")
    parser.add_argument("--out", default="benchmarks/results/gradient_snr.json")
    parser.add_argument("--plot", default=None, help="also draw SNR against K to this PNG")
    args = parser.parse_args(argv)
    args.particles = [int(k) for k in args.particles.split(",")]
    args.estimators = args.estimators.split(",")
    if args.estimates < 2:
        parser.error("--estimates must be at least 2 (a standard deviation needs two draws)")
    return args


def main(argv=None) -> int:
    args = parse(argv)
    os.environ["OMP_NUM_THREADS"] = "1"
    torch.set_num_threads(1)
    pyro.settings.set(module_local_params=True)
    result = machine()
    from pyro_vae.data import evaluation_images, load_dataset

    vae, reused = trained_model(args)
    vae.model.train(), vae.guide.train()
    images, description = evaluation_images(load_dataset("mnist", args.data_dir).test, "dynamic", limit=args.images)
    rows = measure(vae, images, args)
    result.update(
        config={
            "training": {**TRAINING, "epochs": args.epochs, "seed": args.seed, "train_size": args.train_size},
            "run": str(args.run),
            "reused_run": reused,
            "images": description + f", the first {args.images}",
            "estimates": args.estimates,
            "piwae_inner": args.piwae_inner,
            "snr": "per scalar parameter |mean| / std (ddof 1) over the estimates; mean and median over the parameters",
        },
        final_test_elbo=json.loads((Path(args.run) / "summary.json").read_text())["final"].get("test_elbo"),
        rows=rows,
        load_average_at_end=list(os.getloadavg()),
    )
    write_json(Path(args.out), result)
    if args.plot:
        k = ", ".join(str(k) for k in args.particles)
        plot(
            rows,
            Path(args.plot),
            f"MNIST 784-200-200-50, {args.images} images, {args.estimates} draws per K = {k}",
            args.piwae_inner,
        )
    print(f"wrote {args.out}" + (f" and {args.plot}" if args.plot else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
