"""A small training run under Fabric with instruments, started by tests/test_distributed.py as a
subprocess (``--devices 2`` makes Fabric start the second process by re-running this script).

Each process writes ``<log-dir>/rank<r>.json``: after every optimizer step, the loss averaged over
the processes and a hash of every parameter's bytes; and every file it wrote (atomically, through
``os.replace``). ``--deterministic`` draws no noise: z is the guide's mean (the reparameterized
sample with eps = 0), so a 1-process and a 2-process run must take the same steps.
``--shared-noise`` draws particle k's noise eps_k once, the same for every image, step and
process: K different particles per image, yet a 1-process and a 2-process run still take the same
steps. ``--elbo NAME`` (given several times: one run after another in the same processes, each in
OUT/NAME and LOG-DIR/NAME) trains with that estimator, ``--particles`` and ``--iw-bounds`` (for
miwae and piwae). ``--fail-rank R`` raises an exception on rank R at its third step; ``--m2 paired|interleaved``
(given once or several times, as ``--elbo``: each run in OUT/SCHEDULE and LOG-DIR/SCHEDULE) trains
M2 with 100 labels (the label enumerated, so no other noise) instead of the default VAE.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
from pathlib import Path


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--devices", default="1")
    p.add_argument("--data-dir", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--log-dir", required=True)
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--deterministic", action="store_true")
    p.add_argument("--shared-noise", action="store_true")
    p.add_argument("--elbo", action="append", default=None)
    p.add_argument("--particles", type=int, default=1)
    p.add_argument("--iw-bounds", type=int, default=None)
    p.add_argument("--fail-rank", type=int, default=None)
    p.add_argument(
        "--m2",
        action="append",
        default=None,
        choices=("paired", "interleaved"),
        help="train M2 with 100 labels, the labelled images taking steps this way",
    )
    args = p.parse_args()
    if args.elbo and args.m2:
        p.error("give --elbo or --m2, not both")

    import pyro
    import torch

    torch.set_num_threads(1)
    pyro.settings.set(module_local_params=True)
    pyro.enable_validation(True)
    from pyro_vae.guides import diagonal

    if args.deterministic or args.shared_noise:
        fix_the_noise(diagonal.AmortizedDiagonalNormal, shared=args.shared_noise)

    written: list[str] = []
    real_replace = os.replace

    def recording_replace(src, dst, *a, **k):
        written.append(str(dst))
        return real_replace(src, dst, *a, **k)

    os.replace = recording_replace  # every atomic write of pyro-vae ends in os.replace

    fabric = None
    runs = [(elbo, None) for elbo in args.elbo or []] + [(None, schedule) for schedule in args.m2 or []]
    for elbo, schedule in runs or [(None, None)]:
        fabric = train_and_log(args, elbo, schedule, fabric, written)
    return 0


def fix_the_noise(guide_class, shared: bool) -> None:
    """The guide's reparameterized draws z = loc + scale * eps with eps = 0 (``shared`` False) or
    eps_k drawn once per particle k from a seeded generator, the same for every image, step and
    process (``shared``): the draws of an image then do not depend on which process holds it."""
    import pyro.distributions as dist
    import torch

    class FixedNoiseNormal(dist.Normal):
        def rsample(self, sample_shape=torch.Size()):
            shape = self._extended_shape(sample_shape)  # (particles, batch, D) or (batch, D)
            if not shared:
                return self.loc.expand(shape) + 0.0 * self.scale
            eps_shape = (*shape[:-2], 1, shape[-1])  # one eps per particle, broadcast over the images
            eps = torch.randn(eps_shape, generator=torch.Generator().manual_seed(0), dtype=self.loc.dtype)
            return self.loc + self.scale * eps.to(self.loc.device)

    real = guide_class.distribution

    def distribution(self, x, y=None):
        q = real(self, x, y)
        return FixedNoiseNormal(q.base_dist.loc, q.base_dist.scale).to_event(1)

    guide_class.distribution = distribution


def train_and_log(args, elbo, schedule, fabric, written):
    """Train one run (with ``elbo`` if given, in OUT/ELBO; M2 with its labelled steps taken as
    ``schedule`` if given, in OUT/SCHEDULE) and write this process's log."""
    from pyro_vae.config import FitConfig
    from pyro_vae.data import load_dataset
    from pyro_vae.engine import Trainer, fabric_for, launch
    from pyro_vae.variants import checked

    out, log = Path(args.out), Path(args.log_dir)
    estimator = {}
    if elbo is not None:
        out, log = out / elbo, log / elbo
        estimator = {"elbo": elbo, "particles": args.particles}
        if elbo in ("miwae", "piwae"):
            estimator["iw_bounds"] = args.iw_bounds
    m2 = {}
    if schedule is not None:
        out, log = out / schedule, log / schedule
        m2 = {"model": "m2", "labels": 100, "labelled_steps": schedule}
    config = checked(
        FitConfig(
            train_size=300,
            eval_size=100,
            latent_dim=2,
            hidden=(32,),
            batch_size=50,
            epochs=args.epochs,
            accelerator="cpu",
            devices=args.devices,
            data_dir=args.data_dir,
            out=str(out),
            **estimator,
            **m2,
        )
    )  # with its defaults resolved (the data set, the binarization), as every entry point runs it
    if fabric is None:
        fabric = fabric_for(config)
        launch(fabric)
    dataset = load_dataset(config.dataset, config.data_dir, log=lambda _line: None)
    trainer = Trainer(config, dataset, config.out, fabric=fabric, log=print)
    steps = []

    def record(trainer, loss):
        mean_loss = fabric.all_reduce(loss.detach().clone(), reduce_op="mean")
        digest = hashlib.sha256()
        for t in trainer.vae.state_dict().values():
            digest.update(t.detach().cpu().contiguous().numpy().tobytes())
        steps.append({"step": trainer.step, "loss": float(mean_loss), "params": digest.hexdigest()})
        if args.fail_rank == fabric.global_rank and trainer.step == 3:
            raise RuntimeError(f"injected failure on rank {fabric.global_rank} at step 3")

    trainer.step_hooks.append(record)
    trainer.fit()
    params = {k: v.tolist() for k, v in trainer.vae.state_dict().items()}
    log.mkdir(parents=True, exist_ok=True)
    (log / f"rank{fabric.global_rank}.json").write_text(
        json.dumps(
            {
                "rank": fabric.global_rank,
                "world": fabric.world_size,
                "steps": steps,
                "written": written,
                "params": params,
            }
        )
    )
    return fabric


if __name__ == "__main__":
    sys.exit(main())
