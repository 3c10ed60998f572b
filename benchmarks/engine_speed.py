"""Benchmark of the Fabric engine: its training step against the old ``DeviceSVI`` step and a
hand-written PyTorch step, and images/s of 1 against 2 processes on the CPU.

Steps (one torch thread, one process): the same networks from the same weights on the same
device-resident batches of dynamically binarized MNIST, at the default size (MLP 784-512-512,
latent 32, batch 128) and a tiny one (hidden 64,64, latent 8, batch 16):

* ``engine``: pyro-vae's step as the engine runs it (``Trainer.train_step``: Pyro's
  ``Trace_ELBO`` module under Fabric, module-local parameters, one fused ``torch.optim.Adam``);
* ``old_device_svi``: the step pyro-vae used before the engine, copied below (``DeviceSVI``: Pyro's
  SVI on the global param store, ``pyro.optim.ExponentialLR`` over ``torch.optim.Adam``, which
  keeps one optimizer and one scheduler per parameter tensor);
* ``hand_written``: the same networks and Monte-Carlo ELBO written in plain PyTorch
  (benchmarks/reference.py, shared with train_speed.py), with a fused ``torch.optim.Adam``.

(train_speed.py is the fixed-interface benchmark of the step against the hand-written one; this
script keeps the engine's own questions: the engine against the old step, 1 against 2 processes.)

Blocks of steps alternate (engine, old, hand, engine, ...) so drifts in machine load hit all three;
the JSON reports the median milliseconds per step and the ratios. Processes: ``python -m
pyro_vae.fit --accelerator cpu --devices 1`` and ``--devices 2`` (one thread each), alternating,
images/s of the training epochs from ``metrics.jsonl``.

    python benchmarks/engine_speed.py --out benchmarks/results/engine_speed.json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pyro
import torch
from pyro import poutine
from reference import SIZES, TorchVAE, copy_weights, machine

ROOT = Path(__file__).resolve().parent.parent


# -- the old step, as pyro-vae had it before the engine (pyro_vae/objectives.py, train.py) ---------
class DeviceSVI(pyro.infer.SVI):
    """``pyro.infer.SVI`` whose ``step`` returns the loss as a detached tensor on the device."""

    def __init__(self, model, guide, optim, loss, **kwargs):
        super().__init__(model, guide, optim, loss, **kwargs)
        self.elbo = loss

    def step(self, *args, **kwargs) -> torch.Tensor:
        with poutine.trace(param_only=True) as param_capture:
            loss = self.elbo.differentiable_loss(self.model, self.guide, *args, **kwargs)
            loss.backward()
        params = {site["value"].unconstrained() for site in param_capture.trace.nodes.values()}
        self.optim(params)
        pyro.infer.util.zero_grads(params)
        return loss.detach()


def old_minibatch_program(fn, num_data: int, latent_scale):
    def scaled(x, y=None):
        with poutine.scale(scale=num_data / x.shape[0]), latent_scale:
            return fn(x, y)

    return scaled


def step_times(size: str, args, dataset) -> dict:
    """Median ms per step of the three steps at one size, blocks alternating."""
    from pyro_vae.config import FitConfig
    from pyro_vae.data import DeviceBatches
    from pyro_vae.engine import Trainer
    from pyro_vae.nets import NetSpec
    from pyro_vae.objectives import ScaleLatents, build_elbo
    from pyro_vae.variants import build_vae

    config = FitConfig(**SIZES[size], train_size=args.train_size, accelerator="cpu", out=tempfile.mkdtemp())
    n = config.train_size
    trainer = Trainer(config, dataset, config.out, "cpu", log=lambda _: None)  # the engine's step
    old_vae = build_vae(config, dataset.image_shape)
    old_vae.load_state_dict(trainer.vae.state_dict())
    with pyro.settings.context(module_local_params=False):
        pyro.clear_param_store()
        optim = pyro.optim.ExponentialLR(
            {"optimizer": torch.optim.Adam, "optim_args": {"lr": config.lr}, "gamma": config.lr_decay}
        )
        old = DeviceSVI(
            old_minibatch_program(old_vae.model, n, ScaleLatents(1.0)),
            old_minibatch_program(old_vae.guide, n, ScaleLatents(1.0)),
            optim,
            build_elbo("trace"),
        )
    reference = TorchVAE(NetSpec(dataset.image_shape, config.latent_dim, config.hidden))
    copy_weights(trainer.vae, reference)
    hand_optim = torch.optim.Adam(reference.parameters(), lr=config.lr, fused=True)
    train = dataset.train.subset(n)

    def stream():
        while True:
            yield from DeviceBatches(
                train.images, train.labels, config.batch_size, binarization="dynamic", seed=0, device="cpu"
            )

    engine_batches = iter(trainer.variant.training_batches())
    old_batches, hand_batches = stream(), stream()

    def engine_block(k):
        nonlocal engine_batches
        for _ in range(k):
            try:
                batch = next(engine_batches)
            except StopIteration:
                engine_batches = iter(trainer.variant.training_batches())
                batch = next(engine_batches)
            trainer.train_step(batch)

    def old_block(k):
        with pyro.settings.context(module_local_params=False):
            for _ in range(k):
                old.step(next(old_batches)[0])

    def hand_block(k):
        for _ in range(k):
            x, _ = next(hand_batches)
            loss = reference.neg_elbo(x).sum() * (n / x.shape[0])
            hand_optim.zero_grad(set_to_none=True)
            loss.backward()
            hand_optim.step()

    blocks = {"engine": engine_block, "old_device_svi": old_block, "hand_written": hand_block}
    k = args.steps[size]
    for run in blocks.values():  # warm-up
        run(3)
    times = {name: [] for name in blocks}
    for _ in range(args.blocks):
        for name, run in blocks.items():
            start = time.perf_counter()
            run(k)
            times[name].append((time.perf_counter() - start) / k * 1000)
    median = {name: statistics.median(v) for name, v in times.items()}
    return {
        "config": {
            **{k_: list(v) if isinstance(v, tuple) else v for k_, v in SIZES[size].items()},
            "steps_per_block": k,
            "blocks": args.blocks,
        },
        "ms_per_step": times,
        "median_ms_per_step": median,
        "ratio_engine_over_old_device_svi": median["engine"] / median["old_device_svi"],
        "ratio_engine_over_hand_written": median["engine"] / median["hand_written"],
        "ratio_old_device_svi_over_hand_written": median["old_device_svi"] / median["hand_written"],
    }


def process_speed(args) -> dict:
    """images/s of the training epochs with 1 and 2 CPU processes (one thread each), alternating."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    env.pop("LOCAL_RANK", None)
    speeds = {"1": [], "2": []}
    for repeat in range(args.process_repeats):
        for devices in ("1", "2"):
            out = Path(tempfile.mkdtemp()) / "run"
            cmd = [
                sys.executable,
                "-m",
                "pyro_vae.fit",
                "--accelerator",
                "cpu",
                "--devices",
                devices,
                "--train-size",
                str(args.process_images),
                "--eval-size",
                "200",
                "--epochs",
                "2",
                "--out",
                str(out),
            ] + (["--data-dir", args.data_dir] if args.data_dir else [])
            subprocess.run(cmd, env=env, check=True, capture_output=True, timeout=1800)
            records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
            speeds[devices] += [r["images_per_s"] for r in records]
            print(
                f"processes {devices}, repeat {repeat}: {[round(r['images_per_s']) for r in records]} img/s", flush=True
            )
    median = {k: statistics.median(v) for k, v in speeds.items()}
    return {
        "train_images": args.process_images,
        "batch_size": 128,
        "model": "default (MLP 784-512-512, latent 32)",
        "images_per_s": speeds,
        "median_images_per_s": median,
        "ratio_2_over_1_processes": median["2"] / median["1"],
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--blocks", type=int, default=7, help="alternating blocks per step kind")
    parser.add_argument("--default-steps", type=int, default=10, help="steps per block, default size")
    parser.add_argument("--tiny-steps", type=int, default=50, help="steps per block, tiny size")
    parser.add_argument("--train-size", type=int, default=2000)
    parser.add_argument("--process-images", type=int, default=5000)
    parser.add_argument("--process-repeats", type=int, default=2)
    parser.add_argument("--skip-processes", action="store_true")
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--out", default="benchmarks/results/engine_speed.json")
    args = parser.parse_args(argv)
    args.steps = {"default": args.default_steps, "tiny": args.tiny_steps}

    torch.set_num_threads(1)
    pyro.settings.set(module_local_params=True)
    from pyro_vae.atomic import write_json
    from pyro_vae.data import load_dataset

    dataset = load_dataset("mnist", args.data_dir)
    result = {"benchmark": "engine_speed", **machine(), "steps": {}}
    for size in SIZES:
        result["steps"][size] = step_times(size, args, dataset)
        print(size, json.dumps(result["steps"][size]["median_ms_per_step"]), flush=True)
    if not args.skip_processes:
        result["processes"] = process_speed(args)
    result["load_average_at_end"] = os.getloadavg()  # other jobs on the machine: read the ratios with it
    write_json(args.out, result)
    print(
        json.dumps(
            {s: {k: v for k, v in r.items() if k.startswith(("median", "ratio"))} for s, r in result["steps"].items()},
            indent=2,
        )
    )
    if "processes" in result:
        print(json.dumps({k: v for k, v in result["processes"].items() if k.startswith(("median", "ratio"))}))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
