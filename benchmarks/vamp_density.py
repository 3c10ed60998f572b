"""Benchmark: the VampPrior's log p(z) in closed form against its elementwise path, alternating in one process.

One VampPrior at the ``tomczak2018-vamp`` sizes (500 pseudo-inputs, latent 40, a diagonal guide
with gated dense layers 300-300) scores the same points z both ways, one torch thread:

* ``closed_form``: what ``VampMixture.log_prob`` does for a diagonal guide, the (N, K) matrix of
  log q(z_n | u_k) by two matrix products in float64 (``diagonal_normal_log_densities``);
* ``elementwise``: the general path every other guide takes, Pyro's ``Normal(...).to_event(1)``
  over an (N, K, D) block of pairs (the path a diagonal guide took before).

Two workloads: an evaluation chunk (N points, no gradient, as ``python -m pyro_vae.evaluate``
scores K = 5000 particles) and a training step (a batch of 100, log p(z) and its gradient). The
passes alternate; the JSON reports median seconds, the ratio, and the largest difference between
the two paths' values (float32 rounding of the elementwise one).

    python benchmarks/vamp_density.py --out benchmarks/results/vamp_density.json
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import pyro
import torch
from reference import alternate, machine, medians

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import pyro_vae.models.priors as priors  # noqa: E402
from pyro_vae.engine.reproduce import SETTINGS  # noqa: E402
from pyro_vae.variants import build_vae  # noqa: E402


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--points", type=int, default=4000, help="points z of the evaluation workload")
    parser.add_argument("--batch", type=int, default=100, help="points z of the training workload")
    parser.add_argument("--repeats", type=int, default=7, help="timed calls of each, alternating")
    parser.add_argument("--out", default="benchmarks/results/vamp_density.json")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    pyro.settings.set(module_local_params=True)
    pyro.set_rng_seed(0)
    config = SETTINGS["tomczak2018-vamp"].fit_config()
    vae = build_vae(config, (1, 28, 28))
    prior = vae.model.prior
    with torch.no_grad():
        mixture = prior()  # p(z) = (1/K) sum_k q(z | u_k)
        z_eval = mixture.sample((args.points,))  # where the prior puts its mass   (N, D)
    z_train = z_eval[: args.batch].clone()
    elementwise = lambda q: False  # noqa: E731  (route a diagonal guide down the general path)
    closed_form = priors.is_diagonal_normal

    def evaluation(route):
        def call():
            priors.is_diagonal_normal = route
            with torch.no_grad():
                prior().log_prob(z_eval)

        return call

    def training(route):
        def call():
            priors.is_diagonal_normal = route
            z = z_train.clone().requires_grad_()
            prior().log_prob(z).sum().backward()
            vae.zero_grad(set_to_none=True)

        return call

    result = {
        **machine(),
        "config": {
            "setting": "tomczak2018-vamp",
            "components": config.prior_components,
            "latent_dim": config.latent_dim,
            "guide": config.guide,
            "net": config.net,
            "evaluation_points": args.points,
            "training_batch": args.batch,
            "repeats": args.repeats,
        },
    }
    for name, make in (("evaluation", evaluation), ("training", training)):
        times = alternate({"closed_form": make(closed_form), "elementwise": make(elementwise)}, args.repeats)
        median = medians(times)
        result[name] = {
            "seconds": times,
            "median_seconds": median,
            "ratio_elementwise_over_closed_form": median["elementwise"] / median["closed_form"],
        }
    with torch.no_grad():
        priors.is_diagonal_normal = closed_form
        fast = prior().log_prob(z_eval).double()
        priors.is_diagonal_normal = elementwise
        plain = prior().log_prob(z_eval).double()
        priors.is_diagonal_normal = closed_form
    result["max_abs_difference_nats"] = float((fast - plain).abs().max())
    result["load_average_at_end"] = list(os.getloadavg())
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    for name in ("evaluation", "training"):
        r = result[name]
        print(
            f"{name}: closed form {r['median_seconds']['closed_form'] * 1e3:.1f} ms, elementwise "
            f"{r['median_seconds']['elementwise'] * 1e3:.1f} ms, ratio "
            f"{r['ratio_elementwise_over_closed_form']:.1f}"
        )
    print(f"largest difference {result['max_abs_difference_nats']:.2e} nats; written to {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
