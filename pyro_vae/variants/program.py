"""A model kind given as a pair of Pyro programs: your own model and guide, with any latent
structure, by import path (``--model mypackage.models:TwoLayerVAE``; ``pyro_vae.fit(model=...)``).

The protocol: a class (or factory) that is given what it asks for by parameter name, of
``image_shape`` (C, H, W), ``config`` (the :class:`~pyro_vae.config.FitConfig`), ``latent_dim``,
``hidden``, ``activation``, ``num_classes`` and ``likelihood`` (the ``--likelihood`` object), and
returns an object with two attributes:

* ``model``: a PyroModule, ``model(x, y=None)``, every sample site inside
  ``pyro.plate("data", x.shape[0], dim=-1)`` with its event dimensions declared (``.to_event``),
  the images observed at ``pyro.sample("x", ..., obs=x)``; discrete latent sites that the guide
  does not sample are marked ``infer={"enumerate": "parallel"}`` and summed out exactly
  (``--elbo enum``);
* ``guide``: a PyroModule, ``guide(x, y=None)``, with a site for every other latent site.

Labels are optional: a class with ``takes_labels = True`` is given each image's label ``y`` (a
(B,) integer tensor) in training and evaluation, so that its log p(x) is log p(x | y); its model
then says how many labels there are (``model.num_classes``), for samples by label.

Parameters live in the modules (``module_local_params``). Training scales the programs from outside
(mini-batch N / B and the KL weight, :class:`~pyro_vae.objectives.Scaled`); evaluation replays the
guide into the model over every latent site; samples run the model on n placeholder images with
its observation removed (:mod:`pyro_vae.models.programs`). config.json records the import path, so
``evaluate``, ``generate`` and ``pyro_vae.load`` rebuild the model in a fresh process.
"""

from __future__ import annotations

from functools import partial
from pathlib import Path

import torch
from pyro import poutine
from pyro.infer import TraceEnum_ELBO
from pyro.poutine.util import site_is_subsample

from .. import plots
from ..config import FitConfig
from ..config_values import spelled, spelled_value
from ..data import intensities
from ..errors import ConfigError
from ..models import LIKELIHOODS
from ..models.programs import OBSERVED_SITE
from ..objectives import ELBOS, Scaled
from ..registry import Lazy, call_with_offered, import_path_of
from ..vae import VAE
from .base import PICTURE_IMAGES, EvalSet, Variant, eager_only_problems

# options that choose pieces of the built-in kinds; a model of one's own defines its own
BUILT_IN_PIECES = (
    "prior",
    "guide",
    "net",
    "prior_components",
    "guide_rank",
    "flow_layers",
    "flow_hidden",
    "flow_context",
)


class ProgramVariant(Variant):
    """The model kind of a model and guide written as Pyro programs (the module docstring's
    protocol). :meth:`of` makes the kind of one class; the built-in ``hvae`` is one too."""

    program = None  # the class or factory that makes {model, guide}
    own = True  # a user's class: the built-in pieces' options do not apply

    @classmethod
    def of(cls, program, name: str | None = None, **attributes) -> type[ProgramVariant]:
        """The variant of ``program`` (a class or factory), named by its import path unless ``name``."""
        if name is None:
            name = import_path_of(program, "model")
        # a class that declares takes_labels = True is given each image's label y (an integer
        # tensor, (B,)), in training and evaluation alike: its log p(x) is log p(x | y)
        labels = bool(getattr(program, "takes_labels", False))
        attributes = {"takes_labels": labels, "conditions_on_labels": labels, **attributes}
        return type(f"ProgramVariant[{name}]", (cls,), {"program": program, "name": name, **attributes})

    # -- building ----------------------------------------------------------------------------
    @classmethod
    def config_problems(cls, config, *, keywords: bool = False) -> list[str]:
        s, problems = partial(spelled, keywords=keywords), []
        if cls.own:
            changed = [s(f) for f in BUILT_IN_PIECES if getattr(config, f) != getattr(FitConfig, f, None)]
            if changed:
                problems.append(
                    f"{s('model', cls.name)} defines its own p(z) and q(z|x): {', '.join(changed)} "
                    f"choose pieces of the built-in kinds (drop them; your class reads any option "
                    f"it needs from `config`)"
                )
        if getattr(ELBOS.resolve(config.elbo), "needs_analytic_kl", False):
            problems.append(
                f"{s('elbo', config.elbo)} takes each latent site's KL in closed form, which a program "
                f"whose sites depend on each other does not have; use {s('elbo', 'trace')} "
                f"(or {spelled_value('enum', keywords=keywords)})"
            )
        problems += eager_only_problems(config, "a model of Pyro programs", keywords=keywords)
        if config.labels is not None:
            problems.append(
                f"{s('labels')} picks the labelled images of {s('model', 'm2')}; this run is "
                f"{s('model', config.model)} (drop {s('labels')})"
            )
        return problems

    @classmethod
    def build(
        cls, config, image_shape: tuple[int, ...], num_classes: int = 10, *, prior=None, guide=None, likelihood=None
    ):
        if prior is not None or guide is not None:
            raise ConfigError(f"--model {cls.name} defines its own p(z) and q(z|x); pass no prior or guide")
        offered = {
            "image_shape": tuple(image_shape),
            "config": config,
            "latent_dim": config.latent_dim,
            "hidden": tuple(config.hidden),
            "activation": config.activation,
            "num_classes": num_classes,
            "likelihood": likelihood
            if likelihood is not None
            else Lazy(lambda: LIKELIHOODS.build(config.likelihood, tuple(image_shape), config)),
        }
        made = call_with_offered(cls.program, offered, "model")
        parts = {part: getattr(made, part, None) for part in ("model", "guide")}
        wrong = [part for part, module in parts.items() if not isinstance(module, torch.nn.Module)]
        if wrong:
            raise ConfigError(
                f"--model {cls.name} made a {type(made).__name__} whose {' and '.join(wrong)} "
                f"{'is' if len(wrong) == 1 else 'are'} not a torch module: it must have the attributes "
                f"`model` and `guide`, PyroModules whose forward(x, y=None) is the Pyro program "
                f"(docs/extending.md, 'Your own model')"
            )
        vae = VAE(parts["model"], parts["guide"])
        vae.config = config
        vae.image_shape = tuple(image_shape)
        vae.variant = cls
        return vae

    @classmethod
    def check_data(cls, dataset, config=None) -> None:
        """Also runs the program once on two training images and refuses, before training, what
        cannot work (:func:`program_problems`)."""
        super().check_data(dataset, config)
        if config is None:
            return
        x = intensities(dataset.train.data[:2]).float()
        if config.binarize != "none":
            x = (x > 0.5).to(x.dtype)
        y = dataset.train.labels[:2] if cls.takes_labels else None
        with torch.random.fork_rng(devices=[]):
            vae = cls.build(config, tuple(dataset.image_shape), dataset.num_classes)
            found = program_problems(vae.model, vae.guide, x, y, config.elbo)
        if found:
            raise ConfigError(f"--model {cls.name}: " + "; ".join(found))

    @classmethod
    def log_px_inputs(cls, labels: torch.Tensor, num_classes: int) -> tuple[dict, str]:
        if cls.conditions_on_labels:
            return {"labels": labels}, "log p(x | y), true labels"
        return {}, "log p(x)"

    # -- one run's training state --------------------------------------------------------------
    def loss_args(self, x: torch.Tensor, y: torch.Tensor) -> tuple:
        return (x, y if self.takes_labels else None)

    def setup(self, train, vae, log) -> str:
        cfg = self.config
        self.num_train = len(train)
        self.batches = self._batches(train.data, train.labels, cfg.batch_size, cfg.seed)
        # (program_problems ran in check_data, which the trainer calls before setup)
        self.loss = ELBOS.build(cfg.elbo, cfg.particles, cfg)(Scaled(vae.model), Scaled(vae.guide))
        return f"{self.num_train:,} training images"

    # -- pictures ------------------------------------------------------------------------------
    def pictures(self, vae, test: EvalSet, out: Path) -> list[Path]:
        """Samples (every latent site drawn per image) and reconstructions (each site at the
        guide's mean)."""
        n = min(PICTURE_IMAGES, test.images.shape[0])
        labels = test.labels[:n] if self.takes_labels else None  # a model given y reconstructs given y
        return [
            plots.sample_grid(vae, out / "samples.png"),
            plots.reconstruction_grid(vae, test.images[:n], out / "reconstructions.png", labels),
        ]


def _in_data_plate(site: dict, rows: int) -> bool:
    return any(frame.dim == -1 and frame.size == rows for frame in site["cond_indep_stack"])


def program_problems(model, guide, x: torch.Tensor, y, elbo: str) -> list[str]:
    """What keeps ``model`` and ``guide`` from training with ``--elbo elbo`` (messages naming each
    site and the fix), found by running them once on the images ``x``: a site outside the data
    plate, no observed site ``x``, a model latent the guide misses (unless enumerated, which needs
    an ELBO that enumerates), a guide site without ``rsample`` under an ELBO that needs one."""
    factory = ELBOS.resolve(elbo)
    # a registered ELBO says what it can do; a class of one's own enumerates if it is Pyro's TraceEnum_ELBO's
    enumerates = getattr(factory, "enumerates", isinstance(factory, type) and issubclass(factory, TraceEnum_ELBO))
    rows, found = x.shape[0], []
    with torch.no_grad():
        guide_trace = poutine.trace(guide).get_trace(x, y)
        model_trace = poutine.trace(poutine.replay(model, trace=guide_trace)).get_trace(x, y)
    for who, trace in (("model", model_trace), ("guide", guide_trace)):
        for name, site in trace.nodes.items():
            if site["type"] != "sample" or site_is_subsample(site):
                continue
            if not _in_data_plate(site, rows):
                found.append(
                    f"the {who}'s site {name!r} is outside the data plate: sample it inside "
                    f"`with pyro.plate('data', x.shape[0], dim=-1):` (each image's latents belong to "
                    f"that image; what all images share is a parameter, not a sample site)"
                )
            if who == "guide" and site["infer"].get("enumerate"):
                found.append(
                    f"the guide enumerates its site {name!r}: enumerate discrete sites in the model "
                    f"(infer={{'enumerate': 'parallel'}} there, with --elbo enum), or sample them "
                    f"in the guide without enumeration"
                )
    observed = model_trace.nodes.get(OBSERVED_SITE)
    if observed is None or not observed["is_observed"]:
        found.append(
            f"the model observes no site {OBSERVED_SITE!r}: score the images with "
            f"pyro.sample({OBSERVED_SITE!r}, p_x, obs=x)"
        )
    for name, site in model_trace.nodes.items():
        if site["type"] != "sample" or site["is_observed"] or site_is_subsample(site) or name in guide_trace.nodes:
            continue
        enumerable = site["infer"].get("enumerate") == "parallel" and site["fn"].has_enumerate_support
        if not enumerable:
            found.append(
                f"the guide has no site {name!r}, which the model samples: give the guide a site "
                f"of that name (q({name} | x)), or, for a discrete site, mark it "
                f"infer={{'enumerate': 'parallel'}} in the model and train with --elbo enum"
            )
        elif not enumerates:
            found.append(
                f"--elbo {elbo} cannot sum out the discrete site {name!r} that the model enumerates; "
                f"use --elbo enum (Pyro's TraceEnum_ELBO)"
            )
    if getattr(factory, "needs_reparameterized", False):
        for name, site in guide_trace.nodes.items():
            if site["type"] == "sample" and not site_is_subsample(site) and not site["fn"].has_rsample:
                found.append(
                    f"--elbo {elbo} needs a reparameterized guide, but the guide's site {name!r} "
                    f"({type(site['fn']).__name__}) has no rsample: use --elbo trace, or enum for a "
                    f"discrete site the model can sum out"
                )
    return found
