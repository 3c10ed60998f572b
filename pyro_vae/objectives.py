"""Training objectives: Pyro's ELBO estimators as loss modules, the beta / KL warm-up weight,
mini-batch scaling, and the one helper that sums a trace's log-densities.

    ELBO(x) = E_q(z|x)[log p(x|z)] - KL(q(z|x) || p(z))
    ELBO_beta(x) = E_q(z|x)[log p(x|z)] - beta * KL(q(z|x) || p(z))     (beta-VAE, KL warm-up)

A loss is Pyro's ELBO module, ``Trace_ELBO()(model, guide)``: an ``nn.Module`` whose forward is
the differentiable loss and whose parameters are the model's and the guide's (module-local
parameters, ``pyro.settings.set(module_local_params=True)``), so one ``torch.optim`` optimizer
trains it. :class:`Scaled` wraps model and guide so that on a batch of B of N images the loss
estimates the whole data set's (beta-)ELBO: every site's log-density is multiplied by N / B and
every latent site's by beta as well (both model log p(z) and guide log q(z|x)), which serves
``Trace_ELBO`` (Monte-Carlo KL) and ``TraceMeanField_ELBO`` (analytic KL, scaled by the guide
site's scale) alike.
"""

from __future__ import annotations

import contextlib
import inspect
import math
import warnings
from collections.abc import Iterator

import pyro
import pyro.infer.trace_elbo
import pyro.infer.trace_mean_field_elbo
import pyro.infer.traceenum_elbo
import torch
from pyro import poutine
from pyro.distributions.kl import kl_divergence
from pyro.distributions.util import scale_and_mask
from pyro.infer import ELBO, Trace_ELBO, TraceEnum_ELBO, TraceMeanField_ELBO, config_enumerate
from pyro.infer.util import is_validation_enabled
from pyro.poutine.messenger import Messenger
from pyro.poutine.util import site_is_subsample
from pyro.util import check_model_guide_match

from .config import FitConfig
from .errors import ConfigError, PyroVAEError
from .registry import Registry

MAX_PLATE_NESTING = 1  # the data plate; set explicitly so Pyro never has to guess


# the options of an ELBO: fields of the configuration offered to ELBO factories by name
ELBO_OPTIONS = ("iw_bounds", "ciwae_beta")


def _elbo_arguments(particles: int, config: FitConfig | None = None) -> dict:
    """What an ELBO's factory (or a class of one's own, such as a subclass of Pyro's ``ELBO``)
    may ask for, by parameter name: ``particles`` (and Pyro's ``num_particles``,
    ``vectorize_particles``, ``max_plate_nesting``), the run's ``config``, and its
    :data:`ELBO_OPTIONS` (the configuration's defaults without one)."""
    options = {name: getattr(config if config is not None else FitConfig, name) for name in ELBO_OPTIONS}
    return {"particles": particles, **_particle_kwargs(particles), "config": config, **options}


# An ELBO factory declares what it can do: ``enumerates`` (it sums out discrete sites marked
# infer={"enumerate": "parallel"}), ``needs_reparameterized`` (every guide site must have rsample),
# ``weighs_sites_alike`` (a bound of log p(x): no KL weight beta), ``needs_analytic_kl`` (the KL
# of every latent site in closed form: the prior and the guide declare ``analytic_kl = True``).
ELBOS: Registry[ELBO] = Registry("ELBO", arguments=_elbo_arguments)


# -- the one helper that sums a trace's log-densities ------------------------------------------


def sample_sites(trace: poutine.Trace, observed: bool | None = None) -> Iterator[tuple[str, dict]]:
    """(name, site) of a trace's real sample sites (plates' subsample sites left out); only the
    observed ones (``observed=True``) or only the latent ones (``False``) if asked."""
    for name, site in trace.nodes.items():
        if site["type"] != "sample" or site_is_subsample(site):
            continue
        if observed is None or bool(site["is_observed"]) == observed:
            yield name, site


def site_log_density(site: dict) -> torch.Tensor:
    """One site's masked, unscaled log-density, in float32 at least (bf16 / fp16 networks under
    mixed precision still give float32 log-densities: a sum of 784 pixels in bf16 loses nats)."""
    log_prob = scale_and_mask(site["fn"].log_prob(site["value"]), 1.0, site["mask"])
    if log_prob.dtype in (torch.float16, torch.bfloat16):
        log_prob = log_prob.float()
    return log_prob


def trace_log_density(
    trace: poutine.Trace,
    *,
    observed: bool | None = None,
    shape: tuple[int, ...] | None = None,
    who: str = "model",
    like: torch.Tensor | None = None,
) -> torch.Tensor:
    """Sum over a trace's sample sites of their masked, unscaled log-density: one number per data
    point, the data plate's dimension kept (and a particle dimension left of it, if any).

    ``observed`` picks the observed (log p(x|z)) or the latent (log p(z), log q(z|x)) sites;
    ``shape``, if given, is the shape every site's log-density must have (a site outside the data
    plate, or one missing ``.to_event``, is then an error). With no matching site the sum is 0
    (shaped like ``like`` or ``shape``). Used by training (the IWAE bound), the per-epoch ELBO
    and the importance-weighted evaluator alike; site scales (mini-batch N/B, beta) are the
    caller's business.
    """
    total = None
    for name, site in sample_sites(trace, observed):
        log_prob = site_log_density(site)
        if shape is not None and log_prob.shape != tuple(shape):
            raise PyroVAEError(
                f"{who} site {name!r} has log_prob shape {tuple(log_prob.shape)}, expected "
                f"{tuple(shape)}: every sample site must sit in pyro.plate('data', x.shape[0], dim=-1) "
                "with its event dimensions declared (.to_event)"
            )
        total = log_prob if total is None else total + log_prob
    if total is None:
        if shape is None and like is None:
            raise PyroVAEError(f"the {who} has no sample site to sum")
        ref = like if like is not None else trace.nodes["_INPUT"]["args"][0]
        return ref.new_zeros(tuple(shape) if shape is not None else ref.shape, dtype=torch.float32)
    return total


# -- discrete model sites summed out exactly ---------------------------------------------------


def enumerated_model(model):
    """``model`` whose discrete sites marked ``infer={"enumerate": "parallel"}`` (and not given a
    value, e.g. by replaying a guide) take all their values at once, each in its own dimension
    left of the data plate (``poutine.enum``). Sites without the mark are untouched."""
    return poutine.enum(model, first_available_dim=-1 - MAX_PLATE_NESTING)


def enumerated_sites(trace: poutine.Trace) -> list[str]:
    """Names of the sites of a trace that ``poutine.enum`` enumerated, in the model's order."""
    return [name for name, site in sample_sites(trace, observed=False) if "_enumerate_dim" in site["infer"]]


def enumerated_log_density(
    trace: poutine.Trace, *, rows: int, with_observed: bool = True, who: str = "model"
) -> torch.Tensor:
    """log of the sum over the enumerated sites' values of exp(sum of the site log-densities),
    one number per data point, shape (rows,).

    With every site in the data plate the images are independent, so for image b

        log p(x_b, z_b) = logsumexp over all enumerated values c of sum_sites log p(site_b | ...)

    The latent sites (enumerated and given) are summed, and the observed ones if
    ``with_observed`` (log sum_c p(x, z, c)); else log sum_c p(z, c). Each site's log-density
    must have the data plate last and, left of it, only enumeration dimensions.
    """
    enum_dims = {
        site["infer"]["_enumerate_dim"]
        for _, site in sample_sites(trace, observed=False)
        if "_enumerate_dim" in site["infer"]
    }
    total = None
    for name, site in sample_sites(trace, None if with_observed else False):
        log_prob = site_log_density(site)  # (enumeration dims..., rows)
        left = log_prob.shape[:-1]
        if (
            log_prob.dim() < 1
            or log_prob.shape[-1] != rows
            or any(size != 1 and i - len(left) - 1 not in enum_dims for i, size in enumerate(left))
        ):
            raise PyroVAEError(
                f"{who} site {name!r} has log_prob shape {tuple(log_prob.shape)}, expected ({rows},) with "
                "enumeration dimensions only on its left: every sample site must sit in "
                "pyro.plate('data', x.shape[0], dim=-1) with its event dimensions declared (.to_event)"
            )
        total = log_prob if total is None else total + log_prob  # broadcasts over the enumerations
    if total is None:
        raise PyroVAEError(f"the {who} has no sample site to sum")
    if total.dim() == 1:
        return total
    return torch.logsumexp(total.reshape(-1, rows), dim=0)  # sum out every enumerated site   (rows,)


def check_guide_covers_model(model_trace: poutine.Trace, guided) -> None:
    """A clear error for a latent site of the model that is not among the ``guided`` site names
    (those the guide samples) and was not enumerated."""
    for name, site in sample_sites(model_trace, observed=False):
        if name in guided or "_enumerate_dim" in site["infer"]:
            continue
        fn = site["fn"]
        if getattr(fn, "has_enumerate_support", False):
            fix = (
                f"give the guide a site {name!r}, or sum it out exactly: mark it in the model with "
                f"pyro.sample({name!r}, ..., infer={{'enumerate': 'parallel'}}) inside the data plate"
            )
        else:
            fix = f"give the guide a site {name!r} (a continuous latent cannot be enumerated)"
        raise PyroVAEError(
            f"the model samples {name!r} but the guide does not: every latent site of the "
            f"model needs a guide site of the same name for importance sampling; {fix}"
        )


# -- the ELBO choices ----------------------------------------------------------------------------


def _particle_kwargs(particles: int) -> dict:
    return dict(num_particles=particles, vectorize_particles=particles > 1, max_plate_nesting=MAX_PLATE_NESTING)


@contextlib.contextmanager
def _losses_stay_on_the_device() -> Iterator[None]:
    """While inside, Pyro's ``Trace_ELBO`` and ``TraceMeanField_ELBO`` keep the loss they report
    on the device (``torch_item(t)`` becomes ``t.detach()``) and skip their NaN warnings on the
    loss and its gradient (``TraceEnum_ELBO`` too): each would be a host-device synchronisation (6 per
    default training step). Not thread-safe: a step is one thread's business.
    Values and gradients are unchanged: the loss is ``loss + (surrogate - surrogate.detach())``
    either way. The training loop checks the losses for NaN once per log interval instead."""
    modules = (pyro.infer.trace_elbo, pyro.infer.trace_mean_field_elbo, pyro.infer.traceenum_elbo)
    saved = [(m, name, getattr(m, name)) for m in modules for name in ("torch_item", "warn_if_nan") if hasattr(m, name)]
    for m, name, _ in saved:
        setattr(m, name, _detached if name == "torch_item" else _no_warning)
    try:
        yield
    finally:
        for m, name, function in saved:
            setattr(m, name, function)


def _detached(x):
    return x.detach() if isinstance(x, torch.Tensor) else x


def _no_warning(value, *args, **kwargs):
    return value


class DeviceTrace_ELBO(Trace_ELBO):
    """Pyro's ``Trace_ELBO`` whose ``differentiable_loss`` never reads a value on the host."""

    def differentiable_loss(self, model, guide, *args, **kwargs):
        with _losses_stay_on_the_device():
            return super().differentiable_loss(model, guide, *args, **kwargs)


class DeviceTraceEnum_ELBO(TraceEnum_ELBO):
    """Pyro's ``TraceEnum_ELBO`` whose ``differentiable_loss`` never reads a value on the host."""

    def differentiable_loss(self, model, guide, *args, **kwargs):
        with _losses_stay_on_the_device():
            return super().differentiable_loss(model, guide, *args, **kwargs)


class DeviceTraceMeanField_ELBO(TraceMeanField_ELBO):
    """Pyro's ``TraceMeanField_ELBO`` whose ``differentiable_loss`` never reads a value on the host."""

    def differentiable_loss(self, model, guide, *args, **kwargs):
        with _losses_stay_on_the_device():
            return super().differentiable_loss(model, guide, *args, **kwargs)


@ELBOS.register("trace")
def _trace(particles: int) -> ELBO:
    return DeviceTrace_ELBO(**_particle_kwargs(particles))


@ELBOS.register("meanfield")
def _meanfield(particles: int) -> ELBO:
    return DeviceTraceMeanField_ELBO(**_particle_kwargs(particles))


_meanfield.needs_analytic_kl = True  # KL(q(z|x) || p(z)) from torch's kl_divergence, both must declare it


class IWAE_ELBO(Trace_ELBO):  # reuses Trace_ELBO's tracing (and its ELBO module); replaces its objective
    """The importance-weighted bound of Burda et al. (2015), per image, summed over the batch:

        L_K(x) = E_{z_1..K ~ q(z|x)} [ log (1/K) sum_k p(x, z_k) / q(z_k|x) ]

    The K particles are vectorized (a particle plate left of the data plate). Every site's
    ``scale`` (N/B under mini-batch scaling) multiplies the per-image bound, outside the
    log-sum-exp. Pyro's ``RenyiELBO(alpha=0)`` gives the same bound without scaling, but it
    multiplies each log-weight by the scale *inside* the log-sum-exp, which is a different (wrong)
    objective on mini-batches; and it has no ``differentiable_loss``.
    """

    def __init__(self, num_particles: int):
        super().__init__(num_particles=num_particles, vectorize_particles=True, max_plate_nesting=MAX_PLATE_NESTING)

    def differentiable_loss(self, model, guide, *args, **kwargs) -> torch.Tensor:
        ((model_trace, guide_trace),) = self._get_traces(model, guide, args, kwargs)
        for name, site in sample_sites(guide_trace):
            if not site["fn"].has_rsample:
                raise ConfigError(f"--elbo iwae needs a reparameterized guide; site {name!r} is not")
        scales = {float(site["scale"]) for trace in (model_trace, guide_trace) for _, site in sample_sites(trace)}
        if len(scales) > 1:
            raise ConfigError(
                "--elbo iwae weighs every site alike: it cannot be combined with --beta != 1 or --warmup-epochs > 0"
            )
        # log w_k = log p(x, z_k) - log q(z_k|x)      (K, B)
        log_w = trace_log_density(model_trace) - trace_log_density(guide_trace, who="guide")
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


_iwae.weighs_sites_alike = True  # a bound of log p(x): no --beta or --warmup-epochs
_iwae.needs_reparameterized = True  # its gradient flows through z_k = g(eps_k, x)


# -- estimators of their own gradient: STL, DReG, and Rainforth et al.'s PIWAE, MIWAE, CIWAE -----
#
# Each traces the guide once with K vectorized particles (a particle plate left of the data plate,
# even for K = 1, so that log-weights are always (K, B)) and replays the model on its draws. What
# differs is which gradient reaches which parameter:
#
# * STL and DReG drop the score term d log q(z; phi) / d phi at fixed z. The guide is run a second
#   time, replayed on the same draws z (which still carry their reparameterized graph to phi),
#   under :class:`DetachedParameters`: log q is then computed from detached copies of the guide's
#   parameters, so its gradient reaches phi only through z. That works for any guide (diagonal,
#   low-rank, flows, a user's own), as nothing about its distribution is assumed.
# * DReG and PIWAE weigh the gradient that reaches the guide through the model's log p(x, z)
#   differently from the gradient that reaches the model's own parameters: the model is replayed on
#   views z' of the draws, and a hook on each view multiplies the gradient passing back through it
#   by a per-particle, per-image factor (:func:`_routed_draws`), known once the log-weights are.


class DetachedParameters(Messenger):
    """Pyro handler: inside it, ``module`` computes with detached copies of its parameters, so
    that what it computes has no gradient with respect to them (other inputs, such as replayed
    sample values, keep theirs). Entering it replaces every parameter of ``module`` (and of its
    submodules, plain torch ones included) by ``p.detach()``; Pyro ``param`` statements (the
    parameters of a PyroModule read through Pyro's global param store) are detached as they
    pass. The module's buffers are copies while inside (:func:`_buffers_copied`): a second pass
    over the same batch must not update batch norm's running statistics twice. The module's
    forward must compute the same thing twice from the same inputs (no dropout or other random
    numbers outside its sample sites), and what it computes must be evaluated inside: a flow's
    ``log_prob`` runs its networks when called, so it is called inside the handler."""

    def __init__(self, module: torch.nn.Module):
        super().__init__()
        self.module = module
        self._undo: contextlib.ExitStack | None = None

    def __enter__(self):
        undo = contextlib.ExitStack()
        values = {name: p.detach() for name, p in self.module.named_parameters(remove_duplicate=False)}
        undo.enter_context(_parameters_replaced(self.module, values))
        undo.enter_context(_buffers_copied(self.module))
        self._undo = undo
        return super().__enter__()

    def __exit__(self, *exc):
        try:
            return super().__exit__(*exc)
        finally:
            self._undo.close()

    def _pyro_post_param(self, msg):
        msg["value"] = msg["value"].detach()


@contextlib.contextmanager
def _buffers_copied(module: torch.nn.Module) -> Iterator[None]:
    """Every buffer of ``module`` replaced by a copy while inside, the buffers themselves put back
    after: what the module writes to them inside (running statistics) is forgotten, and the
    buffers, which an earlier pass may have saved for its backward, are never written to."""
    saved = [(owner, name, buffer) for owner in module.modules() for name, buffer in owner._buffers.items()]
    for owner, name, buffer in saved:
        if buffer is not None:
            owner._buffers[name] = buffer.clone()
    try:
        yield
    finally:
        for owner, name, buffer in saved:
            owner._buffers[name] = buffer


def _routed_draws(guide_trace: poutine.Trace) -> tuple[poutine.Trace, list[tuple[torch.Tensor, int]]]:
    """A copy of ``guide_trace`` whose latent values are views z' of the guide's draws z, and the
    views with their number of event dimensions: the model replayed on the copy sees z', and the
    gradient it sends back to z passes through them (:func:`_weigh_routed`)."""
    routed = guide_trace.copy()
    views = []
    for name, site in sample_sites(guide_trace, observed=False):
        view = site["value"].view_as(site["value"])
        routed.nodes[name] = {**site, "value": view}
        views.append((view, len(site["fn"].event_shape)))
    return routed, views


def _weigh_routed(views: list[tuple[torch.Tensor, int]], factor: torch.Tensor) -> None:
    """Multiply the gradient through each view z' by ``factor`` (particles, B), detached."""
    factor = factor.detach()
    for view, event_dim in views:
        if view.requires_grad:
            f = factor.reshape(factor.shape + (1,) * event_dim)
            view.register_hook(lambda grad, f=f: grad * f.to(grad.dtype))


class ParticleBound(Trace_ELBO):
    """Base of the estimators above: K vectorized particles, their traces and log-weights; the
    loss is ``differentiable_loss`` (Pyro's ``loss`` and ``loss_and_grads`` follow from it).
    ``name`` is the ``--elbo`` choice, for messages."""

    name = ""

    def __init__(self, num_particles: int):
        super().__init__(num_particles=num_particles, vectorize_particles=True, max_plate_nesting=MAX_PLATE_NESTING)

    def _vectorized(self, fn):
        return pyro.plate("num_particles_vectorized", self.num_particles, dim=-1 - MAX_PLATE_NESTING)(fn)

    def guide_trace(self, guide, args, kwargs) -> poutine.Trace:
        """The guide's trace with K particles, every latent site reparameterized."""
        trace = poutine.trace(self._vectorized(guide)).get_trace(*args, **kwargs)
        for name, site in sample_sites(trace):
            if not site["fn"].has_rsample:
                raise ConfigError(
                    f"--elbo {self.name} needs a reparameterized guide; site {name!r} "
                    f"({type(site['fn']).__name__}) has no rsample: use --elbo trace"
                )
        return trace

    def model_trace(self, model, guide_trace: poutine.Trace, args, kwargs) -> poutine.Trace:
        """The model's trace replayed on ``guide_trace``'s latent values."""
        trace = poutine.trace(poutine.replay(self._vectorized(model), trace=guide_trace)).get_trace(*args, **kwargs)
        if is_validation_enabled():
            check_model_guide_match(trace, guide_trace, MAX_PLATE_NESTING + 1)
        return trace

    def detached_log_q(self, guide, guide_trace: poutine.Trace, args, kwargs, density=None) -> torch.Tensor:
        """log q(z|x) of ``guide_trace``'s draws, (K, B), from the guide run again on them under
        :class:`DetachedParameters`: it reaches the guide's parameters only through z (no score
        term). ``density`` (default: the unscaled :func:`trace_log_density`) sums the rerun's
        trace; it runs inside the handler, as a flow's log q runs its networks only when asked."""
        with DetachedParameters(guide):
            trace = poutine.trace(poutine.replay(self._vectorized(guide), trace=guide_trace)).get_trace(*args, **kwargs)
            return density(trace) if density is not None else trace_log_density(trace, who="guide")

    def data_scale(self, *traces: poutine.Trace) -> float | torch.Tensor:
        """The one scale of every site (N / B under mini-batch scaling): a bound of log p(x)
        weighs all sites alike, the scale multiplying each image's bound."""
        scales = {float(site["scale"]) for trace in traces for _, site in sample_sites(trace)}
        if len(scales) > 1:
            raise ConfigError(
                f"--elbo {self.name} weighs every site alike: it cannot be combined with --beta != 1 "
                "or --warmup-epochs > 0"
            )
        return scales.pop()

    def loss(self, model, guide, *args, **kwargs) -> float:
        with torch.no_grad():
            return self.differentiable_loss(model, guide, *args, **kwargs).item()

    def loss_and_grads(self, model, guide, *args, **kwargs) -> float:
        loss = self.differentiable_loss(model, guide, *args, **kwargs)
        loss.backward()
        return loss.item()


def _with_gradient_of(value: torch.Tensor, surrogate: torch.Tensor) -> torch.Tensor:
    """``value``'s number with ``surrogate``'s gradient."""
    return value.detach() + (surrogate - surrogate.detach())


class STL_ELBO(ParticleBound):
    """Sticking the landing (Roeder, Wu & Duvenaud 2017): the ELBO, averaged over K particles,
    with the score term of log q removed from its gradient:

        ELBO(x) = (1/K) sum_k [ log p(x, z_k) - log q(z_k | x) ],   z_k = g(eps_k, x; phi)
        grad_phi = (1/K) sum_k d/dz [ log p(x, z) - log q(z | x; phi-detached) ] dz_k/dphi

    Its value is the ELBO's; the model's gradient is the ELBO's. log q is computed by the guide
    run again on the draws under :class:`DetachedParameters`. Every site keeps its own scale
    (N / B, and beta on latent sites): ``--beta`` and ``--warmup-epochs`` apply as to ``trace``.
    When q(z|x) is the exact posterior, log p(x, z) - log q(z|x) = log p(x) for every z, and the
    guide's gradient is exactly 0 for every draw.
    """

    name = "stl"

    def differentiable_loss(self, model, guide, *args, **kwargs) -> torch.Tensor:
        guide_trace = self.guide_trace(guide, args, kwargs)
        model_trace = self.model_trace(model, guide_trace, args, kwargs)
        # sum over sites of scale * log-density: N/B on every site, beta on latent ones     (K, B)
        log_q = self.detached_log_q(guide, guide_trace, args, kwargs, density=_scaled_log_density)
        elbo = _scaled_log_density(model_trace) - log_q
        return -elbo.sum() / self.num_particles


def _scaled_log_density(trace: poutine.Trace) -> torch.Tensor:
    total = 0.0
    for _, site in sample_sites(trace):
        total = total + site["scale"] * site_log_density(site)
    return total


class DReG_IWAE_ELBO(ParticleBound):
    """The IWAE bound with the doubly reparameterized gradient (Tucker, Lawson, Gu & Maddison 2019):

        L_K(x) = log (1/K) sum_k w_k,   w_k = p(x, z_k) / q(z_k | x),   w~_k = w_k / sum_j w_j
        grad_theta = sum_k w~_k d log p(x, z_k) / d theta                       (IWAE's own)
        grad_phi   = sum_k w~_k^2 d log w_k / d z_k  dz_k / d phi                (no score term)

    where log w_k's log q is computed with the guide's parameters detached (the guide run again
    under :class:`DetachedParameters`). In one backward pass: the surrogate
    sum_k [w~_k log p(x, z'_k) - w~_k^2 log q(z_k; phi-detached)], the model replayed on views z'
    of the draws whose gradient is multiplied by w~_k on its way back to z (a parameter that both
    the model and the guide use, such as a VampPrior's encoder, gets both parts). The value is
    L_K's; each image's bound is multiplied by its scale N / B outside the log-sum-exp.
    """

    name = "iwae-dreg"

    def differentiable_loss(self, model, guide, *args, **kwargs) -> torch.Tensor:
        guide_trace = self.guide_trace(guide, args, kwargs)
        routed, views = _routed_draws(guide_trace)
        model_trace = self.model_trace(model, routed, args, kwargs)
        scale = self.data_scale(model_trace, guide_trace)
        log_p = trace_log_density(model_trace)  # log p(x, z_k)   (K, B)
        log_q = self.detached_log_q(guide, guide_trace, args, kwargs)  # log q(z_k | x), parameters detached
        log_w = log_p - log_q
        bound = torch.logsumexp(log_w, dim=0) - math.log(self.num_particles)  # L_K(x)   (B,)
        weights = torch.softmax(log_w.detach(), dim=0)  # w~_k   (K, B)
        _weigh_routed(views, weights)  # model -> z: w~_k * w~_k
        surrogate = (weights * log_p - weights**2 * log_q).sum(0)  # (B,)
        return -scale * _with_gradient_of(bound, surrogate).sum()


class GroupedBound(ParticleBound):
    """Rainforth et al.'s (2018) bounds over M x K particles, M groups (bounds) of K each; the
    log-weights come as (M, K, B)."""

    def __init__(self, num_particles: int, bounds: int = 1):
        if bounds < 1 or num_particles % bounds:
            raise ConfigError(
                f"--elbo {self.name} splits --particles {num_particles} into --iw-bounds {bounds} groups "
                f"of equal size: give an M that divides --particles"
            )
        super().__init__(num_particles)
        self.bounds = bounds

    def grouped(self, log_w: torch.Tensor) -> torch.Tensor:
        return log_w.reshape(self.bounds, self.num_particles // self.bounds, *log_w.shape[1:])


def miwae_bound(log_w: torch.Tensor) -> torch.Tensor:
    """MIWAE(M, K) = (1/M) sum_m log (1/K) sum_k w_mk from log-weights (M, K, B): per image (B,)."""
    return (torch.logsumexp(log_w, dim=1) - math.log(log_w.shape[1])).mean(0)


def iwae_bound(log_w: torch.Tensor) -> torch.Tensor:
    """IWAE = log (1/K) sum_k w_k over every particle, from log-weights (..., B): per image (B,)."""
    flat = log_w.reshape(-1, log_w.shape[-1])
    return torch.logsumexp(flat, dim=0) - math.log(flat.shape[0])


class MIWAE_ELBO(GroupedBound):
    """MIWAE(M, K) (Rainforth et al. 2018): the average of M importance-weighted bounds of K
    particles each, M K = --particles, M = --iw-bounds; M = 1 is IWAE(K), K = 1 the ELBO
    averaged over M draws. Reparameterized gradient of the bound for every parameter."""

    name = "miwae"

    def differentiable_loss(self, model, guide, *args, **kwargs) -> torch.Tensor:
        guide_trace = self.guide_trace(guide, args, kwargs)
        model_trace = self.model_trace(model, guide_trace, args, kwargs)
        log_w = trace_log_density(model_trace) - trace_log_density(guide_trace, who="guide")  # (M K, B)
        return -self.data_scale(model_trace, guide_trace) * miwae_bound(self.grouped(log_w)).sum()


class CIWAE_ELBO(ParticleBound):
    """CIWAE(beta) (Rainforth et al. 2018): a convex combination of the ELBO and the IWAE bound
    on the same K particles, beta = --ciwae-beta in [0, 1]:

        CIWAE = beta (1/K) sum_k log w_k + (1 - beta) log (1/K) sum_k w_k

    Reparameterized gradient of the bound for every parameter."""

    name = "ciwae"

    def __init__(self, num_particles: int, beta: float):
        if not 0 <= beta <= 1:
            raise ConfigError(f"--ciwae-beta must be in [0, 1], got {beta}")
        super().__init__(num_particles)
        self.beta = beta

    def differentiable_loss(self, model, guide, *args, **kwargs) -> torch.Tensor:
        guide_trace = self.guide_trace(guide, args, kwargs)
        model_trace = self.model_trace(model, guide_trace, args, kwargs)
        log_w = trace_log_density(model_trace) - trace_log_density(guide_trace, who="guide")  # (K, B)
        bound = self.beta * log_w.mean(0) + (1 - self.beta) * iwae_bound(log_w)
        return -self.data_scale(model_trace, guide_trace) * bound.sum()


class PIWAE_ELBO(GroupedBound):
    """PIWAE(M, K) (Rainforth et al. 2018): the model trained with the IWAE bound of all M K
    particles, the guide with MIWAE(M, K) of the same particles:

        grad_theta = d IWAE(M K) / d theta,     grad_phi = d MIWAE(M, K) / d phi

    In one backward pass: log w = log p(x, z') - log q(z), with the surrogate
    sum_mk [c_mk log p(x, z'_mk) - d_mk log q(z_mk)], c = the IWAE(M K) weights
    (w_mk / sum over all), d = the MIWAE weights (w_mk / (M sum_j w_mj)); the model is replayed on
    views z' whose gradient is multiplied by d / c = exp(lse_all - lse_m) / M on its way back to z,
    so every path through the draws and log q carries MIWAE's weights and the model's own
    parameters IWAE's. The value reported is IWAE(M K), the model's bound.
    """

    name = "piwae"

    def differentiable_loss(self, model, guide, *args, **kwargs) -> torch.Tensor:
        guide_trace = self.guide_trace(guide, args, kwargs)
        routed, views = _routed_draws(guide_trace)
        model_trace = self.model_trace(model, routed, args, kwargs)
        scale = self.data_scale(model_trace, guide_trace)
        log_p = self.grouped(trace_log_density(model_trace))  # (M, K, B)
        log_q = self.grouped(trace_log_density(guide_trace, who="guide"))
        log_w = (log_p - log_q).detach()
        lse_all = torch.logsumexp(log_w.flatten(0, 1), dim=0)  # (B,)
        lse_group = torch.logsumexp(log_w, dim=1, keepdim=True)  # (M, 1, B)
        iwae_weights = torch.exp(log_w - lse_all)  # c_mk   (M, K, B)
        miwae_weights = torch.exp(log_w - lse_group) / self.bounds  # d_mk
        ratio = (torch.exp(lse_all - lse_group) / self.bounds).expand_as(log_w)  # d / c
        _weigh_routed(views, ratio.flatten(0, 1))
        surrogate = (iwae_weights * log_p - miwae_weights * log_q).sum((0, 1))  # (B,)
        return -scale * _with_gradient_of(iwae_bound(log_p - log_q), surrogate).sum()


@ELBOS.register("iwae-dreg")
def _iwae_dreg(particles: int) -> ELBO:
    return DReG_IWAE_ELBO(particles)


@ELBOS.register("stl")
def _stl(particles: int) -> ELBO:
    return STL_ELBO(particles)


@ELBOS.register("miwae")
def _miwae(particles: int, iw_bounds: int | None) -> ELBO:
    return MIWAE_ELBO(particles, _bounds_given(iw_bounds, "miwae"))


@ELBOS.register("piwae")
def _piwae(particles: int, iw_bounds: int | None) -> ELBO:
    return PIWAE_ELBO(particles, _bounds_given(iw_bounds, "piwae"))


@ELBOS.register("ciwae")
def _ciwae(particles: int, ciwae_beta: float) -> ELBO:
    return CIWAE_ELBO(particles, ciwae_beta)


def _bounds_given(bounds: int | None, elbo: str) -> int:
    if bounds is None:
        raise ConfigError(
            f"--elbo {elbo} averages M importance-weighted bounds of --particles / M samples each: give "
            f"M with --iw-bounds (Rainforth et al. use --particles 64 --iw-bounds 8)"
        )
    return bounds


for _factory in (_iwae_dreg, _stl, _miwae, _piwae, _ciwae):
    _factory.needs_reparameterized = True  # their gradients flow through z_k = g(eps_k, x)
for _factory in (_iwae_dreg, _miwae, _piwae, _ciwae):
    _factory.weighs_sites_alike = True  # bounds of log p(x): no --beta or --warmup-epochs


def elbo_takes(choice, option: str) -> bool:
    """Whether the ELBO ``choice``'s factory asks for the option ``option`` (a parameter of that
    name, e.g. ``iw_bounds``)."""
    try:
        return option in inspect.signature(ELBOS.resolve(choice)).parameters
    except (TypeError, ValueError):
        return False


@ELBOS.register("enum")
def _enum(particles: int) -> ELBO:
    # a model without discrete sites is trained as by trace (no warning: --elbo enum suits any model)
    return DeviceTraceEnum_ELBO(**_particle_kwargs(particles), strict_enumeration_warning=False)


_enum.enumerates = True  # sums discrete sites out exactly: log sum_c p(x, z, c), one pass for all c


def build_elbo(name: str, particles: int = 1, config: FitConfig | None = None) -> ELBO:
    """The ELBO estimator called ``name`` with ``particles`` vectorized samples of z per image
    (its options, such as ``iw_bounds``, from ``config``)."""
    if particles < 1:
        raise ConfigError(f"--particles must be at least 1, got {particles}")
    return ELBOS.build(name, particles, config)


# -- scaling: mini-batch N/B and the KL weight beta ----------------------------------------------


class ScaleLatents(Messenger):
    """Multiply the log-density of every latent (unobserved) sample site by ``beta``.

    Wrapped around both model and guide, this turns the ELBO into
    E_q[log p(x|z)] + beta * E_q[log p(z) - log q(z|x)].
    """

    def __init__(self, beta: float | torch.Tensor = 1.0):
        super().__init__()
        self.beta = beta  # a float, or a 0-dim tensor while JitELBO traces

    def _process_message(self, msg):
        if msg["type"] == "sample" and not msg["is_observed"]:
            msg["scale"] = self.beta * msg["scale"]


class Scaled(torch.nn.Module):
    """``fn(x, y)`` (a model or guide) with every site's log-density multiplied by ``data_scale``
    and every latent site's by ``beta`` as well: ``forward(x, y, data_scale, beta)``.

    With ``data_scale`` = N / B on a batch of B of N images, the ELBO of ``Scaled(model)`` and
    ``Scaled(guide)`` estimates the whole data set's (beta-)ELBO. The scales are arguments, so
    Pyro's ELBO module, which passes its arguments to both programs, is called as
    ``loss(x, y, data_scale, beta)``, and a ``torch.jit`` trace takes them as inputs.
    """

    def __init__(self, fn):
        super().__init__()
        self.fn = fn

    def forward(
        self,
        x: torch.Tensor,
        y: torch.Tensor | None = None,
        data_scale: float | torch.Tensor = 1.0,
        beta: float | torch.Tensor = 1.0,
    ):
        # the latent weight applies first, then the data-set scale: scale = data_scale * (beta * 1)
        with poutine.scale(scale=data_scale), ScaleLatents(beta):
            return self.fn(x, y)


def beta_at(step: int, steps_per_epoch: int, beta: float, warmup_epochs: float) -> float:
    """KL weight at training step ``step`` (0-based): rises linearly from 0 to ``beta`` over
    ``warmup_epochs`` epochs, then stays at ``beta``."""
    warmup_steps = warmup_epochs * steps_per_epoch
    if warmup_steps <= 0:
        return float(beta)
    return float(beta) * min(1.0, (step + 1) / warmup_steps)


# -- --jit: the ELBO module traced once per batch shape ---------------------------------------

JIT_ELBOS = ("trace", "meanfield")  # --elbo choices that --jit traces


@contextlib.contextmanager
def _parameters_replaced(module: torch.nn.Module, values: dict[str, torch.Tensor]) -> Iterator[None]:
    """Every parameter ``name`` of ``module`` replaced by ``values[name]`` while inside (put back
    after), so that a trace sees them as inputs, not constants."""
    saved = []
    for name, value in values.items():
        owner_name, _, leaf = name.rpartition(".")
        owner = module.get_submodule(owner_name)
        saved.append((owner, leaf, owner._parameters[leaf]))
        owner._parameters[leaf] = value
    try:
        yield
    finally:
        for owner, leaf, parameter in saved:
            owner._parameters[leaf] = parameter


class JitELBO(torch.nn.Module):
    """An ELBO module (Pyro's ``Trace_ELBO()(Scaled(model), Scaled(guide))``) run as a
    ``torch.jit.trace`` of itself, one trace per shape of the batch (the last, smaller batch gets
    its own: the data plate's size is fixed in a trace); called as the module is,
    ``loss(x, y, data_scale, beta)``.

    Pyro's ``JitTrace_ELBO`` reads parameters from the global param store and bakes every Python
    number into its trace; here the module's parameters, the mini-batch scale N / B and the KL
    weight beta are the trace's *inputs*, so they change between steps as they do eagerly, and
    gradients flow to the parameters. The model and guide stay the same Pyro programs: the trace
    records the tensor operations of one eager call, random draws included (they use the global
    generator at every call). The first call with Pyro's validation on runs eagerly, so bad data
    is still caught; traces are made and run with validation off (its checks read values on the
    host). The parameters are this module's, so one optimizer over ``parameters()`` trains it.
    """

    def __init__(self, elbo_module: torch.nn.Module):
        super().__init__()
        self.elbo_module = elbo_module
        self.traces: dict[tuple, torch.jit.ScriptFunction] = {}
        self.named: tuple | None = None  # (parameter names, parameters), the trace's first inputs
        self.validated = False

    def _key(self, batch: tuple) -> tuple:
        return tuple((a.shape, a.dtype, a.device) if isinstance(a, torch.Tensor) else a for a in batch) + (
            self.training,
            torch.is_autocast_enabled(),
        )

    def _surrogate_loss(self, *args) -> torch.Tensor:
        """The ELBO's surrogate loss, averaged over the particles: its value is the loss when
        every guide site is reparameterized. (Pyro's ``differentiable_loss`` adds the loss read
        as a Python number and subtracts the surrogate's: numbers a trace would freeze.)"""
        elbo = self.elbo_module.elbo
        loss = 0.0
        for model_trace, guide_trace in elbo._get_traces(self.elbo_module.model, self.elbo_module.guide, args, {}):
            for name, site in sample_sites(guide_trace):
                if not site["fn"].has_rsample:
                    raise ConfigError(f"--jit needs a reparameterized guide; site {name!r} is not (drop --jit)")
            _, surrogate = elbo._differentiable_loss_particle(model_trace, guide_trace)
            loss = loss + surrogate / elbo.num_particles
        return loss

    def forward(
        self, x: torch.Tensor, y: torch.Tensor | None = None, data_scale: float = 1.0, beta: float = 1.0
    ) -> torch.Tensor:
        if is_validation_enabled() and not self.validated:
            self.validated = True
            return self.elbo_module(x, y, data_scale, beta)  # eager and validated, once
        if self.named is None:  # after the first (eager) call: lazily created parameters exist
            self.named = tuple(zip(*self.elbo_module.named_parameters()))
        names, params = self.named
        batch = (x,) if y is None else (x, y)
        # the scales as 0-dim CPU tensors: inputs of the trace, combined with tensors on any device
        scales = (torch.tensor(data_scale, dtype=torch.float64), torch.tensor(beta, dtype=torch.float64))

        def loss(*inputs):
            values, (traced_scale, traced_beta), data = (
                inputs[: len(names)],
                inputs[len(names) : len(names) + 2],
                inputs[len(names) + 2 :],
            )
            traced_y = data[1] if len(data) > 1 else None
            with _parameters_replaced(self.elbo_module, dict(zip(names, values))):
                return self._surrogate_loss(data[0], traced_y, traced_scale, traced_beta)

        key = self._key(batch)
        with pyro.validation_enabled(False):
            if key not in self.traces:
                cuda = sorted({a.device for a in batch if a.is_cuda}, key=str)
                # tracing runs the loss once: its random draws are given back, so the traced
                # call draws what an eager call would have, and batch norm's running statistics
                # are put back (the traced call updates them)
                buffers = [(b, b.clone()) for b in self.elbo_module.buffers()]
                with warnings.catch_warnings(), torch.random.fork_rng(devices=cuda), torch.no_grad():
                    # "converting a tensor to a Python number": Pyro's own bookkeeping of the loss
                    warnings.simplefilter("ignore")
                    with torch.enable_grad():
                        self.traces[key] = torch.jit.trace(loss, (*params, *scales, *batch), check_trace=False)
                    for buffer, value in buffers:
                        buffer.copy_(value)
            return self.traces[key](*params, *scales, *batch)


# -- per-image ELBO terms --------------------------------------------------------------------


def elbo_terms(model, guide, x: torch.Tensor, y: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
    """Per-image ELBO terms of the program as written, from one draw of the guide per image.

    The guide is traced once; the model is replayed on its latent values, and a discrete model
    site that the guide does not sample and that is marked ``infer={"enumerate": "parallel"}``
    is summed out exactly (enumerated). Returns, each of shape (B,):

    * ``elbo`` = log p(x, z) - log q(z|x): the single-sample ELBO, z every guide latent;
    * ``recon`` = log p(x, z) - log p(z): log p(x|z) (the observed sites' log-density) without
      enumerated sites; with them, log p(x | z) with the enumerated sites c summed out under
      their prior given z, log sum_c p(x, z, c) - log sum_c p(z, c);
    * ``kl`` = recon - elbo, the KL term E_q[log q(z|x) - log p(z)] over all latent sites.

    The KL term of a latent site is taken in closed form, KL(q(z_s | ...) || p(z_s | ...)),
    where that is exact: the model has no enumerated site, Pyro knows the KL of the pair, and
    every latent the model samples before the site (all it may depend on) is sampled before it
    in the guide too, so the closed form at the drawn values is the Monte-Carlo term with the
    site itself integrated out. Otherwise the site contributes log q(z_s|...) - log p(z_s|...)
    at the draw. A model with one latent site (or the M2 model's label and z, in the guide's
    order) gets the closed-form KL; p(z2) p(z1|z2) with a guide q(z1|x) q(z2|z1, x) gets
    closed form for z2 and Monte Carlo for z1. With enumerated sites log p(z) is
    log sum_c p(z, c), a mixture, and the KL term is Monte Carlo.
    Site scales (mini-batch scaling, beta) are ignored: these are the plain per-image terms.
    """
    guide_trace = poutine.trace(guide).get_trace(x, y)
    model_trace = poutine.trace(enumerated_model(poutine.replay(model, trace=guide_trace))).get_trace(x, y)
    check_guide_covers_model(model_trace, {name for name, _ in sample_sites(guide_trace, observed=False)})
    rows = (x.shape[0],)
    if enumerated_sites(model_trace):
        log_pxz = enumerated_log_density(model_trace, rows=rows[0])  # log sum_c p(x, z, c)   (B,)
        log_pz = enumerated_log_density(model_trace, rows=rows[0], with_observed=False)  # log sum_c p(z, c)
        log_q = trace_log_density(guide_trace, observed=False, shape=rows, who="guide")  # log q(z|x)
        recon = log_pxz - log_pz
        kl = log_q.to(recon.dtype) - log_pz
        return {"recon": recon, "kl": kl, "elbo": recon - kl}
    recon = trace_log_density(model_trace, observed=True, shape=rows)  # log p(x|z)   (B,)
    kl = x.new_zeros(rows, dtype=recon.dtype)
    guide_order = {name: i for i, (name, _) in enumerate(sample_sites(guide_trace, observed=False))}
    sampled_before: list[str] = []  # the model's latent sites before this one
    for name, site in sample_sites(model_trace, observed=False):
        q_site = guide_trace.nodes[name]
        closed_form = None
        if all(guide_order.get(earlier, math.inf) < guide_order[name] for earlier in sampled_before):
            try:
                closed_form = kl_divergence(q_site["fn"], site["fn"])  # KL(q || p), closed form   (B,)
            except NotImplementedError:
                pass
        if closed_form is not None:
            kl = kl + closed_form.to(recon.dtype)
        else:
            # log q(z|x) - log p(z), Monte Carlo     (B,)
            kl = kl + site_log_density(q_site) - site_log_density(site)
        sampled_before.append(name)
    return {"recon": recon, "kl": kl, "elbo": recon - kl}


# -- M2: the semi-supervised objective ------------------------------------------------------


class SemiSupervisedLoss(torch.nn.Module):
    """Minus the M2 objective of Kingma et al. (2014, eq. 9) on one unlabelled and one labelled
    mini-batch, ``forward(x_u, x_l, y_l, unlabelled_scale, labelled_scale, beta)``:

        J_alpha = sum_{x in U} U(x) + sum_{(x,y) in L} [L(x, y) + alpha N log q(y|x) / N_L]

    L(x, y) is the ELBO with y observed; U(x) = E_q(y|x)[L(x, y)] + H[q(y|x)] is summed over
    the C labels exactly: Pyro's ``TraceEnum_ELBO`` enumerates the ``config_enumerate``-d guide's
    ``y``. Each part is scaled to its whole set by :class:`Scaled` (``unlabelled_scale`` N_u / B_u
    and ``labelled_scale`` N_l / B_l, the variant's per-batch arguments, as is the KL weight
    ``beta``); ``alpha`` is in units of N = N_u + N_l (Kingma et al.: alpha = 0.1 N). With
    ``balanced=True`` the labelled part (its ELBO and the classification term) is weighted as if
    the labelled set were as large as the unlabelled one, i.e. multiplied by N_u / N_l: the
    weighting of training on equal numbers of labelled and unlabelled images per batch, which
    public reproductions of Kingma et al.'s 100-label result use. The two parts are traced
    separately (their plates have different sizes) and their losses added, so one optimizer step
    sees both; ``forward`` also takes one of the two batches alone, for training schedules that
    give labelled batches steps of their own.
    """

    def __init__(
        self,
        model,
        guide,
        num_unlabelled: int,
        num_labelled: int,
        alpha: float,
        particles: int = 1,
        balanced: bool = False,
    ):
        super().__init__()
        if particles < 1:
            raise ConfigError(f"--particles must be at least 1, got {particles}")
        self.model, self.guide = model, guide
        self.num_unlabelled, self.num_labelled = num_unlabelled, num_labelled
        self.labelled_weight = num_unlabelled / num_labelled if balanced else 1.0
        self.classification_weight = alpha * (num_unlabelled + num_labelled) * self.labelled_weight  # alpha N
        self.unlabelled_elbo = TraceEnum_ELBO(**_particle_kwargs(particles))
        self.labelled_elbo = DeviceTrace_ELBO(**_particle_kwargs(particles))

    def unlabelled_loss(self, x_u: torch.Tensor, scale: float = 1.0, beta: float = 1.0) -> torch.Tensor:
        """-sum_U U(x) on the batch, times ``scale`` (N_u / B_u)."""
        enumerated = config_enumerate(self.guide, default="parallel")  # y ~ q(y|x): all C values at once
        return self.unlabelled_elbo.differentiable_loss(Scaled(self.model), Scaled(enumerated), x_u, None, scale, beta)

    def labelled_loss(
        self, x_l: torch.Tensor, y_l: torch.Tensor, scale: float = 1.0, beta: float = 1.0
    ) -> torch.Tensor:
        """-sum_L [L(x, y) + alpha N log q(y|x) / N_L] on the batch, times ``scale`` (N_l / B_l)."""
        weighted = scale * self.labelled_weight
        scaled_model = Scaled(self.model)
        # the classification term, alpha N (1 / B_l) sum_i log q(y_i | x_i): B_l is the full batch's
        per_image = self.classification_weight * scale / self.num_labelled

        def model_and_classifier(x, y, data_scale, beta):
            scaled_model(x, y, data_scale, beta)  # L(x, y), y observed
            log_q_y = self.guide.label_distribution(x).log_prob(y)  # (B_l,)
            pyro.factor("classification", per_image * log_q_y.sum())

        return self.labelled_elbo.differentiable_loss(
            model_and_classifier, Scaled(self.guide), x_l, y_l, weighted, beta
        )

    def forward(
        self,
        x_u: torch.Tensor | None,
        x_l: torch.Tensor | None = None,
        y_l: torch.Tensor | None = None,
        unlabelled_scale: float = 1.0,
        labelled_scale: float = 1.0,
        beta: float = 1.0,
    ) -> torch.Tensor:
        """-J_alpha on a pair of batches, or on one of them alone (the other None): the steps of
        ``--labelled-steps interleaved``."""
        if x_u is None and x_l is None:
            raise ValueError("SemiSupervisedLoss needs an unlabelled batch, a labelled batch, or both")
        with _losses_stay_on_the_device():
            if x_l is None:
                return self.unlabelled_loss(x_u, unlabelled_scale, beta)
            if x_u is None:
                return self.labelled_loss(x_l, y_l, labelled_scale, beta)
            # -J_alpha on this pair of batches
            return self.unlabelled_loss(x_u, unlabelled_scale, beta) + self.labelled_loss(
                x_l, y_l, labelled_scale, beta
            )
