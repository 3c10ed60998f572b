"""The Python API: ``pyro_vae.fit(...)`` trains a run and returns it; ``pyro_vae.load(run_dir)``
brings a trained VAE back from its run folder, ready for ``encode`` / ``decode`` / ``sample`` /
``reconstruct`` / ``log_px`` (and, for conditional runs, ``sample(n, label=7)``; for M2,
``classify(x)``).

    run = pyro_vae.fit(dataset="mnist", epochs=10, train_size=10_000, out="runs/quick")
    run.vae.sample(16); run.metrics[-1]["test_elbo"]; run.out / "samples.png"
    run = pyro_vae.fit(prior=LaplacePrior, guide="mypackage.guides:FullCovarianceGuide", out=...)
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from .config import FitConfig
from .devices import accelerator_alias, resolve_device
from .engine.load import load
from .engine.records import read_metrics
from .engine.train import resume_config
from .engine.train import run as run_fit
from .errors import ConfigError
from .vae import VAE
from .variants import checked

__all__ = ["Run", "fit", "load"]

PIECES = ("prior", "guide", "likelihood", "net")


@dataclass
class Run:
    """A trained run: the VAE loaded from its folder (``best.pt``: highest validation ELBO), the
    folder, its configuration, ``summary.json`` and the per-epoch records of ``metrics.jsonl``."""

    vae: VAE
    out: Path
    config: FitConfig
    summary: dict = field(default_factory=dict)
    metrics: list[dict] = field(default_factory=list)

    @property
    def final(self) -> dict:
        """The last epoch's train / valid / test ELBO, reconstruction and KL (nats per image)."""
        return self.summary.get("final", {})

    def __repr__(self) -> str:
        test = self.final.get("test_elbo")
        return (
            f"Run(out={str(self.out)!r}, epochs={len(self.metrics)}, "
            f"test_elbo={'n/a' if test is None else f'{test:.2f}'})"
        )


def fit(
    config: FitConfig | Mapping[str, Any] | None = None,
    *,
    prior=None,
    guide=None,
    likelihood=None,
    net=None,
    overwrite: bool = False,
    resume: str | Path | None = None,
    **options,
) -> Run:
    """Train a VAE, as ``python -m pyro_vae.fit`` does, and return the :class:`Run`.

    :param config: a :class:`FitConfig` or a dict of its fields (dashes or underscores), or None
        (the defaults); ``options`` (any field of :class:`FitConfig`: ``dataset="fashion-mnist"``,
        ``epochs=5``, ``out="runs/x"``, ...) override it.
    :param prior: a registered name (``"mog"``), an import path (``"mypackage.priors:LaplacePrior"``),
        a class or factory (built with the arguments its signature asks for: ``latent_dim``,
        ``image_shape``, ``components``, ``spec``, ``config``, ``guide``), or an object (used as it is;
        its class must rebuild it from those arguments for ``load``).
    :param guide: the same for q(z|x); a class may ask for ``encoder`` (a fresh ``--net``
        encoder), ``latent_dim``, ``num_classes``, ``image_shape``, ``spec``, ``config``.
    :param likelihood: the same for p(x|z); a class may ask for ``image_shape``, ``config``.
    :param net: a name, an import path, or a class whose ``encoder`` and ``decoder`` attributes
        are the two network classes.
    :param overwrite: replace a finished run already in ``out`` (``fit --overwrite``); without it
        such a folder is refused, as on the command line.
    :param resume: a run folder to continue (``fit --resume``): from its ``last.pt`` up to
        ``epochs``, or finishing what an interruption left; ``options`` may change only what a
        resumed run may (``epochs``, the device, ...), and the pieces are the run's own.
    :returns: the :class:`Run` (``run.vae``, ``run.metrics``, ``run.summary``, ``run.out``).
    :raises pyro_vae.errors.ConfigError: a bad option, named as a keyword argument (with the
        closest known one), or an ``out`` folder that already holds a run (without ``overwrite``
        or ``resume``).

    ``model`` (an option) may be a registered kind (``"hvae"``), an import path, or your own class
    or factory whose ``model`` and ``guide`` are Pyro programs (docs/extending.md, "Your own
    model"); ``elbo`` likewise a name, an import path or a class (a subclass of Pyro's ``ELBO``).

    ``config.json`` in the run folder records each piece by its import path (a class defined in
    a notebook or script is recorded as ``__main__:Name``, which only that session can reload),
    so ``pyro_vae.load``, ``evaluate`` and ``generate`` rebuild the model. The returned
    ``run.vae`` is that reload of ``best.pt``.
    """
    if isinstance(config, FitConfig):
        given = config.to_dict()
    elif config is None:
        given = {}
    elif isinstance(config, Mapping):
        given = {str(k).replace("-", "_"): v for k, v in config.items()}
    else:
        raise ConfigError(f"config must be a FitConfig, a dict of its fields or None, got {type(config).__name__}")
    given.update({k.replace("-", "_"): v for k, v in options.items()})
    if given.get("device") is not None:  # an alias of accelerator
        given["accelerator"], _ = accelerator_alias(given.get("accelerator"), given.pop("device"))
    pieces, objects = {}, {}
    for name, value in zip(PIECES, (prior, guide, likelihood, net)):
        if value is None:
            value = given.pop(name, None)
        else:
            given.pop(name, None)
        if value is None:
            continue
        if isinstance(value, torch.nn.Module):  # an object: used as is, recorded by its class
            if name == "net":
                raise ConfigError(
                    "net takes a name, an import path or a class with encoder and decoder "
                    "attributes (the networks are built for the data's shape), not a module"
                )
            objects[name] = value
            value = type(value)
        pieces[name] = value
    for name in ("model", "elbo"):  # a class of one's own (a model, an ELBO): recorded by its import path
        if given.get(name) is not None and not isinstance(given[name], str):
            pieces[name] = given.pop(name)
    strings = {k: v for k, v in pieces.items() if isinstance(v, str)}
    classes = {k: v for k, v in pieces.items() if not isinstance(v, str)}
    if resume is not None:
        if classes:
            raise ConfigError(
                f"resume={str(resume)!r} continues the run with the pieces its config.json records; "
                f"drop {', '.join(f'{name}=' for name in classes)}"
            )
        cfg = resume_config({**given, **strings}, resume, keywords=True)
        resume = str(resume)
    else:
        cfg = FitConfig.from_dict({**given, **strings}, source="pyro_vae.fit options", keywords=True)
        if classes:
            cfg = cfg.replace(**classes)
        # records the classes' import paths; refuses a bad combination before training
        cfg = checked(cfg, keywords=True)
    summary = run_fit(cfg, resume, overwrite=overwrite, pieces=objects, keywords=True)
    out = Path(cfg.out)
    vae = load(out, device=resolve_device(cfg.accelerator))
    return Run(vae=vae, out=out, config=vae.config, summary=summary, metrics=read_metrics(out / "metrics.jsonl"))
