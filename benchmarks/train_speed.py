"""Benchmark: pyro-vae's training step against a hand-written PyTorch step, alternating in one process.

Both train the same networks (pyro_vae.nets, from the same weights) on device-resident mini-batches
of dynamically binarized MNIST, one torch thread. pyro-vae's step is the engine's
(``Trainer.train_step``: Pyro's ELBO module, one fused ``torch.optim.Adam``, distribution
validation on for the first step only); the reference (benchmarks/reference.py) computes the same
objective by hand with a fused ``torch.optim.Adam``: a Monte-Carlo KL for ``--elbo trace``, the
closed-form KL for ``--elbo meanfield``. With ``--guide iaf`` or ``--prior vamp`` the reference
stays the plain VAE, so the ratio then includes the richer model's own arithmetic.

Sizes: ``default`` (MLP 784-512-512, latent 32, batch 128) and ``tiny`` (hidden 64,64, latent 8,
batch 16). Blocks of ``--steps`` steps alternate (pyro-vae, reference, pyro-vae, ...); the JSON
reports median milliseconds per step and ``ratio_over_hand_written``.

With ``--compile`` pyro-vae's step is the ``--compile`` one, and two more contenders join the
alternation: pyro-vae's eager step (``pyro_vae_eager``) and the hand-written step compiled by
``torch.compile`` (``hand_written_compiled``, its loss and backward; the same fused Adam). Each is
compiled in the untimed warm-up block; ``ratios_over_hand_written`` gives every contender over the
eager hand-written step, ``compiled_over_eager`` pyro-vae's compiled step over its eager one.

    python benchmarks/train_speed.py --size default --steps 20 --out benchmarks/results/train_default.json
    python benchmarks/train_speed.py --size tiny --steps 50 --compile --out benchmarks/results/train_tiny_compile.json
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile

import pyro
import torch
from reference import SIZES, TorchVAE, alternate, copy_weights, machine, medians


def _stream(batches):
    while True:
        yield from batches()


def engine_block(args, dataset, **options):
    """The engine's trainer (``options`` on top of the benchmark's configuration), and a block of
    ``--steps`` of its training steps."""
    from pyro_vae.config import FitConfig
    from pyro_vae.engine import Trainer

    config = FitConfig(
        **SIZES[args.size],
        train_size=args.train_size,
        eval_size=100,
        elbo=args.elbo,
        net=args.net,
        guide=args.guide,
        prior=args.prior,
        accelerator="cpu",
        out=tempfile.mkdtemp(),
        **options,
    )
    trainer = Trainer(config, dataset, config.out, "cpu", log=lambda _: None)
    batches = _stream(trainer.variant.training_batches)

    def block():
        for _ in range(args.steps):
            trainer.train_step(next(batches))

    return trainer, block


def hand_block(args, config, dataset, vae, compiled: bool = False):
    """A block of ``--steps`` hand-written training steps of the size of ``config``, from the
    weights of ``vae`` (the plain VAE's), its loss and backward compiled if asked."""
    from pyro_vae.data import DeviceBatches
    from pyro_vae.nets import NetSpec

    reference = TorchVAE(
        NetSpec(dataset.image_shape, config.latent_dim, config.hidden), config.net, analytic_kl=args.elbo == "meanfield"
    )
    if args.guide == "diag" and args.prior == "standard":
        copy_weights(vae, reference)
    optimizer = torch.optim.Adam(reference.parameters(), lr=config.lr, fused=True)
    train = dataset.train.subset(config.train_size)
    n = len(train)
    neg_elbo = torch.compile(reference.neg_elbo, dynamic=False) if compiled else reference.neg_elbo
    batches = _stream(
        lambda: DeviceBatches(
            train.images, train.labels, config.batch_size, binarization="dynamic", seed=0, device="cpu"
        )
    )

    def block():
        for _ in range(args.steps):
            x, _ = next(batches)
            loss = neg_elbo(x).sum() * (n / x.shape[0])
            loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)

    return block


def build(args, dataset):
    """The engine's trainer and the hand-written step of the same size, from the same weights
    (with ``--compile`` also the eager engine and the compiled hand-written step)."""
    trainer, engine = engine_block(args, dataset, jit=args.jit, compile=args.compile)
    config = trainer.config
    blocks = {"pyro_vae": engine, "hand_written": hand_block(args, config, dataset, trainer.vae)}
    if args.compile:
        blocks["pyro_vae_eager"] = engine_block(args, dataset)[1]
        blocks["hand_written_compiled"] = hand_block(args, config, dataset, trainer.vae, compiled=True)
    return config, blocks, len(trainer.variant)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", default="default", choices=tuple(SIZES))
    parser.add_argument("--steps", type=int, default=20, help="training steps per timed block")
    parser.add_argument("--blocks", type=int, default=7, help="timed blocks of each contender, alternating")
    parser.add_argument("--elbo", default="trace", choices=("trace", "meanfield"))
    parser.add_argument("--net", default="mlp", choices=("mlp", "conv"))
    parser.add_argument("--guide", default="diag")
    parser.add_argument("--prior", default="standard")
    parser.add_argument("--jit", action="store_true", help="pyro-vae's --jit step")
    parser.add_argument(
        "--compile",
        action="store_true",
        help="pyro-vae's --compile step, with its eager step and a compiled hand-written step beside",
    )
    parser.add_argument("--train-size", type=int, default=2000)
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--out", default="benchmarks/results/train_speed.json")
    args = parser.parse_args(argv)
    if args.steps < 1 or args.blocks < 1:
        parser.error("--steps and --blocks must be at least 1")

    torch.set_num_threads(1)
    pyro.settings.set(module_local_params=True)
    from pyro_vae.atomic import write_json
    from pyro_vae.data import load_dataset

    result = {"benchmark": "train_speed", **machine()}
    config, blocks, steps_per_epoch = build(args, load_dataset("mnist", args.data_dir))
    # warm-up: a whole epoch of steps, so that every batch shape is compiled before the timing
    times = alternate(blocks, args.blocks, warmup=-(-steps_per_epoch // args.steps))
    median = {k: v / args.steps * 1000 for k, v in medians(times).items()}
    result.update(
        {
            "config": {
                "size": args.size,
                **{
                    k: getattr(config, k)
                    for k in ("hidden", "latent_dim", "batch_size", "elbo", "net", "guide", "prior", "jit", "compile")
                },
                "steps_per_block": args.steps,
                "blocks": args.blocks,
            },
            "reference": "hand-written PyTorch VAE, same networks (diagonal Normal guide, standard Normal prior), "
            "fused torch.optim.Adam",
            "ms_per_step": {k: [t / args.steps * 1000 for t in v] for k, v in times.items()},
            "median_ms_per_step": median,
            "ratio_over_hand_written": median["pyro_vae"] / median["hand_written"],
            "ratios_over_hand_written": {k: v / median["hand_written"] for k, v in median.items()},
            "load_average_at_end": list(os.getloadavg()),
        }
    )
    if args.compile:
        result["compiled_over_eager"] = median["pyro_vae"] / median["pyro_vae_eager"]
    result["config"]["hidden"] = list(result["config"]["hidden"])
    write_json(args.out, result)
    print(json.dumps({k: result[k] for k in ("median_ms_per_step", "ratios_over_hand_written")}))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
