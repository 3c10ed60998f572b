"""Benchmark: seconds per training step of every guide (diag, lowrank, iaf, maf) with the VampPrior and
the mixture prior, the standard prior for reference, at the defaults, alternating in one process;
the flow guides with the VampPrior also with their transforms conditioned on x (``vamp+iaf/x``:
``--flow-context x``; the VampPrior's default is none).

Each pair is the default model (``python -m pyro_vae.fit`` without flags but ``--prior`` and
``--guide``: batch 128, latent 32, hidden 512-512, 500 pseudo-inputs or 10 mixture components,
two IAF or MAF layers of 320), trained the way the engine trains it: Pyro's ELBO module over the model
and guide, scaled to the training set, one torch Adam step per call, on random binary images
(speed does not depend on the pixels). One torch thread. The calls alternate (A B C ... A B C)
so drifts in machine load hit every pair; each call's wall time and the CPU time of the process
(one thread: the time the step computed, robust to other jobs on a busy machine) are recorded.
The JSON reports every time, the medians, the ratio to ``vamp + diag`` and an epoch's estimate
(steps per epoch x median CPU time).

``--density-components K`` adds one more comparison: the VampPrior's log p(z) and its gradient
for the IAF guide with K pseudo-inputs, by the one-pass inverse against Pyro's inverse (D passes
of each flow's network for every pair), the path every non-diagonal guide took before.

    nice -n 10 python benchmarks/prior_guide_steps.py --out benchmarks/results/prior_guide_steps.json
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from pathlib import Path

import pyro
import torch
from reference import machine, medians

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from pyro_vae.config import FitConfig  # noqa: E402
from pyro_vae.guides import flows_see_x  # noqa: E402
from pyro_vae.objectives import Scaled, build_elbo  # noqa: E402
from pyro_vae.variants import build_vae, resolve_defaults  # noqa: E402

PAIRS = (
    ("standard", "diag"),
    ("mog", "diag"),
    ("mog", "lowrank"),
    ("mog", "iaf"),
    ("vamp", "diag"),
    ("vamp", "lowrank"),
    ("vamp", "iaf"),
    ("vamp", "iaf/x"),
    ("standard", "maf"),
    ("mog", "maf"),
    ("vamp", "maf"),
    ("vamp", "maf/x"),
)
IMAGE_SHAPE = (1, 28, 28)
TRAINING_IMAGES = 50_000  # MNIST's training split without the validation images, as fit trains


def alternate_timed(blocks: dict, repeats: int, warmup: int = 1) -> tuple[dict, dict]:
    """Each ``blocks[name]()`` ``warmup`` times, then ``repeats`` rounds in turn; wall seconds and
    process CPU seconds per call, per name."""
    for run in blocks.values():
        for _ in range(warmup):
            run()
    wall, cpu = {name: [] for name in blocks}, {name: [] for name in blocks}
    for _ in range(repeats):
        for name, run in blocks.items():
            start, start_cpu = time.perf_counter(), time.process_time()
            run()
            wall[name].append(time.perf_counter() - start)
            cpu[name].append(time.process_time() - start_cpu)
    return wall, cpu


def training_step(prior: str, guide: str, seed: int, flow_hidden: int | None = None, flow_context: str | None = None):
    """One Adam step of the default model with this prior and guide (and ``flow_hidden``, if given:
    the width of the flow guides' networks; ``flow_context``, if given: x or none), as a function
    of no arguments."""
    pyro.set_rng_seed(seed)
    sizes = {} if flow_hidden is None else {"flow_hidden": flow_hidden}
    sizes |= {} if flow_context is None else {"flow_context": flow_context}
    config = resolve_defaults(FitConfig(prior=prior, guide=guide, **sizes))
    vae = build_vae(config, IMAGE_SHAPE, 10)
    loss = build_elbo("trace", 1)(Scaled(vae.model), Scaled(vae.guide))
    images = torch.rand(config.batch_size, *IMAGE_SHAPE).round()
    with torch.no_grad():
        loss(images[:2])  # lazy parameters exist before the optimizer sees them
    optimizer = torch.optim.Adam(loss.parameters(), lr=config.lr)
    scale = TRAINING_IMAGES / config.batch_size

    def step():
        value = loss(images, None, scale, 1.0)
        value.backward()
        optimizer.step()
        optimizer.zero_grad()
        if not math.isfinite(value.item()):
            raise SystemExit(f"{prior} + {guide}: the loss is {float(value)}")

    return step, config


def density_comparison(components: int, repeats: int, seed: int) -> dict:
    """log p(z) and its gradient for the VampPrior x IAF guide with ``components`` pseudo-inputs
    and a batch of 128: the one-pass inverse against Pyro's (the guide without ``pair_log_prob``)."""
    pyro.set_rng_seed(seed)
    config = resolve_defaults(FitConfig(prior="vamp", guide="iaf", flow_context="x", prior_components=components))
    vae = build_vae(config, IMAGE_SHAPE, 10)
    guide, prior = vae.guide, vae.model.prior
    z = torch.randn(config.batch_size, config.latent_dim)

    def score(route):
        def call():
            features = guide.features(prior.pseudo_inputs())  # (K, F)
            zz = z.clone().requires_grad_()
            log_q = route(zz, features)  # (B, K)
            (torch.logsumexp(log_q, -1).sum()).backward()
            vae.zero_grad(set_to_none=True)
            return log_q.detach()

        return call

    def pyro_inverse(zz, features):
        q = guide.distribution_from_features(features)  # Pyro's inverse of each flow
        return q.log_prob(zz.unsqueeze(-2).expand(zz.shape[0], features.shape[0], zz.shape[-1]))

    one_pass, general = score(guide.pair_log_prob), score(pyro_inverse)
    difference = float((one_pass() - general()).abs().max())
    wall, cpu = alternate_timed({"one_pass": one_pass, "pyro_inverse": general}, repeats, warmup=0)
    median = medians(cpu)
    return {
        "components": components,
        "batch": config.batch_size,
        "seconds": wall,
        "cpu_seconds": cpu,
        "median_cpu_seconds": median,
        "ratio_pyro_inverse_over_one_pass": median["pyro_inverse"] / median["one_pass"],
        "max_abs_difference_nats": difference,
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3, help="timed steps of each pair, alternating")
    parser.add_argument(
        "--pairs",
        default=",".join(f"{p}+{g}" for p, g in PAIRS),
        help="prior+guide,...; a flow guide may name its --flow-context: vamp+iaf/x",
    )
    parser.add_argument("--density-components", type=int, default=0, help="K of the density comparison (0: none)")
    parser.add_argument("--flow-hidden", type=int, default=None, help="width of the flow guides' networks")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="benchmarks/results/prior_guide_steps.json")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    pyro.settings.set(module_local_params=True)  # as the training engine runs
    result = {**machine(), "repeats": args.repeats, "flow_hidden": args.flow_hidden, "pairs": {}}
    result["training_images"] = TRAINING_IMAGES
    steps, configs = {}, {}
    for pair in args.pairs.split(","):
        prior, guide = pair.split("+")
        guide, _, flow_context = guide.partition("/")  # vamp+iaf/x: the flows conditioned on x
        name = f"{prior} + {guide}" + (f" ({flow_context})" if flow_context else "")
        steps[name], configs[name] = training_step(prior, guide, args.seed, args.flow_hidden, flow_context or None)
    wall, cpu = alternate_timed(steps, args.repeats)
    median = medians(cpu)
    for name, config in configs.items():
        per_epoch = math.ceil(TRAINING_IMAGES / config.batch_size)
        result["pairs"][name] = {
            "batch_size": config.batch_size,
            "components": config.prior_components,
            "flows_see_x": flows_see_x(config) if config.guide in ("iaf", "maf") else None,
            "seconds_per_step": wall[name],
            "cpu_seconds_per_step": cpu[name],
            "median_cpu_seconds_per_step": median[name],
            "epoch_cpu_minutes_estimate": per_epoch * median[name] / 60,
        }
        if "vamp + diag" in median:
            result["pairs"][name]["ratio_to_vamp_diag"] = median[name] / median["vamp + diag"]
    if args.density_components:
        result["density"] = density_comparison(args.density_components, args.repeats, args.seed)
    result["load_average_at_end"] = list(os.getloadavg())
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    for name, r in result["pairs"].items():
        per_step, epoch = r["median_cpu_seconds_per_step"], r["epoch_cpu_minutes_estimate"]
        print(f"{name}: {per_step:.3f} CPU s per step, epoch ~{epoch:.1f} CPU min")
    if "density" in result:
        d = result["density"]
        print(f"density (K={d['components']}): Pyro's inverse / one pass = {d['ratio_pyro_inverse_over_one_pass']:.1f}")
    print(f"written to {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
