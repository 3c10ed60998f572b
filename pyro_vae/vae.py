"""``VAE``: a model and its guide under one ``PyroModule``, plus the user-facing methods
``encode``, ``decode``, ``sample``, ``reconstruct``, ``log_px`` and ``classify``.

Their inputs are checked: images must be a batch (B, C, H, W) of intensities in [0, 1], latents
(B, D); a mistake is an :class:`~pyro_vae.errors.InputError` naming the expected shape.

Parameters live in the modules (``pyro.settings.set(module_local_params=True)``, set by the
command-line tools, the tests and the notebooks), so two models in one process never share them.
"""

from __future__ import annotations

import contextlib
import math

import torch
from pyro.nn import PyroModule

from .config import FitConfig
from .errors import ConfigError, InputError
from .guides.missing import MissingPixelsGuide
from .guides.semisupervised import M2Guide
from .labels import check_label_values
from .models import VAEModel
from .models.programs import posterior_means, reconstruct_images, sample_images


class VAE(PyroModule):
    """A VAE: ``model(x)`` is p(x, z), ``guide(x)`` is q(z | x); both are Pyro programs."""

    def __init__(self, model: VAEModel, guide: PyroModule):
        super().__init__()
        self.model = model
        self.guide = guide
        self.config: FitConfig | None = None  # set by build_vae / pyro_vae.load
        self.image_shape: tuple[int, ...] | None = None  # (C, H, W), set by build_vae
        # the model kind's variant class (pyro_vae.variants), set when it builds this VAE: says how
        # labels enter log p(x) (conditions_on_labels, log_px_inputs)
        self.variant = None

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    @property
    def latent_dim(self) -> int | None:
        """D, the dimension of z (of z_1, nearest x, for several layers; None for a VAE built
        without a config)."""
        if self.config is None:
            return None
        return self.config.latent_dim[0] if isinstance(self.config.latent_dim, tuple) else self.config.latent_dim

    # -- input checks --------------------------------------------------------------------------
    def _dtype(self) -> torch.dtype:
        """The floating type of the parameters (inputs are converted to it)."""
        for p in self.parameters():
            if p.is_floating_point():
                return p.dtype
        return torch.get_default_dtype()

    def _expected_images(self) -> str:
        return f"(B, {', '.join(map(str, self.image_shape))})" if self.image_shape else "(B, C, H, W)"

    def check_images(self, x, what: str = "x") -> torch.Tensor:
        """``x`` as a float tensor on the model's device, after checking that it is a batch of
        images of this model's shape (B, C, H, W) with intensities in [0, 1]."""
        if not isinstance(x, torch.Tensor):
            try:
                x = torch.as_tensor(x)
            except (TypeError, ValueError, RuntimeError) as e:
                raise InputError(
                    f"{what} must be a tensor or an array of images {self._expected_images()}, "
                    f"got {type(x).__name__} ({e})"
                ) from None
        expected = self._expected_images()
        shape = tuple(x.shape)
        if self.image_shape is not None and shape != (shape[0] if shape else 0, *self.image_shape):
            hint = ""
            if shape == tuple(self.image_shape):
                hint = f"; for one image, pass {what}[None] (a batch of 1)"
            elif len(shape) == 2 and shape[1] == math.prod(self.image_shape):
                hint = f"; {what} is flattened: pass {what}.view(-1, {', '.join(map(str, self.image_shape))})"
            elif len(shape) == len(self.image_shape) + 1 and shape[1:] == tuple(reversed(self.image_shape)):
                hint = f"; channels last? pass {what}.permute(0, 3, 1, 2)"
            raise InputError(f"{what} must be a batch of images of shape {expected} (B any), got {shape}{hint}")
        if self.image_shape is None and x.dim() < 2:
            raise InputError(f"{what} must be a batch of images {expected}, got shape {shape}")
        if shape[0] == 0:
            raise InputError(f"{what} holds no images (shape {shape})")
        if not (x.is_floating_point() or x.dtype == torch.bool):
            lo, hi = int(x.min()), int(x.max())
            fix = (
                f"pass them as floats: {what}.float()"  # binary pixels: already in [0, 1]
                if 0 <= lo and hi <= 1
                else f"pass intensities in [0, 1]: {what}.float() / 255 for 8-bit pixels"
            )
            raise InputError(f"{what} holds integers ({x.dtype}, values {lo}..{hi}); {fix}")
        x = x.to(device=self.device, dtype=self._dtype())
        if not bool(torch.isfinite(x).all()):
            raise InputError(f"{what} holds NaN or infinite values")
        lo, hi = float(x.min()), float(x.max())
        if lo < 0 or hi > 1:
            raise InputError(
                f"{what} has values in [{lo:g}, {hi:g}]; expected intensities in [0, 1] (divide 8-bit pixels by 255)"
            )
        return x

    def check_latents(self, z, what: str = "z") -> torch.Tensor:
        """``z`` as a tensor on the model's device, after checking its shape (B, D)."""
        z = torch.as_tensor(z, device=self.device)
        d = self.latent_dim
        expected = f"(B, {d if d is not None else 'D'})"
        if z.dim() == 1 and (d is None or z.shape[0] == d):
            raise InputError(
                f"{what} must be a batch of latents of shape {expected}, got {tuple(z.shape)}; "
                f"for one latent, pass {what}[None]"
            )
        if z.dim() != 2 or (d is not None and z.shape[1] != d):
            raise InputError(f"{what} must be a batch of latents of shape {expected} (B any), got {tuple(z.shape)}")
        return z.to(self._dtype())

    @staticmethod
    def _check_count(n, what: str = "n") -> int:
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise InputError(f"{what} must be a whole number of images, at least 1, got {n!r}")
        return n

    @property
    def num_classes(self) -> int:
        """Number of labels the model knows (0: unconditional)."""
        return getattr(self.model, "num_classes", 0)

    @property
    def conditional(self) -> bool:
        return self.num_classes > 0

    def _checked_labels(self, y, rows: int, device: torch.device) -> torch.Tensor:
        """User labels (an int, or one per row) as a long tensor of shape (rows,), each in 0..C-1."""
        y = check_label_values(torch.as_tensor(y, device=device), self.num_classes)
        if y.dim() > 1 or (y.dim() == 1 and y.shape[0] != rows):
            raise ConfigError(f"got {tuple(y.shape)} labels for {rows} images; give one label, or one label per image")
        return y.expand(rows)

    def labels_for(self, x: torch.Tensor, y=None) -> torch.Tensor | None:
        """The labels to condition x on: ``y`` checked; for M2 without ``y``, q(y | x)'s most likely
        label; None for an unconditional model."""
        if not self.conditional:
            return None
        if y is None:
            if isinstance(self.guide, M2Guide):
                return self.classify(x).argmax(-1)
            raise ConfigError("this conditional VAE (--model cvae) encodes and reconstructs x given its label: pass y")
        return self._checked_labels(y, x.shape[0], x.device)

    @torch.no_grad()
    def encode(self, x: torch.Tensor, y: torch.Tensor | None = None):
        """q(z | x[, y]) as a distribution (batch shape (B,), event shape (D,)); ``x`` is a batch
        (B, C, H, W) of intensities in [0, 1]."""
        x = self.check_images(x)
        if not hasattr(self.guide, "distribution"):
            raise ConfigError(
                f"this model's guide ({type(self.guide).__name__}) is a Pyro program with no "
                f"distribution(x) method: use vae.posterior_means(x), E_q per latent site"
            )
        return self.guide.distribution(x, self.labels_for(x, y))

    @torch.no_grad()
    def decode(self, z: torch.Tensor, y: torch.Tensor | None = None):
        """p(x | z[, y]) as a distribution (batch shape (B,), event shape (C, H, W)); ``z`` is
        (B, D)."""
        z = self.check_latents(z)
        if self.conditional:
            if y is None:
                raise ConfigError(f"this model decodes z given a label: pass y (0-{self.num_classes - 1})")
            y = self._checked_labels(y, z.shape[0], z.device)
        if not hasattr(self.model, "decode"):
            raise ConfigError(
                f"this model ({type(self.model).__name__}) is a Pyro program with no decode(z) "
                f"method: use vae.sample(n) or vae.reconstruct(x)"
            )
        return self.model.decode(z, y)

    @torch.no_grad()
    def classify(self, x: torch.Tensor) -> torch.Tensor:
        """q(y | x) of the M2 model: class probabilities (B, C)."""
        if not isinstance(self.guide, M2Guide):
            raise ConfigError(
                f"classify needs a semi-supervised run (--model m2); this one is --model "
                f"{self.config.model if self.config else 'vae'}"
            )
        x = self.check_images(x)
        return self.guide.label_distribution(x).probs

    def sample_labels(self, n: int, label=None, *, flags: bool = False) -> torch.Tensor | None:
        """Labels for ``sample``: ``label`` (an int or n ints) checked, else 0, 1, ..., C-1, 0, ...
        (equal numbers of each class); None for an unconditional model. ``flags``: the message
        names the command line's flags (``generate --label``), else Python's keywords."""
        if not self.conditional:
            if label is not None:
                kind = self.config.model if self.config else "vae"
                if flags:
                    raise ConfigError(
                        "--label asks for a chosen digit, which needs a conditional run "
                        f"(python -m pyro_vae.fit --model cvae or --model m2); this run is --model {kind}"
                    )
                raise ConfigError(
                    f"label={label!r} asks for a chosen class, which needs a conditional run "
                    f"(pyro_vae.fit(model='cvae') or model='m2'); this run is model={kind!r}: drop label"
                )
            return None
        if label is None:
            return torch.arange(n, device=self.device) % self.num_classes
        return self._checked_labels(label, n, self.device)

    @torch.no_grad()
    def sample_latents(self, n: int, y: torch.Tensor | None = None) -> torch.Tensor:
        """n draws z ~ p(z[ | y]) (n, D)."""
        prior = self.model.prior_distribution(y)
        return prior.sample() if prior.batch_shape == (n,) else prior.sample((n,))

    @torch.no_grad()
    def shared_style_latents(self, n: int) -> torch.Tensor:
        """n styles drawn from the prior, each carried to every label (the analogies figure), (C, n, D):
        z ~ p(z | y=0) through :meth:`styles_for_every_label`, so a per-label prior shares one noise
        draw eps across labels (z = m_y + s_y * eps)."""
        y = torch.zeros(n, dtype=torch.long, device=self.device)
        return self.styles_for_every_label(self.sample_latents(n, y), y)

    @torch.no_grad()
    def styles_for_every_label(self, z: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Latents z (n, D) of images with ``labels`` carried to every label, (C, n, D). With a
        per-label prior N(m_y, s_y^2) the style is the standardized eps = (z - m_y) / s_y, and
        label c gets m_c + s_c * eps; with a label-free prior z itself is the style."""
        prior = self.model.prior
        if not getattr(prior, "label_conditional", False):
            return z.expand(self.num_classes, *z.shape)
        eps = (z - prior.locs[labels]) / prior.scales[labels]  # (n, D)
        return prior.locs[:, None] + prior.scales[:, None] * eps  # (C, n, D)

    @torch.no_grad()
    def sample(self, n: int, label=None, *, seed: int | None = None) -> torch.Tensor:
        """n images E[x | z, y] with z ~ p(z | y): a float tensor (n, C, H, W) on the model's
        device. ``label`` (0..C-1, or n of them) picks the class of a conditional model; without it
        each class comes in turn. ``seed``: the same seed gives the same images, drawn without
        moving the global random generators; None draws from them."""
        with self._seeded(seed):
            return self._sample(n, label)

    def _sample(self, n: int, label) -> torch.Tensor:
        y = self.sample_labels(self._check_count(n), label)
        if not hasattr(self.model, "prior_distribution"):  # any Pyro program: every latent drawn per image
            return sample_images(self.model, n, self.image_shape, y, like=self._like())
        return self.model.mean_image(self.sample_latents(n, y), y)

    def _like(self) -> torch.Tensor:
        """An empty tensor of the parameters' device and floating type."""
        return torch.empty(0, device=self.device, dtype=self._dtype())

    @torch.no_grad()
    def posterior_means(self, x: torch.Tensor, y: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """E_q of every latent site of the guide by site name, each later site given the means of
        the earlier ones: {"z": (B, D)}, or {"z1": (B, D1), "z2": (B, D2)} for two layers."""
        x = self.check_images(x)
        return posterior_means(self.guide, x, self.labels_for(x, y))

    @torch.no_grad()
    def posterior_mean(self, x: torch.Tensor, y: torch.Tensor | None = None, samples: int = 64) -> torch.Tensor:
        """E_q[z | x[, y]] (B, D): analytic where q has a mean, else the average of ``samples``
        draws (flows)."""
        q = self.encode(x, y)
        try:
            return q.mean
        except NotImplementedError:
            return q.sample((samples,)).mean(0)

    @torch.no_grad()
    def reconstruct(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        """E[x | z, y] at z = E_q[z | x, y]."""
        x = self.check_images(x)
        y = self.labels_for(x, y)
        if not (hasattr(self.model, "mean_image") and hasattr(self.guide, "distribution")):
            return reconstruct_images(self.model, self.guide, x, y)  # any Pyro program: each site at its mean
        return self.model.mean_image(self.posterior_mean(x, y), y)

    def log_px(
        self,
        x,
        k: int = 1000,
        *,
        binarize: str | None = None,
        y=None,
        seed: int = 0,
        batch_size: int | None = None,
        progress: bool = False,
    ):
        """Importance-weighted log p(x) of each image, with its diagnostics (Burda et al. 2015):

            log p_K(x) = logsumexp_k [log p(x, z_k) - log q(z_k|x)] - log K,   z_k ~ q(z|x)

        :param x: images (B, C, H, W), intensities in [0, 1] (a tensor or an array).
        :param k: importance samples per image; larger is tighter and slower (cost ~ B * K).
        :param binarize: what to score when ``x`` holds grey-scale intensities. ``"sample"``
            (or a run's own ``"dynamic"`` / ``"static"``): one Bernoulli draw per pixel, seeded by
            ``seed``, as ``python -m pyro_vae.evaluate`` scores a binarized run; ``"none"``: the
            intensities as they are (likelihoods for intensities). None (the default) takes
            ``x`` as it is and refuses intensities where the likelihood needs binary pixels.
        :param y: labels (B,) of a conditional run (``--model cvae``): log p(x | y). An M2 run
            sums log p(x, y) over the labels and takes none.
        :param seed: seed of the importance samples (and of ``binarize="sample"``).
        :param batch_size: images per batch (default: as many as fit 256 MB of log-weights).
        :returns: a :class:`~pyro_vae.evaluation.EvaluationResult`: per image ``log_px``,
            ``elbo``, ``ess``, ``khat`` (Pareto k-hat; NaN for K < 25), and ``table()``,
            ``summary()``, ``mean_log_px()``; ``verdict`` is a sentence when k-hat or ESS say the
            estimate is weak (what log p_K still is, what to do), else None.
        """
        from .evaluation import evaluate_log_px
        from .evaluation.iwae import DEFAULT_MEMORY_BUDGET_MB

        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise InputError(f"k (importance samples per image) must be a whole number >= 1, got {k!r}")
        x = self.check_images(x)
        x = self._binarized(x, binarize, seed)
        label_args = self._log_px_labels(x, y)
        if batch_size is None:  # the (batch, K) float64 log-weights kept for k-hat fit the budget
            batch_size = max(1, min(x.shape[0], 200, int(DEFAULT_MEMORY_BUDGET_MB * 2**20 // (8 * k))))
        return evaluate_log_px(
            self.model,
            self.guide,
            x,
            k=k,
            batch_size=batch_size,
            seed=seed,
            progress=progress,
            device=self.device,
            **label_args,
        )

    def impute(self, x, mask, k: int = 1000, n: int | None = None, *, seed: int | None = 0) -> torch.Tensor:
        """The missing values of each image imputed from its observed ones by self-normalised
        importance sampling (Mattei & Frellsen 2019):

            z_k ~ q(z | x_obs, m),   w~_k proportional to p(z_k) p(x_obs | z_k) / q(z_k | x_obs, m)

        :param x: images (B, C, H, W), intensities in [0, 1]; missing values may hold anything in [0, 1].
        :param mask: (B, C, H, W), 1 (or True) where a value is observed, 0 where it is missing.
        :param k: importance samples per image; larger is closer to the exact conditional.
        :param n: None: the conditional mean sum_k w~_k E[x_miss | z_k], a tensor (B, C, H, W);
            a number: n draws per image (multiple imputation), particles resampled by w~ and
            x_miss ~ p(x_miss | z), a tensor (n, B, C, H, W).
        :param seed: the same seed gives the same result, drawn without moving the global random
            generators; None draws from them.
        :returns: images on the model's device with the observed values as given. A run trained with
            missing pixels proposes z from its guide given [x * m, m]; any other plain VAE from its
            guide given the zero-filled image (a weaker proposal: use a larger k).
        """
        from .evaluation.imputation import importance_imputation

        k = self._check_count(k, "k (importance samples per image)")
        if n is not None:
            n = self._check_count(n, "n (imputations per image)")
        x = self._binarized(self.check_images(x), None, 0)  # binary pixels where the likelihood needs them
        mask = self.check_mask(mask, x)
        if self.conditional or not (hasattr(self.model, "decode") and hasattr(self.guide, "distribution")):
            raise ConfigError(
                "impute needs a plain VAE (--model vae) whose model has decode(z) and whose guide has "
                f"distribution(x); this one is {type(self.model).__name__} with {type(self.guide).__name__}"
            )
        with self._seeded(seed):
            return importance_imputation(self.model, self._proposal, x, mask, k=k, n=n)

    @contextlib.contextmanager
    def _seeded(self, seed: int | None):
        """Draws inside come from ``seed`` without moving the global random generators (the
        model's CUDA device's included); with None, from the global generators."""
        if seed is None:
            yield
            return
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise InputError(f"seed must be a whole number or None, got {seed!r}")
        cuda = [self.device] if self.device.type == "cuda" else []
        with torch.random.fork_rng(devices=cuda):
            torch.manual_seed(seed)
            yield

    def _proposal(self, x: torch.Tensor, mask: torch.Tensor):
        """q(z | x_obs, m): the guide given the mask where it reads one, else given the zero-filled image."""
        if isinstance(self.guide, MissingPixelsGuide):
            return self.guide.distribution(x, mask)
        return self.guide.distribution(x * mask)

    def check_mask(self, mask, x: torch.Tensor, what: str = "mask") -> torch.Tensor:
        """``mask`` as a bool tensor like ``x`` (B, C, H, W), after checking that it has x's shape,
        holds only 0 and 1, and observes at least one value of every image."""
        try:
            mask = torch.as_tensor(mask, device=x.device)
        except (TypeError, ValueError, RuntimeError) as e:
            raise InputError(f"{what} must be a tensor or an array of x's shape {tuple(x.shape)} ({e})") from None
        if tuple(mask.shape) != tuple(x.shape):
            raise InputError(
                f"{what} must have x's shape {tuple(x.shape)} (1 observed, 0 missing), got {tuple(mask.shape)}"
            )
        if mask.dtype != torch.bool:
            if not bool(((mask == 0) | (mask == 1)).all()):
                raise InputError(f"{what} must hold 1 (observed) and 0 (missing) only")
            mask = mask == 1
        empty = ~mask.flatten(1).any(1)
        if bool(empty.any()):
            raise InputError(
                f"{what} observes no value of {int(empty.sum())} image(s) (the first: image "
                f"{int(empty.nonzero()[0])}); each image needs at least one observed value"
            )
        return mask

    def _binarized(self, x: torch.Tensor, binarize: str | None, seed: int) -> torch.Tensor:
        from .data import binarize_fixed

        choices = ("sample", "dynamic", "static", "none")
        if binarize is not None and binarize not in choices:
            raise InputError(f"binarize={binarize!r} is not one of: {', '.join(choices)} (or None)")
        if binarize in ("sample", "dynamic", "static"):
            return binarize_fixed(x, seed)
        likelihood = getattr(self.model, "likelihood", None)
        if getattr(likelihood, "needs_binary_data", False) and not bool(((x == 0) | (x == 1)).all()):
            name = type(likelihood).__name__
            raise InputError(
                f"x holds grey-scale intensities, but this model's likelihood ({name}) scores binary "
                f"pixels (0 or 1): pass binarize='sample' (one seeded draw x ~ Bernoulli(intensity) per "
                f"pixel, as python -m pyro_vae.evaluate scores a binarized run), or binarize x yourself"
            )
        return x

    def _log_px_labels(self, x: torch.Tensor, y) -> dict:
        """Keyword arguments of evaluate_log_px for this kind of model (its variant says)."""
        variant = self.variant
        if self.config is None or variant is None:
            if y is not None:
                raise InputError("y is given, but this VAE has no config to say how labels enter log p(x)")
            return {}
        if variant.conditions_on_labels:
            if y is None:
                raise InputError(
                    f"this conditional VAE (--model {self.config.model}) scores log p(x | y): "
                    f"pass y, one label (0-{self.num_classes - 1}) per image"
                )
            y = self._checked_labels(y, x.shape[0], x.device)
        elif y is not None:
            raise InputError(
                f"--model {self.config.model} scores log p(x)"
                + (" summed over the labels" if self.conditional else "")
                + "; it takes no y"
            )
        return variant.log_px_inputs(y, self.num_classes)[0]
