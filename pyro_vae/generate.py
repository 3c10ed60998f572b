"""``python -m pyro_vae.generate RUN_DIR``: images from a trained run, written next to it.

    python -m pyro_vae.generate runs/cvae --label 7 --n 64      # a grid of 64 sevens
    python -m pyro_vae.generate runs/cvae --analogies 12         # 10 labels x 12 shared styles
    python -m pyro_vae.generate runs/mnist --n 64                # an unconditional run: p(z) samples

Each image is E[x | z, y] with z ~ p(z | y); the grid is ``generated_label<L>.png`` (or
``generated.png``) in RUN_DIR unless ``--out`` names a file. ``--analogies N`` writes
``analogies_prior.png``: row c decodes N draws of z, shared by every row, with label c.
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path
from typing import Sequence

import pyro
import torch

from . import plots
from .api import load
from .config import check_seed
from .errors import ConfigError, exit_status
from .engine import resolve_device, say
from .engine.fabric import ACCELERATORS


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m pyro_vae.generate",
                                description="Generate images from a trained pyro-vae run.")
    p.add_argument("run_dir", metavar="RUN_DIR", help="a folder written by python -m pyro_vae.fit")
    p.add_argument("--label", type=int, default=None,
                   help="the class to generate (0-9); needs a --model cvae or m2 run. Default: every "
                        "class in turn (conditional runs), or none (plain VAE)")
    p.add_argument("--n", type=int, default=64, help="number of images (default: 64)")
    p.add_argument("--analogies", type=int, default=0, metavar="N",
                   help="also write analogies_prior.png: 10 rows (labels) x N columns sharing z")
    p.add_argument("--out", default=None, help="PNG file to write (default: in RUN_DIR)")
    p.add_argument("--checkpoint", default="best", choices=("best", "last"))
    p.add_argument("--seed", type=int, default=0, help="seed of the latent draws (default: 0)")
    p.add_argument("--accelerator", default="auto", metavar="{" + ",".join(ACCELERATORS) + "}",
                   help="auto (cuda, else mps, else cpu), cpu, cuda (or cuda:N) or mps (default: auto)")
    p.add_argument("--device", default=None, metavar="{" + ",".join(ACCELERATORS) + "}",
                   help="old name of --accelerator")
    return p


MAX_IMAGES = 10_000  # a 100 x 100 grid: a 3,000-pixel-wide picture of 28-pixel images
MAX_ANALOGY_COLUMNS = 1_000


def picture_path(out: Path, default_name: str) -> Path:
    """Where ``--out`` asks for the picture: a folder gets ``default_name`` inside it; a file name
    must end in .png; a file cannot lie under another file."""
    if out.is_dir():
        return out / default_name
    if out.suffix.lower() != ".png":
        raise ConfigError(f"--out {out}: the picture is a PNG file; give a name ending in .png, or an "
                          f"existing folder to write {default_name} into")
    blocking = next((p for p in out.parents if p.exists() and not p.is_dir()), None)
    if blocking is not None:
        raise ConfigError(f"--out {out}: {blocking} is a file, not a folder; choose another path")
    return out


def generate(run_dir: str | Path, *, label: int | None = None, n: int = 64, analogies: int = 0,
             out: str | Path | None = None, checkpoint: str = "best", seed: int = 0,
             device: str | torch.device = "auto", log=say) -> list[Path]:
    """Write the grid (and the analogies picture); returns the paths written."""
    if not 1 <= n <= MAX_IMAGES:
        raise ConfigError(f"--n must be from 1 to {MAX_IMAGES:,} (one picture of a grid of images), got {n:,}; "
                          f"for more images call pyro_vae.load(RUN_DIR).sample(n) in batches")
    if not 0 <= analogies <= MAX_ANALOGY_COLUMNS:
        raise ConfigError(f"--analogies must be from 0 to {MAX_ANALOGY_COLUMNS}, got {analogies}")
    check_seed(seed)
    run_dir = Path(run_dir)
    dev = resolve_device(device)
    vae = load(run_dir, checkpoint=checkpoint, device=dev)
    if analogies and not vae.conditional:
        raise ConfigError("--analogies decodes one z with every label, which needs a conditional run "
                          "(python -m pyro_vae.fit --model cvae or --model m2)")
    vae.sample_labels(1, label)  # a clear error for --label on a plain VAE or outside 0-9, before work
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
    log(f"generate: {n} images of {what} from {run_dir} ({checkpoint}.pt) -> "
        f"{', '.join(str(p) for p in written)}")
    return written


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    pyro.settings.set(module_local_params=True)
    device, flag = (args.device, "--device") if args.device else (args.accelerator, "--accelerator")
    return exit_status(lambda: generate(args.run_dir, label=args.label, n=args.n, analogies=args.analogies,
                                        out=args.out, checkpoint=args.checkpoint, seed=args.seed,
                                        device=resolve_device(device, flag)))


if __name__ == "__main__":
    sys.exit(main())
