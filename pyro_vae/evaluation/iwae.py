"""Importance-weighted estimates of log p(x), one per image, from Pyro traces of a model and guide.

    log p_K(x) = logsumexp_k [log p(x, z_k) - log q(z_k | x)] - log K,   z_k ~ q(z | x)

(Burda, Grosse & Salakhutdinov 2015, "Importance weighted autoencoders"). log p_K(x) is a
lower bound on log p(x) in expectation, non-decreasing in K, and tends to log p(x) as K grows.
From the same samples we also return the ELBO estimate mean_k log w_k and the effective sample
size of the normalised weights.

Design (why it is written this way):

* **Tiling, not a particle plate.** A chunk of n particles is scored by tiling the images to
  ``(n * B, ...)``: the model's data plate then has size n * B and every network sees an ordinary
  batch. Row ``j * B + b`` holds particle j of image b. The images are tiled once per batch, for
  a whole chunk, and every chunk scores the first n * B rows of that one copy. An outer vectorized
  ``pyro.plate("particles")`` would hand the networks ``(n, B, ...)`` tensors, which
  convolutional nets and ``flatten(start_dim=1)`` encoders do not accept.
* **The guide once, one seed per particle.** The guide runs once on the batch's B images; each
  particle j is then drawn from its distribution q(z|x) (``rsample()``) right after the RNG was
  seeded with ``particle_seed(seed, batch_index, j)``, and the model scores a whole chunk of
  particles in a single call on the tiled batch. The seed lives in the noise, so particle j is
  the same sample whatever ``k_chunk`` (chunking does not change the result) and whatever ``k``
  (the estimate at k uses the first k particles of the estimate at any larger k: nested
  samples), and it is the sample one guide call after that seed would draw. The encoder's cost
  is paid once per image, not once per particle. (A guide with several latent sites, whose
  later sites depend on earlier draws, runs once per particle instead, after the same seed:
  the particle is a draw of the whole guide.) The samples do depend on how images are grouped
  into batches.
* **Every latent site.** z above is all of the guide's latent sites together. A discrete model
  site that the guide does not sample and that the model marks ``infer={"enumerate":
  "parallel"}`` is summed out exactly: log p(x, z) = log sum_c p(x, z, c), the model run once
  per chunk under ``poutine.enum`` with every value of c in a dimension left of the data plate.
  Any other model latent the guide misses is an error. E_q[site | x] is reported for every
  continuous latent site of the guide (for active units per site).
* **float64 accumulation.** Log-weights are computed in the model's dtype, then combined across
  chunks in float64 with a running logsumexp.
* **Evaluation, not training.** Modules are put in eval mode (batch norm uses its running
  statistics, so rows are scored independently) and restored afterwards; gradients are off; the
  caller's RNG state is left as it was. Scale factors (``poutine.scale``, KL warm-up) are ignored:
  the estimate is of the unscaled model. Masks are honoured.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import numpy as np
import pyro
import pyro.poutine as poutine
import torch
from pyro.distributions.util import scale_and_mask
from pyro.infer.util import is_validation_enabled

from ..errors import PyroVAEError
from ..objectives import (
    check_guide_covers_model,
    enumerated_log_density,
    enumerated_model,
    enumerated_sites,
    sample_sites,
    trace_log_density,
)
from . import memory_budget
from .memory_budget import DEFAULT_MEMORY_BUDGET_MB


@dataclass
class ImportanceWeightedEstimate:
    """Per-image results of :func:`importance_weighted_log_px` for one batch of B images.

    All tensors are float64 on the CPU; row b is image b.
    """

    log_px: torch.Tensor  # (B,)  log p_K(x) = logsumexp_k log w_k - log K
    elbo: torch.Tensor  # (B,)  mean_k log w_k, the ELBO estimate on the same samples
    log_ess: torch.Tensor  # (B,)  log ESS = 2 logsumexp_k log w_k - logsumexp_k 2 log w_k
    z_mean: torch.Tensor | None  # (B, D)  E_q[z | x] for the latent site, None if absent
    z_mean_source: str  # "analytic" (guide's .mean, averaged over particles), "samples" or "none"
    log_weights: torch.Tensor | None  # (B, K * L)  only with return_log_weights=True
    k: int
    k_chunk: int
    labels_summed: int = 1  # L > 1: log p(x) = log sum_y p(x, y), K particles for each of L labels
    # E_q[site | x] (B, D_site) (event dimensions flattened) per continuous latent site of the
    # guide, in its order; then None for each discrete site (sampled by the guide, or summed out
    # by enumeration in the model): a class has no active units
    site_means: dict[str, torch.Tensor | None] = field(default_factory=dict)
    site_mean_sources: dict[str, str] = field(default_factory=dict)  # "analytic" or "samples" per site

    @property
    def gap(self) -> torch.Tensor:
        """log p_K(x) - ELBO per image (>= 0: Jensen on the same samples)."""
        return self.log_px - self.elbo

    @property
    def ess(self) -> torch.Tensor:
        """Effective sample size (sum w)^2 / sum w^2 per image, in [1, K]."""
        return self.log_ess.exp()


def particle_seed(seed: int, batch_index: int, particle: int) -> int:
    """The RNG seed of one particle: a 64-bit hash of (seed, batch_index, particle)."""
    sequence = np.random.SeedSequence(seed, spawn_key=(batch_index, particle))
    return int(sequence.generate_state(1, np.uint64)[0])


def importance_weighted_log_px(
    model: Callable,
    guide: Callable,
    x: torch.Tensor,
    y: torch.Tensor | None = None,
    *,
    k: int,
    k_chunk: int | None = None,
    seed: int = 0,
    batch_index: int = 0,
    memory_budget_mb: float = DEFAULT_MEMORY_BUDGET_MB,
    return_log_weights: bool = False,
    latent_site: str = "z",
    all_sites: bool = True,
) -> ImportanceWeightedEstimate:
    """Estimate log p(x) of each image in the batch ``x`` with K importance samples from the guide.

    :param model: ``model(x, y=None)``; every sample site inside ``pyro.plate("data", x.shape[0])``.
        Discrete latent sites marked ``infer={"enumerate": "parallel"}`` that the guide does not
        sample are summed out exactly.
    :param guide: ``guide(x, y=None)`` over the model's other unobserved sites (any number).
    :param x: a batch of B images (the first dimension is the batch).
    :param y: optional labels, passed to model and guide (tiled like ``x``).
    :param k: number of importance samples K per image (>= 1).
    :param k_chunk: particles scored per model call; None picks it from ``memory_budget_mb``.
        It changes speed and memory only, never the numbers.
    :param seed: same seed (and batch_index, batch) -> identical numbers.
    :param batch_index: mixed into the seeds so that a driver's batches draw independent samples.
    :param return_log_weights: also return all log-weights, shape (B, K) (for PSIS k-hat).
    :param latent_site: the site whose posterior mean is ``z_mean`` (for active units).
    :param all_sites: also E_q[site | x] of every continuous latent site (``site_means``).
    """
    _check_positive_int("k", k)
    _check_seed(seed)
    if k_chunk is not None:
        _check_positive_int("k_chunk", k_chunk)
        k_chunk = min(k_chunk, k)
    batch = x.shape[0]
    if batch < 1:
        raise PyroVAEError("importance_weighted_log_px got an empty batch (x.shape[0] == 0)")
    try:
        with _evaluation_context(model, guide, x):
            measured = k_chunk is None  # (auto_k_chunk scores one particle, Pyro's validation as set)
            if measured:
                k_chunk = auto_k_chunk(model, guide, x, y, k=k, memory_budget_mb=memory_budget_mb)
            guide_trace = poutine.trace(guide).get_trace(x, y)  # q(z|x): the encoder runs once
            if not measured and is_validation_enabled():  # Pyro's checks, on one particle of the batch
                _chunk_log_weights(model, guide, x, y, [particle_seed(seed, batch_index, 0)], latent_site, guide_trace)
            acc = _Accumulator(batch, keep=return_log_weights)
            discrete = [name for name, site in _latent_sites(guide_trace) if all_sites and _is_discrete(site)]
            # the images tiled once for a whole chunk, (k_chunk * B, ...), and reused by every chunk
            tiled = (_tile(x, k_chunk), _tile(y, k_chunk))
            for start in range(0, k, k_chunk):
                particles = range(start, min(k, start + k_chunk))
                seeds = [particle_seed(seed, batch_index, j) for j in particles]
                # validated above, on the untiled images: the chunks' tiled copies would only
                # repeat those checks, on k_chunk copies of every image
                with pyro.validation_enabled(False):
                    log_w, sums, enumerated = _chunk_log_weights(
                        model, guide, x, y, seeds, latent_site, guide_trace, tiled, all_sites=all_sites
                    )
                acc.add(log_w, sums)
                if x.device.type == "cpu":  # a heap that grows (fragments) is given back
                    memory_budget.return_freed_memory(int(memory_budget_mb * 2**20))
    except (RuntimeError, MemoryError) as err:
        if not memory_budget.is_out_of_memory(err):
            raise
        chunk = "an automatic k_chunk" if k_chunk is None else f"k_chunk={k_chunk}"
        raise PyroVAEError(
            f"ran out of memory scoring a batch of {batch} images with {chunk} "
            f"({str(err).splitlines()[0] if str(err) else type(err).__name__}); use a smaller "
            "batch size, a smaller k_chunk, or a smaller memory_budget_mb"
        ) from err
    return acc.result(
        k=k, k_chunk=k_chunk, latent_site=latent_site, discrete=discrete + (enumerated if all_sites else [])
    )


def label_summed_log_px(
    model: Callable,
    guide: Callable,
    x: torch.Tensor,
    *,
    num_classes: int,
    k: int,
    label_site: str = "y",
    **kwargs,
) -> ImportanceWeightedEstimate:
    """log p(x) = log sum_y p(x, y) for a model whose label ``y`` is a latent site (M2), summing
    the label exactly and importance-sampling z for each label:

        log p_K(x) = log sum_y [(1/K) sum_k p(x, y, z_yk) / q(z_yk | x, y)],   z_yk ~ q(z | x, y)
                   = logsumexp over all L*K log-weights - log K

    Each label's term is :func:`importance_weighted_log_px` with ``y`` observed (the same traces,
    the same particle seeds for every label). The ELBO is the one with y summed out,
    sum_y q(y|x) [ELBO(x, y)] + H[q(y|x)], read off the guide's ``label_site`` distribution; ESS
    and (with ``return_log_weights``) k-hat use all L*K weights; E_q[z|x] averages the labels'
    posterior means under q(y|x). kwargs go to :func:`importance_weighted_log_px`.
    """
    _check_positive_int("num_classes", num_classes)
    with _evaluation_context(model, guide, x):
        guide_trace = poutine.trace(guide).get_trace(x, None)
    if label_site not in guide_trace.nodes:
        raise PyroVAEError(
            f"the guide has no {label_site!r} site to read q(y|x) from: summing over labels "
            "needs a guide that samples the label when it is not given (the M2 guide)"
        )
    labels = torch.arange(num_classes, device=x.device)
    label_fn = guide_trace.nodes[label_site]["fn"]
    log_q_y = label_fn.log_prob(labels[:, None]).double().cpu()  # log q(y|x)   (L, B)
    per_label = [
        importance_weighted_log_px(model, guide, x, labels[c].expand(x.shape[0]), k=k, **kwargs)
        for c in range(num_classes)
    ]
    log_k = math.log(k)
    lse = torch.stack([e.log_px for e in per_label]) + log_k  # logsumexp_k log w_yk   (L, B)
    lse2 = 2 * lse - torch.stack([e.log_ess for e in per_label])  # logsumexp_k 2 log w_yk
    q_y = log_q_y.exp()
    elbos = torch.stack([e.elbo for e in per_label])  # ELBO(x, y) estimates   (L, B)
    z_means = [e.z_mean for e in per_label]
    z_mean = None if z_means[0] is None else (q_y[..., None] * torch.stack(z_means)).sum(0)
    site_means = {
        name: None if mean is None else (q_y[..., None] * torch.stack([e.site_means[name] for e in per_label])).sum(0)
        for name, mean in per_label[0].site_means.items()
    }
    log_weights = None
    if per_label[0].log_weights is not None:  # (B, K, L) -> (B, K*L): the first k*L columns hold
        log_weights = torch.stack([e.log_weights for e in per_label], -1).flatten(1)  # particles < k
    return ImportanceWeightedEstimate(
        log_px=torch.logsumexp(lse, 0) - log_k,  # log sum_y p_K(x, y)   (B,)
        elbo=(q_y * (elbos - log_q_y)).sum(0),  # E_q(y|x)[ELBO(x, y) - log q(y|x)]   (B,)
        log_ess=2 * torch.logsumexp(lse, 0) - torch.logsumexp(lse2, 0),
        z_mean=z_mean,
        z_mean_source=per_label[0].z_mean_source,
        log_weights=log_weights,
        k=k,
        k_chunk=per_label[0].k_chunk,
        labels_summed=num_classes,
        site_means=site_means,
        site_mean_sources=per_label[0].site_mean_sources,
    )


# ----------------------------------------------------------------------------------------------
# One chunk of particles


def _chunk_log_weights(
    model: Callable,
    guide: Callable,
    x: torch.Tensor,
    y: torch.Tensor | None,
    seeds: list[int],
    latent_site: str,
    guide_trace: poutine.Trace | None = None,
    tiled: tuple[torch.Tensor, torch.Tensor | None] | None = None,
    *,
    all_sites: bool = False,
) -> tuple[torch.Tensor, dict[str, tuple[torch.Tensor, bool]], list[str]]:
    """Draw one particle per seed from the guide, score all of them with one model call.

    ``guide_trace`` is one run of the guide on the batch (made here if not given): when it has a
    single latent site, its distribution q(z|x) gives every particle (the seed, then
    ``rsample()``: the value one guide call after that seed would draw, without running the
    encoder again); a guide with several latent sites runs once per particle. ``tiled`` is
    ``(x, y)`` already tiled for at least ``len(seeds)`` particles (made here if not given): its
    first ``len(seeds) * B`` rows are scored.

    Returns log w (n, B); for ``latent_site`` and, with ``all_sites``, every continuous latent
    site of the guide, name -> (the sum over the n particles of E_q[site | x, particle], or of
    the site's draws, (B, ...); whether every term was the guide's analytic mean); and the names
    of the model sites summed out by enumeration.
    """
    batch = x.shape[0]
    if guide_trace is None:
        guide_trace = poutine.trace(guide).get_trace(x, y)
    latents = list(_latent_sites(guide_trace))
    values: dict[str, list[torch.Tensor]] = {}
    infer = {name: site["infer"] for name, site in latents}
    log_q: list[torch.Tensor] = []
    sums: dict[str, tuple[torch.Tensor, bool]] = {}

    def wanted(name: str, site: dict) -> bool:
        return name == latent_site or (all_sites and not _is_discrete(site))

    if len(latents) == 1:  # q(z|x) once, K draws from it
        name, site = latents[0]
        fn, mask = site["fn"], site["mask"]
        at_once = _elementwise_normal(fn)
        for s in seeds:
            _seed_rng(s, x.device)
            z = fn.rsample() if fn.has_rsample else fn.sample()
            if not at_once:  # right after its draw: a flow's log_prob reads the draw's cached inverse
                log_q.append(_guide_log_prob(fn, z, mask, guide_trace, (batch,)))  # log q(z_j|x)  (B,)
            values.setdefault(name, []).append(z)
        if at_once:  # log q(z_j|x) of the whole chunk in one call, (n, B)
            log_q = list(_guide_log_prob(fn, torch.stack(values[name]), mask, guide_trace, (len(seeds), batch)))
        if wanted(name, site):
            mean, analytic = _site_mean(site)
            sums[name] = (
                mean.double() * len(seeds) if analytic else torch.stack(values[name]).double().sum(0),
                analytic,
            )
    else:  # the whole guide once per particle: later sites depend on earlier draws
        for s in seeds:
            _seed_rng(s, x.device)
            trace = poutine.trace(guide).get_trace(x, y)
            log_q.append(site_log_probs(trace, batch, "guide"))  # log q(z_j|x), all sites  (B,)
            for name, site in _latent_sites(trace):
                values.setdefault(name, []).append(site["value"])
                if wanted(name, site):  # E_q[site | x, earlier sites of particle j]
                    mean, analytic = _site_mean(site)
                    total = sums.get(name)
                    sums[name] = (
                        (mean.double(), analytic)
                        if total is None
                        else (total[0] + mean.double(), total[1] and analytic)
                    )
    n = len(seeds)
    x_t, y_t = tiled if tiled is not None else (_tile(x, n), _tile(y, n))
    x_t, y_t = x_t[: n * batch], (None if y_t is None else y_t[: n * batch])  # row j * B + b: image b
    latents = {name: torch.cat(parts, dim=0) for name, parts in values.items()}  # (n*B, ...)
    log_p, enumerated = _model_log_joint(model, x_t, y_t, latents, infer)  # (n*B,)
    # log w_j = log p(x, z_j) - log q(z_j|x)   (n, B)
    log_w = log_p.view(n, batch) - torch.stack(log_q)
    return log_w.double(), sums, enumerated


def model_log_joint(
    model: Callable,
    x: torch.Tensor,
    y: torch.Tensor | None,
    latents: dict[str, torch.Tensor],
    infer: dict[str, dict] | None = None,
) -> torch.Tensor:
    """log p(x, z) per row: the model replayed on ``latents`` (one value per row), shape (N,).

    The model's discrete sites marked ``infer={"enumerate": "parallel"}`` and not in ``latents``
    are summed out exactly, log p(x, z) = log sum_c p(x, z, c); any other latent site missing
    from ``latents`` is an error that names it.
    """
    return _model_log_joint(model, x, y, latents, infer)[0]


def _model_log_joint(
    model: Callable,
    x: torch.Tensor,
    y: torch.Tensor | None,
    latents: dict[str, torch.Tensor],
    infer: dict[str, dict] | None = None,
) -> tuple[torch.Tensor, list[str]]:
    """:func:`model_log_joint`, and the names of the sites it summed out by enumeration."""
    replay_trace = poutine.Trace()
    for name, value in latents.items():
        replay_trace.add_node(
            name,
            name=name,
            type="sample",
            value=value,
            is_observed=False,
            infer=(infer or {}).get(name, {}),
        )
    model_trace = poutine.trace(enumerated_model(poutine.replay(model, trace=replay_trace))).get_trace(x, y)
    check_guide_covers_model(model_trace, latents)
    missing = set(latents) - {name for name, _ in sample_sites(model_trace)}
    if missing:
        raise PyroVAEError(
            f"the guide samples {sorted(missing)} which the model does not have; auxiliary "
            "guide variables are not supported by the importance-weighted estimator"
        )
    enumerated = enumerated_sites(model_trace)
    if enumerated:  # log sum_c p(x, z, c)   (N,)
        return enumerated_log_density(model_trace, rows=x.shape[0]), enumerated
    return site_log_probs(model_trace, x.shape[0], "model"), enumerated


def site_log_probs(trace: poutine.Trace, rows: int, who: str) -> torch.Tensor:
    """Sum over a trace's sample sites of their (masked, unscaled) log_prob, shape (rows,): the
    shared :func:`pyro_vae.objectives.trace_log_density`, every site checked to be per image."""
    return trace_log_density(trace, shape=(rows,), who=who)


def _elementwise_normal(fn) -> bool:
    """Whether ``fn`` is a Normal with independent coordinates (``Normal(...).to_event(d)``),
    whose log_prob of a stack of draws (n, B, ...) equals, row by row and bit for bit, its
    log_prob of each draw: elementwise arithmetic, then a sum over each draw's own coordinates."""
    base = fn.base_dist if isinstance(fn, torch.distributions.Independent) else fn
    return type(base).log_prob is torch.distributions.Normal.log_prob


def _guide_log_prob(fn, z: torch.Tensor, mask, guide_trace: poutine.Trace, shape: tuple[int, ...]) -> torch.Tensor:
    """The guide site's (masked, unscaled) log q(z|x) of draws ``z``, which must have ``shape``."""
    log_prob = scale_and_mask(fn.log_prob(z), 1.0, mask)
    if log_prob.shape != shape:
        site_log_probs(guide_trace, shape[-1], "guide")  # the shape error, with its advice
    return log_prob


def _latent_sites(trace: poutine.Trace) -> Iterator[tuple[str, dict]]:
    """(name, site) of the unobserved sample sites of a trace."""
    return sample_sites(trace, observed=False)


def _is_discrete(site: dict) -> bool:
    """Whether a sample site's distribution has a discrete support (a class, not a quantity)."""
    try:
        return bool(getattr(site["fn"].support, "is_discrete", False))
    except NotImplementedError:  # a distribution that does not declare its support
        return False


def _site_mean(site: dict) -> tuple[torch.Tensor, bool]:
    """The site distribution's mean if it has one of the value's shape, else the sampled value."""
    try:
        mean = site["fn"].mean
        if mean.shape == site["value"].shape:
            return mean, True
    except (NotImplementedError, AttributeError):
        pass
    return site["value"], False


def _tile(t: torch.Tensor | None, n: int) -> torch.Tensor | None:
    """(B, ...) -> (n * B, ...), row j * B + b = t[b]."""
    if t is None:
        return None
    return t.repeat(n, *([1] * (t.dim() - 1)))


# ----------------------------------------------------------------------------------------------
# Accumulating chunks


class _Accumulator:
    """Running float64 logsumexp of log w and of 2 log w, sum of log w, and the latent means."""

    def __init__(self, batch: int, keep: bool):
        self.lse = torch.full((batch,), -math.inf, dtype=torch.float64)
        self.lse2 = torch.full((batch,), -math.inf, dtype=torch.float64)
        self.sum = torch.zeros(batch, dtype=torch.float64)
        self.site_sums: dict[str, torch.Tensor] = {}  # sum over particles of E_q[site | x, particle]
        self.analytic: dict[str, bool] = {}
        self.count = 0
        self.kept: list[torch.Tensor] | None = [] if keep else None

    def add(self, log_w: torch.Tensor, sums: dict[str, tuple[torch.Tensor, bool]]) -> None:
        """Fold in one chunk of log-weights (n, B) and its sums of the latent means."""
        log_w = log_w.cpu()
        if torch.isnan(log_w).any():
            bad = int(torch.isnan(log_w).any(0).sum())
            raise PyroVAEError(
                f"log importance weights are NaN for {bad} image(s): the model "
                "or guide produced NaN (diverged parameters or invalid inputs?)"
            )
        self.lse = torch.logaddexp(self.lse, torch.logsumexp(log_w, 0))
        self.lse2 = torch.logaddexp(self.lse2, torch.logsumexp(2 * log_w, 0))
        self.sum += log_w.sum(0)
        self.count += log_w.shape[0]
        for name, (total, analytic) in sums.items():
            total = total.cpu()
            self.site_sums[name] = total if name not in self.site_sums else self.site_sums[name] + total
            self.analytic[name] = self.analytic.get(name, True) and analytic
        if self.kept is not None:
            self.kept.append(log_w)

    def result(
        self, k: int, k_chunk: int, latent_site: str = "z", discrete: list[str] | tuple[str, ...] = ()
    ) -> ImportanceWeightedEstimate:
        """The estimate from all K particles; ``discrete`` sites are listed with no mean."""
        means = {name: total / self.count for name, total in self.site_sums.items()}  # E_q[site|x]
        sources = {name: "analytic" if analytic else "samples" for name, analytic in self.analytic.items()}
        z_mean = means.get(latent_site)
        site_means: dict[str, torch.Tensor | None] = {
            name: mean.reshape(mean.shape[0], -1) for name, mean in means.items()
        }  # (B, D_site)
        site_means.update({name: None for name in discrete if name not in site_means})
        return ImportanceWeightedEstimate(
            log_px=self.lse - math.log(self.count),  # logsumexp_k log w_k - log K  (B,)
            elbo=self.sum / self.count,  # mean_k log w_k  (B,)
            log_ess=2 * self.lse - self.lse2,  # log (sum w)^2 / sum w^2  (B,)
            z_mean=z_mean,  # (B, D)
            z_mean_source=sources[latent_site] if z_mean is not None else "none",
            log_weights=torch.cat(self.kept).T.contiguous() if self.kept is not None else None,
            k=k,
            k_chunk=k_chunk,
            site_means=site_means,
            site_mean_sources=sources,
        )


# ----------------------------------------------------------------------------------------------
# Differentiable log-weights (the IWAE bound as a function of the parameters)


# ----------------------------------------------------------------------------------------------
# Memory budget -> k_chunk


def auto_k_chunk(
    model: Callable,
    guide: Callable,
    x: torch.Tensor,
    y: torch.Tensor | None = None,
    *,
    k: int,
    memory_budget_mb: float = DEFAULT_MEMORY_BUDGET_MB,
) -> int:
    """The largest k_chunk whose scoring fits ``memory_budget_mb``, between 1 and k: one particle
    of the batch is scored while its allocations are counted, and a chunk of n particles is taken
    to need n times that (:mod:`.memory_budget`; on a GPU, also half its free memory)."""
    with _evaluation_context(model, guide, x):
        guide_trace = poutine.trace(guide).get_trace(x, y)  # once per batch, not per particle
        per_particle = memory_budget.bytes_allocated_by(
            lambda: _chunk_log_weights(model, guide, x, y, [particle_seed(0, 0, 0)], "", guide_trace)
        )
    return memory_budget.items_within_budget(per_particle, k, memory_budget_mb, x.device)


# ----------------------------------------------------------------------------------------------
# Small helpers


@contextlib.contextmanager
def _evaluation_context(model: Callable, guide: Callable, x: torch.Tensor) -> Iterator[None]:
    """Eval mode for both modules (restored after), no gradients, the caller's RNG untouched."""
    with eval_mode(model, guide), torch.no_grad(), _forked_rng(x.device):
        yield


@contextlib.contextmanager
def eval_mode(*modules) -> Iterator[None]:
    """Put every given ``torch.nn.Module`` in eval mode; restore each submodule's mode after."""
    saved = [(m, m.training) for mod in modules if isinstance(mod, torch.nn.Module) for m in mod.modules()]
    for mod in modules:
        if isinstance(mod, torch.nn.Module):
            mod.eval()
    try:
        yield
    finally:
        for m, training in saved:
            m.training = training


@contextlib.contextmanager
def _forked_rng(device: torch.device) -> Iterator[None]:
    """Save the CPU (and ``device``'s) RNG state, restore it on exit."""
    devices = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        yield


def _seed_rng(seed: int, device: torch.device) -> None:
    """Seed the generator that Pyro's samplers use for tensors on ``device`` (on CUDA, that
    device's own generator, not the current device's)."""
    torch.default_generator.manual_seed(seed)
    if device.type == "cuda" and torch.cuda.is_initialized():  # (not for fake CUDA tensors)
        with torch.cuda.device(device):
            torch.cuda.manual_seed(seed)


def _check_positive_int(name: str, value) -> None:
    """A clear error unless ``value`` is an int >= 1."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise PyroVAEError(f"{name} must be an integer >= 1, got {value!r}")


def _check_seed(seed) -> None:
    """A clear error unless ``seed`` is an int >= 0."""
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise PyroVAEError(f"seed must be an integer >= 0, got {seed!r}")
