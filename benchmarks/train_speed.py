"""Benchmark: pyro-vae's training step (the engine's) against a hand-written pure-PyTorch VAE, in the same run.

Both train the same networks (pyro_vae.nets, same initial weights) on the same device-resident
mini-batches of dynamically binarized MNIST with Adam and the same learning-rate decay. The
reference computes the analytic ELBO by hand:

    -ELBO(x) = BCE(logits(z), x) + 1/2 sum_d (mu_d^2 + sigma_d^2 - log sigma_d^2 - 1),  z = mu + sigma * eps

pyro-vae runs its default model (``Trace_ELBO``: Monte-Carlo KL); ``--elbo meanfield`` switches it
to ``TraceMeanField_ELBO`` (analytic KL), the same arithmetic as the reference, so the ratio then
measures Pyro's own overhead. Epoch times alternate between the two implementations (A B A B ...) so drifts
in machine load hit both, and the JSON reports medians and their ratio.

    python benchmarks/train_speed.py --epochs 3 --out benchmarks/results/train_speed.json
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from datetime import datetime, timezone

import pyro
import torch
import torch.nn.functional as F
from torch import nn

from pyro_vae.atomic import write_json
from pyro_vae.config import FitConfig
from pyro_vae.data import DeviceBatches, evaluation_images, load_dataset
from pyro_vae.nets import NetSpec, build_decoder, build_encoder
from pyro_vae.engine import Trainer, mean_elbo_terms, resolve_device


class TorchVAE(nn.Module):
    """The reference: the same encoder, heads and decoder as pyro-vae's default VAE, no Pyro."""

    def __init__(self, spec: NetSpec, net: str):
        super().__init__()
        self.encoder = build_encoder(net, spec)
        self.loc_head = nn.Linear(self.encoder.feature_dim, spec.latent_dim)
        self.scale_head = nn.Linear(self.encoder.feature_dim, spec.latent_dim)
        self.decoder = build_decoder(net, spec, 1)

    def neg_elbo(self, x: torch.Tensor) -> torch.Tensor:
        """-ELBO per image (B,), one reparameterized sample of z."""
        h = self.encoder(x)
        loc = self.loc_head(h)
        scale = F.softplus(self.scale_head(h)) + 1e-4
        z = loc + scale * torch.randn_like(loc)
        logits = self.decoder(z)
        recon = F.binary_cross_entropy_with_logits(logits, x, reduction="none").flatten(1).sum(-1)
        kl = 0.5 * (loc**2 + scale**2 - 2 * torch.log(scale) - 1).sum(-1)
        return recon + kl

    @torch.no_grad()
    def test_elbo(self, images: torch.Tensor, batch_size: int = 1000) -> float:
        self.eval()
        total = sum(float(-self.neg_elbo(images[i:i + batch_size]).double().sum())
                    for i in range(0, images.shape[0], batch_size))
        self.train()
        return total / images.shape[0]


def copy_weights(pyro_vae, torch_vae: TorchVAE) -> None:
    """Start both from identical weights."""
    torch_vae.encoder.load_state_dict(pyro_vae.guide.encoder.state_dict())
    torch_vae.loc_head.load_state_dict(pyro_vae.guide.loc_head.state_dict())
    torch_vae.scale_head.load_state_dict(pyro_vae.guide.scale_head.state_dict())
    torch_vae.decoder.load_state_dict(pyro_vae.model.decoder.state_dict())


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--elbo", default="trace", choices=("meanfield", "trace"))
    parser.add_argument("--net", default="mlp", choices=("mlp", "conv"))
    parser.add_argument("--batch-size", type=int, default=FitConfig.batch_size)
    parser.add_argument("--train-size", type=int, default=None, help="first N training images (default all)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--out", default="benchmarks/results/train_speed.json")
    args = parser.parse_args(argv)

    pyro.settings.set(module_local_params=True)
    config = FitConfig(elbo=args.elbo, net=args.net, batch_size=args.batch_size, epochs=args.epochs,
                       train_size=args.train_size, device=args.device)
    device = resolve_device(config.accelerator)
    dataset = load_dataset(config.dataset, args.data_dir)
    train = dataset.train if args.train_size is None else dataset.train.subset(args.train_size)
    test_images, test_description = evaluation_images(dataset.test, config.binarize)
    test_images = test_images.to(device)
    n = len(train)

    # pyro-vae's training step, exactly as the engine runs it
    trainer = Trainer(config, dataset, "benchmarks/results/train_speed_run", device, log=lambda _: None)
    vae = trainer.vae
    spec = NetSpec(dataset.image_shape, config.latent_dim, config.hidden)
    reference = TorchVAE(spec, config.net).to(device)
    copy_weights(vae, reference)

    # the reference's step: torch.optim.Adam, the same decay, the same batches
    torch_optim = torch.optim.Adam(reference.parameters(), lr=config.lr)
    torch_sched = torch.optim.lr_scheduler.ExponentialLR(torch_optim, gamma=config.lr_decay)
    torch_batches = DeviceBatches(train.images, train.labels, config.batch_size, binarization=config.binarize,
                                  seed=config.seed, device=device)

    def pyro_epoch():
        vae.train()
        total = torch.zeros((), device=device)
        for args in trainer.variant.training_batches():
            total += trainer.train_step(args)
        trainer.scheduler.step()
        return total

    def torch_epoch():
        total = torch.zeros((), device=device)
        for x, _ in torch_batches:
            loss = reference.neg_elbo(x).sum() * (n / x.shape[0])
            torch_optim.zero_grad(set_to_none=True)
            loss.backward()
            torch_optim.step()
            total += loss.detach()
        torch_sched.step()
        return total

    times = {"pyro_vae": [], "pure_torch": []}
    for epoch in range(1, args.epochs + 1):
        for name, run_epoch in (("pyro_vae", pyro_epoch), ("pure_torch", torch_epoch)):
            sync(device)
            start = time.perf_counter()
            run_epoch()
            sync(device)
            times[name].append(time.perf_counter() - start)
        print(f"epoch {epoch}: pyro-vae {times['pyro_vae'][-1]:.2f}s, pure torch {times['pure_torch'][-1]:.2f}s",
              flush=True)

    median = {k: statistics.median(v) for k, v in times.items()}
    result = {
        "benchmark": "train_speed",
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d"),
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)",
        "torch": torch.__version__, "pyro": pyro.__version__, "python": sys.version.split()[0],
        "config": {"elbo": config.elbo, "net": config.net, "batch_size": config.batch_size,
                   "train_images": n, "epochs": args.epochs, "latent_dim": config.latent_dim,
                   "hidden": list(config.hidden)},
        "seconds_per_epoch": times,
        "median_seconds_per_epoch": median,
        "median_images_per_s": {k: n / v for k, v in median.items()},
        "ratio_pyro_vae_over_pure_torch": median["pyro_vae"] / median["pure_torch"],
        "test_elbo": {"pyro_vae": mean_elbo_terms(vae, test_images)["elbo"],
                      "pure_torch": reference.test_elbo(test_images)},
        "test_binarization": test_description,
    }
    write_json(args.out, result)
    print(json.dumps({k: result[k] for k in ("median_seconds_per_epoch", "ratio_pyro_vae_over_pure_torch",
                                             "test_elbo")}, indent=2))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
