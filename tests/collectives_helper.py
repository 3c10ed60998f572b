"""Counts the collectives of the training loop's steps in two processes over gloo, started by
tests/test_distributed.py as a subprocess (``--devices 2`` makes Fabric start the second process
by re-running this script).

After a first epoch (DDP's first step with a static graph differs from the rest), the torch
profiler records a second epoch of 6 steps, the losses read every 2 steps (``LOG_EVERY``
lowered for the test); each process writes ``<log-dir>/rank<r>.json`` with the number of each
gloo collective (``gloo:all_reduce``, ``gloo:broadcast``, ...) in that epoch, and the number of
gradient buckets DDP all-reduced at each step (a communication hook counts them).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from pathlib import Path


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--data-dir", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--log-dir", required=True)
    args = p.parse_args()

    import pyro
    import torch
    from torch.distributed.algorithms.ddp_comm_hooks.default_hooks import allreduce_hook
    from torch.profiler import ProfilerActivity, profile

    torch.set_num_threads(1)
    pyro.settings.set(module_local_params=True)
    from pyro_vae.config import FitConfig
    from pyro_vae.data import load_dataset
    from pyro_vae.engine import Trainer, fabric_for, launch, loop
    from pyro_vae.variants import checked

    loop.LOG_EVERY = 2
    config = checked(
        FitConfig(
            train_size=300,
            eval_size=100,
            latent_dim=2,
            hidden=(32,),
            batch_size=50,
            epochs=2,
            accelerator="cpu",
            devices=2,
            data_dir=args.data_dir,
            out=args.out,
        )
    )
    fabric = fabric_for(config)
    launch(fabric)
    dataset = load_dataset(config.dataset, config.data_dir, log=lambda _line: None)
    trainer = Trainer(config, dataset, config.out, fabric=fabric, log=lambda _line: None)
    buckets: list[int] = []

    def counting_hook(state, bucket):
        buckets[-1] += 1
        return allreduce_hook(state, bucket)

    trainer.loss._forward_module.register_comm_hook(None, counting_hook)
    trainer.step_hooks.append(lambda _trainer, _loss: buckets.append(0))
    buckets.append(0)
    trainer._train_epoch(1)
    buckets[:] = [0]
    with profile(activities=[ProfilerActivity.CPU]) as profiled:
        trainer._train_epoch(2)
    collectives = Counter(e.name for e in profiled.events() if e.name.startswith("gloo:"))
    log = Path(args.log_dir)
    log.mkdir(parents=True, exist_ok=True)
    (log / f"rank{fabric.global_rank}.json").write_text(
        json.dumps(
            {
                "steps": len(trainer.variant),
                "log_every": loop.LOG_EVERY,
                "buffers": len(list(trainer.vae.buffers())),
                "collectives": collectives,
                "buckets_per_step": buckets[:-1],
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
