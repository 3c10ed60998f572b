"""``pyro_vae.load``: a trained VAE back from its run folder, ready for ``encode`` / ``decode`` /
``sample`` / ``reconstruct`` (and, for conditional runs, ``sample(n, label=7)``; for M2,
``classify(x)``)."""

from __future__ import annotations

from pathlib import Path

import torch

from .config import check_checkpoint_config, read_run_config
from .devices import resolve_device
from .engine.checkpoint import load_checkpoint, restore_networks
from .errors import CheckpointError
from .vae import VAE, build_vae


def load(run_dir: str | Path, checkpoint: str = "best", device: str | torch.device = "cpu") -> VAE:
    """Rebuild the VAE of a ``python -m pyro_vae.fit`` run from ``config.json`` and load the
    weights of ``best.pt`` (highest validation ELBO) or ``last.pt`` (``checkpoint="last"``).
    The returned model is in eval mode; its ``config`` attribute is the run's :class:`FitConfig`."""
    run_dir = Path(run_dir)
    if checkpoint not in ("best", "last"):
        raise CheckpointError(f"checkpoint must be 'best' or 'last', got {checkpoint!r}")
    device = resolve_device(device, flag="device")
    config = read_run_config(run_dir)
    path = run_dir / f"{checkpoint}.pt"
    payload = load_checkpoint(path)
    check_checkpoint_config(config, payload.get("config"), path)
    vae = build_vae(config, tuple(payload["extra"]["image_shape"]), payload["extra"].get("num_classes", 10))
    restore_networks(vae, payload, path)
    vae.to(device)
    vae.eval()
    return vae
