"""What every model kind (a *variant*) tells the engine: how its VAE is built, what a training
batch is, its objective, its per-epoch metrics, its log p(x) estimator and its pictures.

The training loop, ``evaluate`` and ``generate`` only call these methods; they never ask which
kind they run. Adding a kind is one module with a :class:`Variant` subclass and one line in
:data:`pyro_vae.variants.kinds.VARIANTS`.

A variant instance holds one run's training state (its batch streams and its loss module); its
class methods (``build``, ``config_problems``, ``check_data``, ``log_px_inputs``) need no run.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import ClassVar

import numpy as np
import torch

from .. import plots
from ..compiled_elbo import CompiledELBO, compile_backend
from ..config_values import spelled, spelled_choices, spelled_value
from ..data import DeviceBatches, intensities
from ..errors import ConfigError
from ..evaluation import eval_mode
from ..guides import GUIDES
from ..guides.missing import MissingPixelsGuide
from ..models import LIKELIHOODS, PRIORS
from ..nets import NetSpec, build_decoder, initialize_linear_layers
from ..objectives import ELBOS, JIT_ELBOS, JitELBO, Scaled, beta_at, elbo_terms
from ..vae import VAE
from .missing import missing_pixels_spec
from .objective import check_objective

EVAL_BATCH_SIZE = 1000  # images per seeded chunk of the per-epoch ELBO
EVAL_SEED = 12345  # z-sampling seed of the per-epoch ELBO evaluations (same every epoch)
PICTURE_IMAGES = 32  # test images shown in the reconstruction and interpolation pictures
ANALOGY_COLUMNS = 12  # test images whose style the analogies figure carries across the labels
MAP_IMAGES = 5000  # test images in the latent maps

Shard = tuple[int, int]  # (this process's rank, number of processes)
Reduce = Callable[[torch.Tensor], torch.Tensor]  # sums a tensor over the processes


@dataclass
class EvalSet:
    """One split's evaluation images on the device, with its labels and a description."""

    name: str
    images: torch.Tensor
    labels: torch.Tensor
    description: str
    mask: torch.Tensor | None = None  # (N, C, H, W) bool, True where observed; None: all observed


def eager_only_problems(config, runs_eagerly: str, *, keywords: bool = False) -> list[str]:
    """The refusals of --jit and --compile, which capture the ELBO of the vae and cvae kinds only,
    for a kind whose objective runs eagerly (``runs_eagerly`` names it)."""
    s = partial(spelled, keywords=keywords)
    captured = spelled_choices("model", ("vae", "cvae"), keywords=keywords, joiner="and")
    return [
        f"{s(flag)} captures the ELBO of {captured}; {runs_eagerly} runs eagerly (drop {s(flag)})"
        for flag in ("jit", "compile")
        if getattr(config, flag)
    ]


def chunk_seed(seed: int, chunk: int) -> int:
    """The z-sampling seed of evaluation chunk ``chunk``: chunks draw the same z in every
    process layout, so 1 and N processes give the same per-epoch ELBO."""
    return int(np.random.SeedSequence(seed, spawn_key=(chunk,)).generate_state(1, np.uint64)[0] % 2**63)


def _no_reduce(t: torch.Tensor) -> torch.Tensor:
    return t


@torch.no_grad()
def mean_elbo_terms(
    vae,
    images: torch.Tensor,
    labels: torch.Tensor | None = None,
    *,
    batch_size: int = EVAL_BATCH_SIZE,
    seed: int = EVAL_SEED,
    shard: Shard = (0, 1),
    reduce: Reduce = _no_reduce,
) -> dict[str, float]:
    """Average ELBO, reconstruction and KL in nats per image, z drawn from per-chunk seeds (the
    global RNG is left untouched, so evaluation never changes a training run). With ``shard``
    (rank, processes) this process scores chunks rank, rank + processes, ...; ``reduce`` sums
    the float64 totals over the processes."""
    rank, world = shard
    devices = [images.device] if images.device.type == "cuda" else []
    sums = torch.zeros(3, dtype=torch.float64, device=images.device)  # elbo, recon, kl
    with eval_mode(vae), torch.random.fork_rng(devices=devices):
        for chunk, start in enumerate(range(0, images.shape[0], batch_size)):
            if chunk % world != rank:
                continue
            torch.manual_seed(chunk_seed(seed, chunk))
            x = images[start : start + batch_size]
            y = None if labels is None else labels[start : start + batch_size]
            terms = elbo_terms(vae.model, vae.guide, x, y)
            sums += torch.stack([terms[k].double().sum() for k in ("elbo", "recon", "kl")])
    sums = reduce(sums)
    return {k: float(v) / images.shape[0] for k, v in zip(("elbo", "recon", "kl"), sums)}


class Variant:
    """Base class of the model kinds. Subclasses set ``name`` and ``takes_labels`` and override
    what differs; the defaults are the plain VAE's."""

    name: ClassVar[str] = ""
    takes_labels: ClassVar[bool] = False  # the networks take the label (one-hot)
    conditions_on_labels: ClassVar[bool] = False  # ELBO / log p(x) given the true labels
    sums_over_labels: ClassVar[bool] = False  # log p(x) = log sum_y p(x, y): one pass per label
    prior_given_labels: ClassVar[bool] = False  # p(z | y): the prior's given_labels class is built
    # missing pixels (--missing-rate, a mask with the data): the kind builds build_masked_model and
    # takes (x, mask) batches; see pyro_vae.variants.missing
    takes_missing_pixels: ClassVar[bool] = False

    # -- building ----------------------------------------------------------------------------
    @classmethod
    def config_problems(cls, config, *, keywords: bool = False) -> list[str]:
        """What this kind refuses in ``config``, in messages naming the flags, or with ``keywords``
        the Python keyword arguments (``pyro_vae.fit``)."""
        s, problems = partial(spelled, keywords=keywords), cls.prior_problems(config, keywords=keywords)
        for option, verb in (("jit", "traces"), ("compile", "captures")):
            if getattr(config, option) and config.elbo not in JIT_ELBOS:
                problems.append(
                    f"{s(option)} {verb} {spelled_choices('elbo', JIT_ELBOS, keywords=keywords)}, not "
                    f"{s('elbo', config.elbo)} (drop {s(option)}, or use {s('elbo', 'trace')})"
                )
        if config.compile and config.jit:
            problems.append(f"{s('compile')} and {s('jit')} are two ways to the same step: give one ({s('compile')})")
        if config.labels is not None:
            problems.append(
                f"{s('labels')} picks the labelled images of {s('model', 'm2')}; this run is "
                f"{s('model', config.model)} (drop {s('labels')}, or use {s('model', 'm2')})"
            )
        return problems + cls.latent_problems(config, keywords=keywords)

    @classmethod
    def latent_problems(cls, config, *, keywords: bool = False) -> list[str]:
        """A message if ``--latent-dim`` gives several layers' widths to a kind with one latent layer."""
        if not isinstance(config.latent_dim, tuple):
            return []
        s = partial(spelled, keywords=keywords)
        widths = config.latent_dim if keywords else ",".join(map(str, config.latent_dim))
        return [
            f"{s('latent_dim', widths)} gives one width per stochastic layer "
            f"({s('model', 'hvae')}); {s('model', config.model)} has one latent layer: give one number"
        ]

    @classmethod
    def accepts_prior(cls, prior) -> bool:
        """Whether this kind works with the prior class (or factory) ``prior``, as its attributes
        say: a kind whose networks take the label needs ``takes_labels_ok``, one whose p(z) depends
        on the label also a ``given_labels`` class."""
        if not cls.takes_labels:
            return True
        if not getattr(prior, "takes_labels_ok", False):
            return False
        return not cls.prior_given_labels or getattr(prior, "given_labels", None) is not None

    @classmethod
    def prior_problems(cls, config, *, keywords: bool = False) -> list[str]:
        """A message if this kind does not accept ``config.prior`` (:meth:`accepts_prior`)."""
        if cls.accepts_prior(PRIORS.resolve(config.prior)):
            return []
        accepted = [name for name in PRIORS.names() if cls.accepts_prior(PRIORS.resolve(name))]
        return [
            f"{spelled('model', cls.name, keywords=keywords)} takes "
            f"{spelled_choices('prior', accepted, keywords=keywords)}, not "
            f"{spelled_value(config.prior, keywords=keywords)} (the VampPrior's pseudo-inputs have no labels)"
        ]

    @classmethod
    def check_data(cls, dataset, config=None) -> None:
        """Raise :class:`ConfigError` if this kind cannot train on ``dataset`` (a kind whose
        networks take the label needs two classes or more) with ``config``."""
        if cls.takes_labels and dataset.num_classes < 2:
            raise ConfigError(
                f"--model {cls.name} needs labelled data; {dataset.name} has "
                f"{'no labels' if not dataset.num_classes else 'one class'} (put the images in one "
                f"sub-folder per class, or give labels in the array file), or use --model vae"
            )

    @classmethod
    def build(
        cls, config, image_shape: tuple[int, ...], num_classes: int = 10, *, prior=None, guide=None, likelihood=None
    ):
        """The VAE that ``config`` describes for images of shape (C, H, W); ``prior``, ``guide``
        or ``likelihood``, if given, are used as they are (objects a user made) in place of the
        ones ``config`` names."""
        cond_dim = num_classes if cls.takes_labels else 0
        spec = NetSpec(
            image_shape=tuple(image_shape),
            latent_dim=config.latent_dim,
            hidden=tuple(config.hidden),
            cond_dim=cond_dim,
            activation=config.activation,
        )
        if likelihood is None:
            likelihood = LIKELIHOODS.build(config.likelihood, tuple(image_shape), config)
        masked = config.masked and cls.takes_missing_pixels
        if guide is None:  # q(z | x), or q(z | x, y) when cond_dim > 0; q(z | x_obs, m) when masked
            guide = GUIDES.build(config.guide, missing_pixels_spec(spec) if masked else spec, config)
        if masked:
            guide = MissingPixelsGuide(guide)
        if prior is None:
            prior = cls.build_prior(config, spec, guide, num_classes)
        guide = cls.wrap_guide(guide, config, spec, num_classes)
        check_objective(config, prior, guide)
        decoder = build_decoder(config.net, spec, likelihood.params_per_pixel)
        build_model = cls.build_masked_model if masked else cls.build_model
        vae = VAE(build_model(prior, decoder, likelihood, num_classes), guide)
        initialize_linear_layers(vae, config.init)  # --init: the papers' schemes
        vae.config = config
        vae.image_shape = tuple(image_shape)
        vae.variant = cls  # how labels enter log p(x): conditions_on_labels, log_px_inputs
        return vae

    @classmethod
    def build_prior(cls, config, spec: NetSpec, guide, num_classes: int):
        prior = PRIORS.resolve(config.prior)
        if cls.prior_given_labels:  # p(z | y): e.g. --prior learned builds one Gaussian per label
            prior = prior.given_labels
        return PRIORS.build(prior, spec, config, guide)  # VampPrior reuses the guide's encoder

    @classmethod
    def wrap_guide(cls, guide, config, spec: NetSpec, num_classes: int):
        return guide

    @classmethod
    def build_model(cls, prior, decoder, likelihood, num_classes: int):
        raise NotImplementedError

    @classmethod
    def build_masked_model(cls, prior, decoder, likelihood, num_classes: int):
        """The model scored on the observed values, ``model(x, mask)`` (kinds that take missing pixels)."""
        raise NotImplementedError

    # -- evaluation (no run needed) ------------------------------------------------------------
    @classmethod
    def log_px_inputs(cls, labels: torch.Tensor, num_classes: int) -> tuple[dict, str]:
        """Keyword arguments of :func:`pyro_vae.evaluation.evaluate_log_px` for this kind, and
        the quantity it estimates, in words."""
        return {}, "log p(x)"

    # -- one run's training state --------------------------------------------------------------
    def __init__(self, config, num_classes: int, device: torch.device, shard: Shard = (0, 1)):
        self.config = config
        self.num_classes = num_classes
        self.device = device
        self.shard = shard
        self.loss: torch.nn.Module | None = None

    def _batches(self, images, labels, batch_size: int, seed: int, what: str | None = None) -> DeviceBatches:
        world = self.shard[1]
        if batch_size % world:
            what = what or f"--batch-size {batch_size} (the global batch)"
            raise ConfigError(
                f"{what} is split evenly across {world} processes, so it must be divisible "
                f"by {world}; e.g. --batch-size {max(world, batch_size // world * world)}"
            )
        return DeviceBatches(
            images,
            labels,
            batch_size,
            binarization=self.config.binarize,
            seed=seed,
            device=self.device,
            shard=self.shard,
        )

    def setup(self, train, vae, log: Callable[[str], None]) -> str:
        """Prepare the training batches of the split ``train`` and the loss module of ``vae``;
        returns a description of the training images."""
        cfg = self.config
        check_objective(cfg, vae.model.prior, vae.guide)  # also for a VAE built outside the config
        self.num_train = len(train)
        # images uint8 or floats; with each its label, or its mask of observed values (missing pixels)
        self.batches = self._batches(train.data, self.batch_companions(train), cfg.batch_size, cfg.seed)
        # Pyro's ELBO module, called as loss(x, y, data_scale, beta)
        self.loss = ELBOS.build(cfg.elbo, cfg.particles, cfg)(Scaled(vae.model), Scaled(vae.guide))
        if cfg.jit:
            self.loss = JitELBO(self.loss)
        if cfg.compile:
            self.loss = CompiledELBO(self.loss, backend=compile_backend(self.device, log))
        return f"{self.num_train:,} training images"

    def batch_companions(self, train) -> torch.Tensor:
        """What comes with each training image in a batch: its label (N,)."""
        return train.labels

    def __len__(self) -> int:
        """Optimizer steps per epoch."""
        return len(self.batches)

    def _data_scale(self, num_data: int, batches: DeviceBatches, index: int) -> float:
        """N / B of the global batch, times the processes: the gradients DDP averages over the
        processes then equal one process's on the whole global batch, and each process's loss
        is itself an estimate of the whole training set's ELBO."""
        return num_data / batches.global_rows(index) * self.shard[1]

    def beta(self, step: int) -> float:
        """The KL weight of optimizer step ``step`` (0-based, counted over the whole run)."""
        return beta_at(step, len(self), self.config.beta, self.config.warmup_epochs)

    def training_batches(self, first_step: int = 0) -> Iterator[tuple]:
        """One epoch of the loss module's arguments ``(x, y, data_scale, beta)``, the epoch's
        optimizer steps counted from ``first_step`` (the KL warm-up's beta depends on it)."""
        for i, (x, y) in enumerate(self.batches):
            yield *self.loss_args(x, y), self._data_scale(self.num_train, self.batches, i), self.beta(first_step + i)

    def loss_args(self, x: torch.Tensor, y: torch.Tensor) -> tuple:
        """The batch as the model and guide take it, ``(x, y)``: y None where they take no label."""
        return (x, None)

    def first_batch(self) -> tuple:
        """The arguments of one (small) training batch, to create lazy parameters and check the
        data before the loss module is wrapped for the devices; draws from no generator."""
        x = intensities(self.batches.images[:2]).to(self.device)  # (2, C, H, W) float32 (stored uint8 maybe)
        if self.config.binarize == "dynamic":
            x = (x > 0.5).to(x.dtype)
        return *self.loss_args(x, self.batches.labels[:2].to(self.device)), 1.0, 1.0  # (scales: 1)

    def sampler_state(self) -> dict:
        return self.batches.state_dict()

    def load_sampler_state(self, state: dict) -> None:
        self.batches.load_state_dict(state)

    def files(self, out: Path) -> dict[str, dict]:
        """Extra JSON files this kind writes at the start of a run (name -> content)."""
        return {}

    # -- per-epoch metrics ---------------------------------------------------------------------
    def eval_labels(self, eval_set: EvalSet) -> torch.Tensor | None:
        """The labels the per-epoch ELBO conditions on (None: p(x))."""
        return eval_set.labels if self.conditions_on_labels else None

    def epoch_metrics(self, vae, eval_sets: list[EvalSet], reduce: Reduce = _no_reduce) -> dict[str, float]:
        """``<split>_elbo``, ``_recon`` and ``_kl`` per split (nats per image)."""
        out = {}
        for s in eval_sets:
            terms = mean_elbo_terms(vae, s.images, self.eval_labels(s), shard=self.shard, reduce=reduce)
            out.update({f"{s.name}_{k}": v for k, v in terms.items()})
        return out

    def epoch_line(self, record: dict) -> str:
        """Extra text for the epoch's log line."""
        return ""

    # -- pictures ------------------------------------------------------------------------------
    def pictures(self, vae, test: EvalSet, out: Path) -> list[Path]:
        """Samples, reconstructions, interpolations and latent maps of the current model."""
        n = min(PICTURE_IMAGES, test.images.shape[0])
        x = test.images[:n]
        paths = [
            plots.sample_grid(vae, out / "samples.png"),
            plots.reconstruction_grid(vae, x, out / "reconstructions.png"),
        ]
        half = n // 2
        if half:
            paths.append(
                plots.interpolation_grid(
                    vae, x[: min(half, 8)], x[half : half + min(half, 8)], out / "interpolation.png"
                )
            )
        paths += plots.latent_maps(vae, test.images[:MAP_IMAGES], test.labels[:MAP_IMAGES], out)
        return paths

    def conditional_pictures(self, vae, test: EvalSet, out: Path, given: torch.Tensor | None) -> list[Path]:
        """Labelled kinds: samples by label, the analogies figure, reconstructions (given the
        true label, or None: the classifier's) and the latent map."""
        n = min(PICTURE_IMAGES, test.images.shape[0])
        return [
            plots.label_sample_grid(vae, out / "samples.png"),
            plots.analogy_grid(
                vae,
                out / "analogies.png",
                sources=test.images[:ANALOGY_COLUMNS],
                source_labels=None if given is None else given[:ANALOGY_COLUMNS],
            ),
            plots.reconstruction_grid(
                vae, test.images[:n], out / "reconstructions.png", None if given is None else given[:n]
            ),
            *plots.latent_maps(
                vae,
                test.images[:MAP_IMAGES],
                test.labels[:MAP_IMAGES],
                out,
                condition=None if given is None else given[:MAP_IMAGES],
            ),
        ]
