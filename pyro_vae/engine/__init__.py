"""The training engine: the loop on Lightning Fabric (:class:`Trainer`), its options, the one
torch optimizer, and atomic checkpoints with exact resume."""

from ..variants import mean_elbo_terms
from .checkpoint import load_checkpoint, restore_networks
from .fabric import build_fabric, fabric_for, launch, resolve_device
from .loop import LOG_EVERY, Trainer, say
from .records import read_metrics, write_metrics

__all__ = [
    "LOG_EVERY",
    "Trainer",
    "build_fabric",
    "fabric_for",
    "launch",
    "load_checkpoint",
    "mean_elbo_terms",
    "read_metrics",
    "resolve_device",
    "restore_networks",
    "say",
    "write_metrics",
]
