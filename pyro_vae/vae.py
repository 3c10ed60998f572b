"""``VAE``: a model and its guide under one uniquely named ``PyroModule``, plus the user-facing
methods ``encode``, ``decode``, ``sample`` and ``reconstruct``.

Pyro's SVI keeps parameters in the global param store, keyed by name. Every ``VAE`` gets its own
name prefix (``vae1``, ``vae2``, ...), so two models in one process (a notebook comparing priors)
never share or overwrite each other's parameters.
"""

from __future__ import annotations

import itertools

import torch
from pyro.nn import PyroModule

from .config import FitConfig
from .errors import ConfigError
from .guides import GUIDES
from .guides.semisupervised import LabelClassifier, M2Guide
from .labels import check_label_values
from .models import LIKELIHOODS, PRIORS, CVAEModel, LabelledGaussianPrior, M2Model, VAEModel
from .nets import NetSpec, build_decoder, build_encoder, initialize_linear_layers

LABEL_MODELS = ("cvae", "m2")  # models whose networks take the label

_instance_numbers = itertools.count(1)


class VAE(PyroModule):
    """A VAE: ``model(x)`` is p(x, z), ``guide(x)`` is q(z | x); both are Pyro programs."""

    def __init__(self, model: VAEModel, guide: PyroModule, name: str | None = None):
        super().__init__(name or f"vae{next(_instance_numbers)}")
        self.model = model
        self.guide = guide
        self.config: FitConfig | None = None  # set by build_vae / pyro_vae.load

    @property
    def param_prefix(self) -> str:
        """The prefix of this VAE's names in Pyro's param store, e.g. ``'vae1.'``."""
        return self._pyro_name + "."

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    @property
    def num_classes(self) -> int:
        """Number of labels the model knows (0: unconditional)."""
        return self.model.num_classes

    @property
    def conditional(self) -> bool:
        return self.num_classes > 0

    def _checked_labels(self, y, rows: int, device: torch.device) -> torch.Tensor:
        """User labels (an int, or one per row) as a long tensor of shape (rows,), each in 0..C-1."""
        y = check_label_values(torch.as_tensor(y, device=device), self.num_classes)
        if y.dim() > 1 or (y.dim() == 1 and y.shape[0] != rows):
            raise ConfigError(f"got {tuple(y.shape)} labels for {rows} images; give one label, or one "
                              "label per image")
        return y.expand(rows)

    def labels_for(self, x: torch.Tensor, y=None) -> torch.Tensor | None:
        """The labels to condition x on: ``y`` checked; for M2 without ``y``, q(y | x)'s most likely
        label; None for an unconditional model."""
        if not self.conditional:
            return None
        if y is None:
            if isinstance(self.guide, M2Guide):
                return self.classify(x).argmax(-1)
            raise ConfigError("this conditional VAE (--model cvae) encodes and reconstructs x given its "
                              "label: pass y")
        return self._checked_labels(y, x.shape[0], x.device)

    @torch.no_grad()
    def encode(self, x: torch.Tensor, y: torch.Tensor | None = None):
        """q(z | x[, y]) as a distribution (batch shape (B,), event shape (D,))."""
        return self.guide.distribution(x, self.labels_for(x, y))

    @torch.no_grad()
    def decode(self, z: torch.Tensor, y: torch.Tensor | None = None):
        """p(x | z[, y]) as a distribution (batch shape (B,), event shape (C, H, W))."""
        if self.conditional:
            if y is None:
                raise ConfigError("this model decodes z given a label: pass y (0-"
                                  f"{self.num_classes - 1})")
            y = self._checked_labels(y, z.shape[0], z.device)
        return self.model.decode(z, y)

    @torch.no_grad()
    def classify(self, x: torch.Tensor) -> torch.Tensor:
        """q(y | x) of the M2 model: class probabilities (B, C)."""
        if not isinstance(self.guide, M2Guide):
            raise ConfigError(f"classify needs a semi-supervised run (--model m2); this one is --model "
                              f"{self.config.model if self.config else 'vae'}")
        return self.guide.label_distribution(x).probs

    def sample_labels(self, n: int, label=None) -> torch.Tensor | None:
        """Labels for ``sample``: ``label`` (an int or n ints) checked, else 0, 1, ..., C-1, 0, ...
        (equal numbers of each class); None for an unconditional model."""
        if not self.conditional:
            if label is not None:
                raise ConfigError("--label asks for a chosen digit, which needs a conditional run "
                                  "(python -m pyro_vae.fit --model cvae or --model m2); this run is "
                                  "--model vae")
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
    def sample(self, n: int, label=None) -> torch.Tensor:
        """n images E[x | z, y] with z ~ p(z | y): shape (n, C, H, W). ``label`` (0..C-1, or n of
        them) picks the class of a conditional model; without it each class comes in turn."""
        y = self.sample_labels(n, label)
        return self.model.mean_image(self.sample_latents(n, y), y)

    @torch.no_grad()
    def posterior_mean(self, x: torch.Tensor, y: torch.Tensor | None = None,
                       samples: int = 64) -> torch.Tensor:
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
        y = self.labels_for(x, y)
        return self.model.mean_image(self.posterior_mean(x, y), y)


def build_vae(config: FitConfig, image_shape: tuple[int, ...], num_classes: int = 10) -> VAE:
    """Build the VAE that ``config`` describes for images of shape (C, H, W) (and, for
    ``--model cvae`` / ``m2``, ``num_classes`` labels)."""
    cond_dim = num_classes if config.model in LABEL_MODELS else 0
    spec = NetSpec(image_shape=tuple(image_shape), latent_dim=config.latent_dim, hidden=tuple(config.hidden),
                   cond_dim=cond_dim, activation=config.activation)
    likelihood = LIKELIHOODS.build(config.likelihood, tuple(image_shape), config)
    guide = GUIDES.build(config.guide, spec, config)  # q(z | x), or q(z | x, y) when cond_dim > 0
    if config.model == "cvae" and config.prior == "learned":
        prior = LabelledGaussianPrior(config.latent_dim, num_classes)  # p(z | y), one Gaussian per label
    else:
        prior = PRIORS.build(config.prior, spec, config, guide)  # VampPrior reuses the guide's encoder
    if config.model == "m2":  # q(y, z | x) = q(y | x) q(z | x, y)
        classifier_spec = NetSpec(tuple(image_shape), config.latent_dim, tuple(config.hidden),
                                  activation=config.activation)
        guide = M2Guide(LabelClassifier(build_encoder(config.net, classifier_spec), num_classes), guide,
                        num_classes)
    if config.elbo == "meanfield" and not (prior.analytic_kl and guide.analytic_kl):
        raise ConfigError(
            f"--elbo meanfield needs the KL from q(z|x) to p(z) in closed form, which --guide "
            f"{config.guide} with --prior {config.prior} does not have; use --elbo trace (its "
            f"Monte-Carlo KL works for every pair)")
    decoder = build_decoder(config.net, spec, likelihood.params_per_pixel)
    model_class = {"vae": VAEModel, "cvae": CVAEModel, "m2": M2Model}[config.model]
    model = model_class(prior, decoder, likelihood) if config.model == "vae" else \
        model_class(prior, decoder, likelihood, num_classes)
    vae = VAE(model, guide)
    initialize_linear_layers(vae, config.init)  # --init: the papers' schemes (nets.py)
    vae.config = config
    return vae
