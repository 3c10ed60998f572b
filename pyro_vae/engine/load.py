"""A trained run brought back from its folder: ``config.json`` rebuilds the VAE, ``best.pt`` or
``last.pt`` fills in its weights."""

from __future__ import annotations

from pathlib import Path

import torch

from ..components import shapes, state_dict_difference
from ..config import FitConfig
from ..devices import resolve_device
from ..errors import CheckpointError
from ..vae import VAE
from ..variants import build_vae
from .checkpoint import load_checkpoint
from .run_config import check_checkpoint_config, read_run_config


def load(run_dir: str | Path, checkpoint: str = "best", device: str | torch.device = "cpu") -> VAE:
    """Rebuild the VAE of a ``python -m pyro_vae.fit`` run from ``config.json`` and load the
    weights of ``best.pt`` (highest validation ELBO) or ``last.pt`` (``checkpoint="last"``).
    The returned model is in eval mode; its ``config`` attribute is the run's :class:`FitConfig`.
    Own components named in ``config.json`` by import path are imported. A checkpoint that does
    not fit the model ``config.json`` describes is refused with a message naming both."""
    run_dir = Path(run_dir)
    if checkpoint not in ("best", "last"):
        raise CheckpointError(f"checkpoint must be 'best' or 'last', got {checkpoint!r}")
    device = resolve_device(device, flag="device")
    config_path = run_dir / "config.json"
    config = read_run_config(run_dir)
    path = run_dir / f"{checkpoint}.pt"
    payload = load_checkpoint(path)
    check_checkpoint_config(config, payload.get("config"), path)
    vae = build_vae(config, tuple(payload["extra"]["image_shape"]), payload["extra"].get("num_classes", 10))
    _restore(vae, payload, path, config, config_path)
    vae.to(device)
    vae.eval()
    return vae


def _restore(vae: VAE, payload: dict, path: Path, config: FitConfig, config_path: Path) -> None:
    """Load the checkpoint's weights; a key or shape mismatch names the checkpoint, config.json
    and what differs."""
    saved = {k: tuple(v.shape) for k, v in payload["networks"].items()}
    differences = state_dict_difference(shapes(vae), saved)
    if differences:
        raise CheckpointError(
            f"checkpoint {path} does not fit the model {config_path} describes (model {config.model}, prior "
            f"{config.prior}, guide {config.guide}, likelihood {config.likelihood}, net {config.net}, latent_dim "
            f"{config.latent_dim}, hidden {','.join(map(str, config.hidden))}): against that model "
            f"{'; '.join(differences)}. The run was trained with a model config.json does not name (e.g. "
            f"pieces of one's own handed to Trainer(vae=...)); train it with pyro_vae.fit(prior=..., "
            f"guide=...) or name them in the config by import path, so that config.json rebuilds it"
        )
    vae.load_state_dict(payload["networks"])
