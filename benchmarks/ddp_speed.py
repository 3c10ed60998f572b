"""Benchmark: the engine's training loop against a plain PyTorch DDP loop, at 1 and 2 CPU processes.

Both train the default-size VAE (MLP 784-512-512, latent 32) from the same weights on
dynamically binarized MNIST, one torch thread per process, processes joined over gloo:

* ``engine``: pyro-vae's training epoch (``Trainer._train_epoch``: Pyro's ``Trace_ELBO`` module
  under Fabric's DDP, one fused ``torch.optim.Adam``, losses reduced once per log interval);
* ``plain_ddp``: the same networks and Monte-Carlo ELBO written in plain PyTorch
  (benchmarks/reference.py), wrapped in ``torch.nn.parallel.DistributedDataParallel`` with its
  defaults (no wrapper at 1 process), a fused ``torch.optim.Adam``, the epoch's losses reduced
  once at its end.

For each global batch size (``--batch-sizes``, split evenly over the processes) and each process
count, one job (``torchrun``-style environment, started here) runs warm-up epochs, then short
epochs (``--steps`` steps) of the two loops in turn (engine, plain, engine, ...), each between two
barriers, so drifts in the machine's load hit both; the jobs of 1 and 2 processes alternate too
(``--repeats``). The JSON holds every epoch's images/s, the medians, the ratios engine over plain
DDP (of the medians, and the median of the ratios of adjacent epochs) per process count and 2
over 1 processes per loop, the niceness and the load average before and after each job.

    python benchmarks/ddp_speed.py --out benchmarks/results/ddp_speed.json
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch import nn

ROOT = Path(__file__).resolve().parent.parent
LOOPS = ("engine", "plain_ddp")
DDP_FIELDS = ("gradient_as_bucket_view", "static_graph", "broadcast_buffers", "bucket_bytes_cap")  # the engine's


class PlainELBO(nn.Module):
    """-(N / B) * sum of the hand-written VAE's ELBO over a batch of B of the N training images."""

    def __init__(self, reference: nn.Module, num_data: int):
        super().__init__()
        self.reference = reference
        self.num_data = num_data

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.reference.neg_elbo(x).sum() * (self.num_data / x.shape[0])


def worker(args) -> int:
    """One process of a job: build both loops, time alternating epochs, rank 0 writes the JSON."""
    torch.set_num_threads(1)
    import pyro
    import torch.distributed as dist
    from reference import SIZES, TorchVAE, copy_weights

    pyro.settings.set(module_local_params=True)
    from pyro_vae.config import FitConfig
    from pyro_vae.data import DeviceBatches, load_dataset
    from pyro_vae.engine import Trainer, fabric_for, launch
    from pyro_vae.engine.training_data import training_split
    from pyro_vae.nets import NetSpec
    from pyro_vae.variants import checked

    world = int(os.environ.get("WORLD_SIZE", "1"))
    config = checked(
        FitConfig(
            **{**SIZES["default"], "batch_size": args.batch_size},
            train_size=args.steps * args.batch_size,
            eval_size=100,
            accelerator="cpu",
            devices=world,
            data_dir=args.data_dir,
            out=tempfile.mkdtemp(),
        )
    )
    fabric = fabric_for(config)
    launch(fabric)
    dataset = load_dataset(config.dataset, config.data_dir, log=lambda _line: None)
    trainer = Trainer(config, dataset, config.out, fabric=fabric, log=lambda _line: None)
    rank = fabric.global_rank
    reference = TorchVAE(NetSpec(dataset.image_shape, config.latent_dim, config.hidden))
    copy_weights(trainer.vae, reference)
    plain = PlainELBO(reference, trainer.variant.num_train)
    if world > 1:
        plain = nn.parallel.DistributedDataParallel(plain)
    optimizer = torch.optim.Adam(plain.parameters(), lr=config.lr, fused=True)
    train = training_split(dataset, config)
    batches = DeviceBatches(
        train.images,
        train.labels,
        config.batch_size // world,
        binarization="dynamic",
        seed=config.seed,
        device="cpu",
        shard=(rank, world),
    )

    def plain_epoch():
        losses = []
        for x, _ in batches:
            loss = plain(x)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            losses.append(loss.detach())
        total = torch.stack(losses).sum()
        if world > 1:
            dist.all_reduce(total)
        return float(total)

    epochs = {"engine": 0}

    def engine_epoch():
        epochs["engine"] += 1
        return trainer._train_epoch(epochs["engine"])

    runs = {"engine": engine_epoch, "plain_ddp": plain_epoch}
    seconds: dict[str, list[float]] = {name: [] for name in LOOPS}
    for block in range(args.warmup + args.epochs):
        for name in LOOPS:
            fabric.barrier()
            start = time.perf_counter()
            runs[name]()
            fabric.barrier()
            if block >= args.warmup:
                seconds[name].append(time.perf_counter() - start)
    if rank == 0:
        n = trainer.variant.num_train
        steps = {"engine": len(trainer.variant), "plain_ddp": len(batches)}
        Path(args.worker_out).write_text(
            json.dumps(
                {
                    "processes": world,
                    "batch_size": config.batch_size,
                    "steps_per_epoch": steps,
                    "images_per_s": {name: [n / s for s in seconds[name]] for name in LOOPS},
                    "ddp": {key: getattr(trainer.loss._forward_module, key, None) for key in DDP_FIELDS}
                    if world > 1
                    else None,
                }
            )
        )
    return 0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_job(args, world: int, batch_size: int) -> dict:
    """Start the ``world`` processes of one job (rank 0's result is returned)."""
    out = Path(tempfile.mkdtemp()) / "result.json"
    port = free_port()
    cmd = [
        sys.executable,
        __file__,
        "--worker-out",
        str(out),
        "--batch-size",
        str(batch_size),
        "--steps",
        str(args.steps),
        "--epochs",
        str(args.epochs),
        "--warmup",
        str(args.warmup),
    ] + (["--data-dir", args.data_dir] if args.data_dir else [])
    base = {k: v for k, v in os.environ.items() if k not in ("LOCAL_RANK", "RANK", "WORLD_SIZE")}
    base.update(OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT), MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    load_before = list(os.getloadavg())
    processes = [
        subprocess.Popen(
            cmd,
            env={**base, **({"RANK": str(r), "LOCAL_RANK": str(r), "WORLD_SIZE": str(world)} if world > 1 else {})},
        )
        for r in range(world)
    ]
    try:
        codes = [p.wait(timeout=args.timeout) for p in processes]
    finally:
        for p in processes:
            if p.poll() is None:
                p.kill()
    if any(codes):
        raise SystemExit(f"a job of {world} processes at batch {batch_size} failed: exit codes {codes}")
    result = json.loads(out.read_text())
    result["load_average_before"], result["load_average_after"] = load_before, list(os.getloadavg())
    return result


def summarize(jobs: list[dict], batch_size: int) -> dict:
    """Median images/s per process count and loop at one batch size, and the ratios."""
    median = {
        str(world): {
            name: statistics.median(
                v
                for job in jobs
                if job["processes"] == world and job["batch_size"] == batch_size
                for v in job["images_per_s"][name]
            )
            for name in LOOPS
        }
        for world in (1, 2)
    }
    paired = {  # engine over plain DDP per pair of adjacent epochs: robust to drifts in the load
        str(world): statistics.median(
            e / p
            for job in jobs
            if job["processes"] == world and job["batch_size"] == batch_size
            for e, p in zip(job["images_per_s"]["engine"], job["images_per_s"]["plain_ddp"])
        )
        for world in (1, 2)
    }
    return {
        "median_images_per_s": median,
        "ratio_engine_over_plain_ddp": {w: m["engine"] / m["plain_ddp"] for w, m in median.items()},
        "median_paired_ratio_engine_over_plain_ddp": paired,
        "ratio_2_over_1_processes": {name: median["2"][name] / median["1"][name] for name in LOOPS},
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[128, 512], help="global batch sizes")
    parser.add_argument("--steps", type=int, default=8, help="steps per epoch (training images: steps x batch)")
    parser.add_argument("--epochs", type=int, default=6, help="timed epochs of each loop per job, alternating")
    parser.add_argument("--warmup", type=int, default=1, help="untimed epochs of each loop first")
    parser.add_argument("--repeats", type=int, default=1, help="jobs of 1 and of 2 processes, alternating")
    parser.add_argument("--timeout", type=float, default=1200, help="seconds a job may take")
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--out", default="benchmarks/results/ddp_speed.json")
    parser.add_argument("--worker-out", default=None, help=argparse.SUPPRESS)  # a process of a job
    parser.add_argument("--batch-size", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker_out:
        return worker(args)

    torch.set_num_threads(1)
    from reference import machine

    from pyro_vae.atomic import write_json

    result = {
        "benchmark": "ddp_speed",
        **machine(),
        "niceness": os.nice(0),
        "model": "default VAE (MLP 784-512-512, latent 32, Bernoulli)",
        "config": {k: getattr(args, k) for k in ("batch_sizes", "steps", "epochs", "warmup", "repeats")},
        "jobs": [],
    }
    for batch_size in args.batch_sizes:
        for _ in range(args.repeats):
            for world in (1, 2):
                job = run_job(args, world, batch_size)
                result["jobs"].append(job)
                print(
                    f"batch {batch_size}, {world} process(es): "
                    + ", ".join(f"{n} {statistics.median(job['images_per_s'][n]):,.0f} img/s" for n in LOOPS),
                    flush=True,
                )
    result["batch_sizes"] = {str(b): summarize(result["jobs"], b) for b in args.batch_sizes}
    result["load_average_at_end"] = list(os.getloadavg())
    write_json(args.out, result)
    print(json.dumps(result["batch_sizes"], indent=1))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
