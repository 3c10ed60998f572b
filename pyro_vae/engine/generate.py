"""Images from a trained run: a grid of E[x | z, y] with z ~ p(z | y) (``generated.png`` or
``generated_label<L>.png``), and for conditional runs ``analogies_prior.png``, whose row c decodes
N draws of z, shared by every row, with label c.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch

from .. import plots
from ..config_values import check_seed
from ..devices import resolve_device
from ..errors import ConfigError
from .load import load
from .loop import say

MAX_IMAGES = 10_000  # a 100 x 100 grid: a 3,000-pixel-wide picture of 28-pixel images
MAX_ANALOGY_COLUMNS = 1_000


def picture_path(out: Path, default_name: str) -> Path:
    """Where ``--out`` asks for the picture: a folder gets ``default_name`` inside it; a file name
    must end in .png; a file cannot lie under another file."""
    if out.is_dir():
        return out / default_name
    if out.suffix.lower() != ".png":
        raise ConfigError(
            f"--out {out}: the picture is a PNG file; give a name ending in .png, or an "
            f"existing folder to write {default_name} into"
        )
    blocking = next((p for p in out.parents if p.exists() and not p.is_dir()), None)
    if blocking is not None:
        raise ConfigError(f"--out {out}: {blocking} is a file, not a folder; choose another path")
    return out


def generate(
    run_dir: str | Path,
    *,
    label: int | None = None,
    n: int = 64,
    analogies: int = 0,
    out: str | Path | None = None,
    checkpoint: str = "best",
    seed: int = 0,
    device: str | torch.device = "auto",
    log=say,
) -> list[Path]:
    """Write the grid (and the analogies picture); returns the paths written."""
    if not 1 <= n <= MAX_IMAGES:
        raise ConfigError(
            f"--n must be from 1 to {MAX_IMAGES:,} (one picture of a grid of images), got {n:,}; "
            f"for more images call pyro_vae.load(RUN_DIR).sample(n) in batches"
        )
    if not 0 <= analogies <= MAX_ANALOGY_COLUMNS:
        raise ConfigError(f"--analogies must be from 0 to {MAX_ANALOGY_COLUMNS}, got {analogies}")
    check_seed(seed)
    run_dir = Path(run_dir)
    dev = resolve_device(device)
    vae = load(run_dir, checkpoint=checkpoint, device=dev)
    if analogies and not vae.conditional:
        raise ConfigError(
            "--analogies decodes one z with every label, which needs a conditional run "
            "(python -m pyro_vae.fit --model cvae or --model m2)"
        )
    vae.sample_labels(1, label, flags=True)  # a clear error for --label on a plain VAE or outside 0-9, before work
    name = "generated.png" if label is None else f"generated_label{label}.png"
    path = picture_path(Path(out), name) if out else run_dir / name
    written = []
    with torch.random.fork_rng(devices=[dev] if dev.type == "cuda" else []):
        torch.manual_seed(seed)
        images = vae.sample(n, label=label)
        written.append(plots.save_grid(images, path, nrow=math.ceil(math.sqrt(n))))
        if analogies:
            written.append(plots.analogy_grid(vae, path.parent / "analogies_prior.png", columns=analogies))
    what = f"label {label}" if label is not None else ("every label in turn" if vae.conditional else "p(z)")
    log(f"generate: {n} images of {what} from {run_dir} ({checkpoint}.pt) -> {', '.join(str(p) for p in written)}")
    return written
