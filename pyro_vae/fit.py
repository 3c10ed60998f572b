"""``python -m pyro_vae.fit``: train a VAE and write config, metrics, checkpoints and pictures.

Every option is a field of :class:`pyro_vae.config.FitConfig`; ``--config FILE`` (YAML or JSON)
supplies any of them and flags given on the command line win. ``--resume DIR`` continues the run
in DIR from its ``last.pt`` up to ``--epochs``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path
from typing import Sequence

import pyro

from .config import FitConfig, config_fields, load_config_file
from .data import load_dataset
from .errors import CheckpointError, ConfigError, PyroVAEError
from .train import Trainer, resolve_device, say

# Options that may differ from the saved config when resuming a run.
RESUMABLE_CHANGES = frozenset({"epochs", "device", "tensorboard", "data_dir", "out", "eval_k", "max_minutes"})


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m pyro_vae.fit",
        description="Train a variational autoencoder, written as a Pyro model and guide, with SVI.",
        epilog="Writes to --out: config.json, metrics.jsonl, last.pt, best.pt, summary.json and "
               "pictures (samples.png, reconstructions.png, curves.png, latent_map.png, interpolation.png; "
               "--model cvae / m2: analogies.png, and for m2 confusion_matrix.png and labelled_indices.json).",
    )
    for f in config_fields():
        flag = "--" + f.name.replace("_", "-")
        default = f.default
        if isinstance(default, tuple):
            default = ",".join(map(str, default))
        help_text = f.metadata["help"]
        if "default:" not in help_text:  # some fields describe their default themselves
            help_text += f" (default: {default})"
        if "choices" in f.metadata:
            help_text = f"{{{','.join(f.metadata['choices'])}}} " + help_text
        if f.type == "bool":
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=argparse.SUPPRESS,
                                help=help_text)
        else:
            parser.add_argument(flag, default=argparse.SUPPRESS, metavar=f.name.upper(), help=help_text)
    parser.add_argument("--config", metavar="FILE", help="YAML or JSON file of options (same keys as "
                        "the flags, dashes or underscores); flags given here override it")
    parser.add_argument("--resume", metavar="DIR", help="continue the run in DIR from its last.pt up to "
                        "--epochs; other options must match the run's config.json")
    return parser


def resolve_config(given: dict, config_file: str | None, resume: str | None) -> FitConfig:
    """The run's configuration: saved config (when resuming) < --config FILE < flags."""
    requested = dict(load_config_file(config_file)) if config_file else {}
    requested.update(given)
    requested = {k.replace("-", "_"): v for k, v in requested.items()}
    if resume is None:
        return FitConfig.from_dict(requested, source="options")
    run_dir = Path(resume)
    saved_path = run_dir / "config.json"
    if not saved_path.is_file():
        raise CheckpointError(f"--resume {run_dir}: no config.json there; is it a folder written by "
                              f"`python -m pyro_vae.fit --out {run_dir}`?")
    try:
        saved = FitConfig.from_dict(json.loads(saved_path.read_text()), source=str(saved_path))
    except json.JSONDecodeError as e:
        raise CheckpointError(f"--resume {run_dir}: config.json is corrupt ({e})") from None
    requested.setdefault("out", str(run_dir))
    wanted = FitConfig.from_dict({**saved.to_dict(), **requested}, source="options")
    conflicts = [
        f"{f.name.replace('_', '-')} (run: {getattr(saved, f.name)!r}, given: {getattr(wanted, f.name)!r})"
        for f in dataclasses.fields(FitConfig)
        if f.name not in RESUMABLE_CHANGES and getattr(saved, f.name) != getattr(wanted, f.name)
    ]
    if conflicts:
        raise ConfigError(f"--resume {run_dir}: these options differ from the run's config.json: "
                          f"{'; '.join(conflicts)}. Drop them to continue the run, or start a new run "
                          f"with a different --out")
    if Path(wanted.out).resolve() != run_dir.resolve():
        raise ConfigError(f"--resume {run_dir} continues that run in place; drop --out {wanted.out}")
    return wanted


def run(config: FitConfig, resume: str | None = None) -> dict:
    pyro.settings.set(module_local_params=False)  # SVI needs Pyro's param store; VAEs have unique names
    device = resolve_device(config.device)
    dataset = load_dataset(config.dataset, config.data_dir)
    trainer = Trainer(config, dataset, Path(config.out), device)
    if resume is not None:
        trainer.restore(Path(resume) / "last.pt")
        if trainer.epoch >= config.epochs:
            raise ConfigError(f"--resume {resume}: the run already has {trainer.epoch} epochs; "
                              f"ask for more with --epochs N (N > {trainer.epoch})")
    summary = trainer.fit()
    final = summary["final"]
    say(f"done: {summary['epochs']} epochs in {summary['seconds'] / 60:.1f} min on {summary['device']}; "
        f"test ELBO {final['test_elbo']:.2f} nats/image ({summary['test_binarization']}); "
        + (f"test accuracy of q(y|x) {final['test_accuracy']:.2%}; " if "test_accuracy" in final else "") +
        f"best validation ELBO at epoch {summary['best_epoch']}; "
        + {"epochs": "", "max-minutes": "stopped by --max-minutes; ",
           "early-stopping": "stopped early (--early-stopping); "}[summary["stopped"]] +
        f"everything is in {config.out}/")
    if config.eval_k:
        from .evaluate import evaluate_run

        limit = min(config.eval_size, len(dataset.test)) if config.eval_size else None
        summary["eval"] = evaluate_run(config.out, k=config.eval_k, limit=limit, device=config.device,
                                       log=say)
    return summary


def main(argv: Sequence[str] | None = None) -> int:
    args = vars(build_parser().parse_args(argv))
    config_file, resume = args.pop("config"), args.pop("resume")
    try:
        config = resolve_config(args, config_file, resume)
        run(config, resume)
    except PyroVAEError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted: the last completed epoch's checkpoint (last.pt) is intact; continue with "
              "--resume", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
