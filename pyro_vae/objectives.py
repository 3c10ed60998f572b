"""Training objectives: Pyro's ELBO estimators, the beta / KL warm-up weight, and the per-image
ELBO terms (reconstruction and KL) read off model and guide traces.

    ELBO(x) = E_q(z|x)[log p(x|z)] - KL(q(z|x) || p(z))
    ELBO_beta(x) = E_q(z|x)[log p(x|z)] - beta * KL(q(z|x) || p(z))     (beta-VAE, KL warm-up)

beta multiplies the log-density of every latent site in both the model (log p(z)) and the guide
(log q(z|x)), through :class:`ScaleLatents` (a ``poutine`` messenger), so the same code serves
``Trace_ELBO`` (Monte-Carlo KL) and ``TraceMeanField_ELBO`` (analytic KL, which Pyro scales by
the guide site's scale).
"""

from __future__ import annotations

import math

import pyro
import torch
from pyro import poutine
from pyro.distributions.kl import kl_divergence
from pyro.infer import ELBO, Trace_ELBO, TraceMeanField_ELBO
from pyro.poutine.messenger import Messenger

from .errors import ConfigError
from .registry import Registry

MAX_PLATE_NESTING = 1  # the data plate; set explicitly so Pyro never has to guess

ELBOS: Registry[ELBO] = Registry("ELBO")


def _particle_kwargs(particles: int) -> dict:
    return dict(num_particles=particles, vectorize_particles=particles > 1, max_plate_nesting=MAX_PLATE_NESTING)


@ELBOS.register("trace")
def _trace(particles: int) -> ELBO:
    return Trace_ELBO(**_particle_kwargs(particles))


@ELBOS.register("meanfield")
def _meanfield(particles: int) -> ELBO:
    return TraceMeanField_ELBO(**_particle_kwargs(particles))


class IWAE_ELBO(Trace_ELBO):  # reuses Trace_ELBO's tracing; replaces its objective
    """The importance-weighted bound of Burda et al. (2015), per image, summed over the batch:

        L_K(x) = E_{z_1..K ~ q(z|x)} [ log (1/K) sum_k p(x, z_k) / q(z_k|x) ]

    The K particles are vectorized (a particle plate left of the data plate). Every site's
    ``scale`` (N/B under mini-batch scaling) multiplies the per-image bound, outside the
    log-sum-exp. Pyro's ``RenyiELBO(alpha=0)`` gives the same bound without scaling, but it
    multiplies each log-weight by the scale *inside* the log-sum-exp, which is a different (wrong)
    objective on mini-batches; and it has no ``differentiable_loss``.
    """

    def __init__(self, num_particles: int):
        super().__init__(num_particles=num_particles, vectorize_particles=True,
                         max_plate_nesting=MAX_PLATE_NESTING)

    def differentiable_loss(self, model, guide, *args, **kwargs) -> torch.Tensor:
        (model_trace, guide_trace), = self._get_traces(model, guide, args, kwargs)
        log_w = 0.0
        scales = set()
        for trace, sign in ((model_trace, 1.0), (guide_trace, -1.0)):
            for name, site in trace.nodes.items():
                if site["type"] != "sample":
                    continue
                if sign < 0 and not site["fn"].has_rsample:
                    raise ConfigError(f"--elbo iwae needs a reparameterized guide; site {name!r} is not")
                # log w_k = log p(x, z_k) - log q(z_k|x)      (K, B)
                log_w = log_w + sign * site["fn"].log_prob(site["value"])
                scales.add(float(site["scale"]))
        if len(scales) > 1:
            raise ConfigError("--elbo iwae weighs every site alike: it cannot be combined with "
                              "--beta != 1 or --warmup-epochs > 0")
        if self.num_particles == 1:  # Pyro adds no particle plate for a single particle
            log_w = log_w.unsqueeze(0)
        # L_K(x) = logsumexp_k log w_k - log K        (B,)
        bound = torch.logsumexp(log_w, dim=0) - math.log(self.num_particles)
        return -scales.pop() * bound.sum()

    def loss(self, model, guide, *args, **kwargs) -> float:
        with torch.no_grad():
            return self.differentiable_loss(model, guide, *args, **kwargs).item()

    def loss_and_grads(self, model, guide, *args, **kwargs) -> float:
        loss = self.differentiable_loss(model, guide, *args, **kwargs)
        loss.backward()
        return loss.item()


@ELBOS.register("iwae")
def _iwae(particles: int) -> ELBO:
    return IWAE_ELBO(particles)


def build_elbo(name: str, particles: int = 1) -> ELBO:
    """The ELBO estimator called ``name`` with ``particles`` vectorized samples of z per image."""
    if particles < 1:
        raise ConfigError(f"--particles must be at least 1, got {particles}")
    return ELBOS.build(name, particles)


class ScaleLatents(Messenger):
    """Multiply the log-density of every latent (unobserved) sample site by ``beta``.

    Wrapped around both model and guide, this turns the ELBO into
    E_q[log p(x|z)] + beta * E_q[log p(z) - log q(z|x)]. ``beta`` may be changed between steps.
    """

    def __init__(self, beta: float = 1.0):
        super().__init__()
        self.beta = float(beta)

    def _process_message(self, msg):
        if msg["type"] == "sample" and not msg["is_observed"]:
            msg["scale"] = self.beta * msg["scale"]


def minibatch_program(fn, num_data: int, latent_scale: ScaleLatents):
    """``fn(x, y)`` under mini-batch scaling N/B and the KL weight beta on its latent sites, so
    that on a batch of B of N images its ELBO estimates the whole data set's (beta-)ELBO."""

    def scaled(x, y=None):
        with poutine.scale(scale=num_data / x.shape[0]), latent_scale:
            return fn(x, y)

    return scaled


def beta_at(step: int, steps_per_epoch: int, beta: float, warmup_epochs: float) -> float:
    """KL weight at training step ``step`` (0-based): rises linearly from 0 to ``beta`` over
    ``warmup_epochs`` epochs, then stays at ``beta``."""
    warmup_steps = warmup_epochs * steps_per_epoch
    if warmup_steps <= 0:
        return float(beta)
    return float(beta) * min(1.0, (step + 1) / warmup_steps)


class DeviceSVI(pyro.infer.SVI):
    """``pyro.infer.SVI`` whose ``step`` returns the loss as a detached tensor on the device.

    Pyro's own ``SVI.step`` converts the loss to a Python float, which makes the host wait for
    the GPU at every step. This step is otherwise the same (trace the params, backpropagate,
    let the ``pyro.optim`` optimizer step them, zero their gradients); the trainer accumulates
    the returned tensors and reads them once per log interval.
    """

    def __init__(self, model, guide, optim, loss: ELBO, **kwargs):
        super().__init__(model, guide, optim, loss, **kwargs)
        self.elbo = loss  # SVI keeps only the ELBO's bound methods; we need differentiable_loss

    def step(self, *args, **kwargs) -> torch.Tensor:
        with poutine.trace(param_only=True) as param_capture:
            loss = self.elbo.differentiable_loss(self.model, self.guide, *args, **kwargs)
            loss.backward()
        params = {site["value"].unconstrained() for site in param_capture.trace.nodes.values()}
        self.optim(params)
        pyro.infer.util.zero_grads(params)
        return loss.detach()


def elbo_terms(model, guide, x: torch.Tensor, y: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
    """Per-image ELBO terms from one z ~ q(z|x) per image, read off the traces.

    Returns ``recon`` = log p(x|z) (B,), ``kl`` = KL(q(z|x) || p(z)) (B,), analytic where Pyro
    knows it and the Monte-Carlo log q(z|x) - log p(z) otherwise, and ``elbo`` = recon - kl (B,).
    Site scales (mini-batch scaling, beta) are ignored: these are the plain per-image terms.
    """
    guide_trace = poutine.trace(guide).get_trace(x, y)
    model_trace = poutine.trace(poutine.replay(model, trace=guide_trace)).get_trace(x, y)
    recon = x.new_zeros(x.shape[0])
    kl = x.new_zeros(x.shape[0])
    for name, site in model_trace.nodes.items():
        if site["type"] != "sample":
            continue
        if site["is_observed"]:
            recon = recon + site["fn"].log_prob(site["value"])  # log p(x|z)       (B,)
            continue
        q = guide_trace.nodes[name]["fn"]
        try:
            kl = kl + kl_divergence(q, site["fn"])  # KL(q || p), closed form        (B,)
        except NotImplementedError:
            z = site["value"]
            kl = kl + q.log_prob(z) - site["fn"].log_prob(z)  # log q(z|x) - log p(z)   (B,)
    return {"recon": recon, "kl": kl, "elbo": recon - kl}



class SemiSupervisedELBO:
    """Minus the M2 objective of Kingma et al. (2014, eq. 9) on one unlabelled and one labelled
    mini-batch, ``differentiable_loss(model, guide, x_u, x_l, y_l)``:

        J_alpha = sum_{x in U} U(x) + sum_{(x,y) in L} [L(x, y) + alpha N log q(y|x) / N_L]

    L(x, y) is the ELBO with y observed; U(x) = E_q(y|x)[L(x, y)] + H[q(y|x)] is summed over
    the C labels exactly: ``TraceEnum_ELBO`` enumerates the ``config_enumerate``-d guide's ``y``.
    Each part is scaled to its whole set (N_u / B_u, N_l / B_l); ``alpha`` is in units of
    N = N_u + N_l (Kingma et al.: alpha = 0.1 N). With ``balanced=True`` the labelled part (its
    ELBO and the classification term) is weighted as if the labelled set were as large as the
    unlabelled one, i.e. multiplied by N_u / N_l: the weighting of training on equal numbers of
    labelled and unlabelled images per batch, which public reproductions of Kingma et al.'s
    100-label result use. The two parts are traced separately (their plates have different
    sizes) and their losses added, so one optimizer step sees both.
    """

    def __init__(self, num_unlabelled: int, num_labelled: int, alpha: float, latent_scale: ScaleLatents,
                 particles: int = 1, balanced: bool = False):
        from pyro.infer import TraceEnum_ELBO

        if particles < 1:
            raise ConfigError(f"--particles must be at least 1, got {particles}")
        self.num_unlabelled, self.num_labelled = num_unlabelled, num_labelled
        self.labelled_weight = num_unlabelled / num_labelled if balanced else 1.0
        self.classification_weight = alpha * (num_unlabelled + num_labelled) * self.labelled_weight  # alpha N
        self.latent_scale = latent_scale
        self.unlabelled_elbo = TraceEnum_ELBO(**_particle_kwargs(particles))
        self.labelled_elbo = Trace_ELBO(**_particle_kwargs(particles))

    def unlabelled_programs(self, model, guide):
        from pyro.infer import config_enumerate

        enumerated = config_enumerate(guide, default="parallel")  # y ~ q(y|x): all C values at once
        return (minibatch_program(model, self.num_unlabelled, self.latent_scale),
                minibatch_program(enumerated, self.num_unlabelled, self.latent_scale))

    def labelled_programs(self, model, guide):
        scaled_model = minibatch_program(model, self.num_labelled * self.labelled_weight, self.latent_scale)

        def model_and_classifier(x, y):
            scaled_model(x, y)  # L(x, y), y observed
            # + alpha N (1 / B_l) sum_i log q(y_i | x_i): the classifier learns from the labels too
            log_q_y = guide.label_distribution(x).log_prob(y)  # (B_l,)
            pyro.factor("classification", self.classification_weight * log_q_y.mean())

        return model_and_classifier, minibatch_program(guide, self.num_labelled * self.labelled_weight,
                                                       self.latent_scale)

    def differentiable_loss(self, model, guide, x_u, x_l, y_l) -> torch.Tensor:
        unlabelled = self.unlabelled_elbo.differentiable_loss(*self.unlabelled_programs(model, guide), x_u)
        labelled = self.labelled_elbo.differentiable_loss(*self.labelled_programs(model, guide), x_l, y_l)
        return unlabelled + labelled  # -J_alpha on this pair of batches

    def __call__(self, model, guide, *args) -> float:
        with torch.no_grad():
            return float(self.differentiable_loss(model, guide, *args))
