"""What a run folder receives besides its checkpoints, all written by rank 0: ``metrics.jsonl``
(one JSON object per epoch) with its picture ``curves.png``, TensorBoard scalars and samples
(``--tensorboard``), the variant's pictures of the final model, and ``summary.json``."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import torch

from .. import plots
from ..atomic import atomic_open
from ..errors import ConfigError
from .faults import kill_point

SPLITS = ("train", "valid", "test")


def read_metrics(path: Path) -> list[dict]:
    """The records of ``metrics.jsonl`` (none if the file is missing)."""
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def write_metrics(path: Path, records: list[dict]) -> None:
    """Rewrite metrics.jsonl atomically with one JSON object per epoch."""
    with atomic_open(path) as f:
        for r in records:
            f.write(json.dumps(r, sort_keys=True) + "\n")


def write_epoch_records(out_dir: Path, records: list[dict]) -> None:
    """``metrics.jsonl`` and its picture, ``curves.png``, for every epoch so far."""
    write_metrics(out_dir / "metrics.jsonl", records)
    kill_point("curves", records[-1]["epoch"])  # (tests only: an interruption before the picture)
    plots.training_curves(records, out_dir / "curves.png")


def best_record(records: Sequence[dict]) -> dict:
    """The record of the epoch with the best validation ELBO (the first, on a tie)."""
    return max(records, key=lambda r: r["valid_elbo"])


class TensorBoard:
    """``--tensorboard``: every epoch's numbers as scalars (``valid_elbo`` as ``valid/elbo``) and
    64 samples of the model, under ``<run>/tensorboard``."""

    def __init__(self, out_dir: Path):
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            raise ConfigError("--tensorboard needs the tensorboard package: pip install tensorboard") from None
        self.writer = SummaryWriter(str(out_dir / "tensorboard"))

    def add(self, record: dict, vae) -> None:
        for key, value in record.items():
            if key != "epoch":
                self.writer.add_scalar(key.replace("_", "/", 1), value, record["epoch"])
        self.writer.add_images("samples", vae.sample(64).cpu(), record["epoch"])

    def close(self) -> None:
        self.writer.close()


def epoch_line(record: dict, epochs: int, extra: str = "") -> str:
    """The log line of one epoch's record; ``extra``: the variant's own numbers."""
    r = record
    return (
        f"epoch {r['epoch']:>3}/{epochs}  train ELBO {r['train_elbo']:8.2f}  "
        f"valid {r['valid_elbo']:8.2f}  test {r['test_elbo']:8.2f} nats/image  "
        f"(recon {r['test_recon']:.2f}, KL {r['test_kl']:.2f})  beta {r['beta']:.2f}  "
        f"lr {r['lr']:.2e}  {r['seconds']:.1f}s, {r['images_per_s']:,.0f} img/s"
        + (f"  test {r['test_bits_per_dim']:.3f} bits/dim" if "test_bits_per_dim" in r else "")
        + extra
    )


def write_pictures(
    vae, variant, test_set, out_dir: Path, seed: int, device: torch.device, records: Sequence[dict]
) -> list[Path]:
    """The variant's pictures of the current model (samples, reconstructions, latent maps, ...),
    drawn from ``seed`` without moving the global generators, and the training curves of
    ``records`` drawn again: a run finished after an interruption between ``metrics.jsonl`` and
    ``curves.png`` gets the picture of every epoch."""
    vae.eval()
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(seed)
        paths = variant.pictures(vae, test_set, out_dir)
    paths.append(plots.training_curves(records, out_dir / "curves.png"))
    return paths


def run_summary(
    records: Sequence[dict],
    *,
    model: str,
    epochs: int,
    seconds: float,
    stopped: str,
    device: str,
    processes: int,
    test_description: str,
    out_dir: Path,
    pictures: list[Path],
) -> dict:
    """The content of ``summary.json``: the last and best epochs' numbers, how and where the run
    trained, and the files the run folder holds."""
    last, best = records[-1], best_record(records)
    return {
        "model": model,
        "epochs": epochs,
        "seconds": seconds,
        "stopped": stopped,  # epochs, early-stopping or max-minutes
        "device": device,
        "processes": processes,
        "test_binarization": test_description,
        "final": {k: last[k] for k in last if k.split("_")[0] in SPLITS},
        "best_epoch": best["epoch"],
        "best_valid_elbo": best["valid_elbo"],
        "best_test_elbo": best["test_elbo"],
        "files": sorted(p.name for p in out_dir.iterdir() if p.is_file() and not p.name.startswith(".")),
        "pictures": [p.name for p in pictures],
    }
