"""The masked-autoregressive-flow guide (Papamakarios et al. 2017): the IAF guide's amortized
affine autoregressive transforms, each used in the other direction.

    z_0 ~ N(mu(x), diag sigma(x)^2),   z_l = f_l^{-1}(z_{l-1}; h(x)),   z = z_L
    log q(z|x) = log N(z_0; mu, sigma^2) + sum_l log |det df_l/dz_l|

with f_l(z_l) = m(z_l) + exp(s(z_l)) z_l a MADE network's affine map (Pyro's
``AffineAutoregressive``). The density of a given z runs each network once (z_{l-1} = f_l(z_l));
a draw inverts each flow, one pass per latent dimension, for the drawn particles only. The IAF
guide is the reverse: one-pass draws, and a density of a given z that inverts the flows. The two
are different variational families; this one suits the VampPrior, whose log p(z) evaluates
q(z | u_k) at every (z, pseudo-input) pair.
"""

from __future__ import annotations

import pyro.distributions as dist
import torch
import torch.nn.functional as F
from pyro.distributions.transforms.utils import clamp_preserve_gradients
from torch import nn

from .base import positive_scale
from .iaf import AmortizedIAF


def conditioned_made(arn: nn.Module, y: torch.Tensor, context: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The (mean, raw log-scale) outputs of a ``ConditionalAutoRegressiveNN`` for every pair:
    ``y`` (n, 1 or c, D) against the context (c, F) -> two (n, c, D) tensors.

    Pyro's network concatenates the context to every input row; here the context's share of the
    first layer is computed once per context row and added to the inputs' share, so no
    (n, c, F) tensor is formed. Same values as ``arn(y, context)``."""
    if getattr(arn, "skip_layer", None) is not None or list(arn.param_dims) != [1, 1]:
        raise ValueError("conditioned_made covers MADE networks without skip connections and two outputs (mu, s)")
    first, *rest = arn.layers
    width = context.shape[-1]
    weight = first.weight * first.mask  # (H_1, F + D): the context's columns first
    hidden = F.linear(y, weight[:, width:]) + F.linear(context, weight[:, :width], first.bias)  # (n, c, H_1)
    for layer in rest:
        hidden = layer(arn.f(hidden))  # masked linear layers, the network's nonlinearity between
    mean, raw_log_scale = hidden.unflatten(-1, (2, y.shape[-1])).unbind(-2)
    return mean, raw_log_scale


class AmortizedMAF(AmortizedIAF):
    """q(z | x): a diagonal Normal base and the inverses of ``flow_layers`` conditional affine
    autoregressive transforms (``pyro.distributions.transforms``), the order of z reversed between
    layers. The networks, their orders and how they are saved are the IAF guide's."""

    inverted = True

    def log_prob_bytes(self) -> int:
        """About the memory autograd keeps per (z, pseudo-input) pair of :meth:`pair_log_prob`:
        per flow each hidden layer's pre-activations and activations, and a few (D,) rows."""
        if not self.conditioned:  # per pair only the base Normal's density: the flows run once per z
            return 4 * 4 * self.loc_head.out_features
        latent, hidden = self.loc_head.out_features, 2 * self.flow_hidden
        return 4 * (len(self.flows) * (2 * hidden + 8 * latent) + 4 * latent)

    def pair_log_prob(self, z: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        """log q(z_n | h_k) for every pair: z (n, D) against the features h (c, F) -> (n, c), in one
        pass of each flow's network over all pairs; nothing is inverted. Equal to
        ``distribution_from_features(h).log_prob(z[:, None])`` in value and gradient."""
        log_q = torch.zeros((), dtype=z.dtype, device=z.device)
        y = z.unsqueeze(-2)  # (n, 1, D): z_L, the same for every pseudo-input
        context = self.flow_context(h)  # (c, F); unconditioned (1, 0): one pass per z for all c
        for i in reversed(range(len(self.flows))):  # z_{l-1} = f_l(z_l), from the last flow down
            transform = self.flows[i].condition(context)  # its clipping of s (no computation)
            if transform.stable:
                raise ValueError("pair_log_prob covers the affine autoregressive transform's non-stable form")
            mean, raw_log_scale = conditioned_made(self.flows[i].nn, y, context)  # (n, c|1, D) each
            log_scale = clamp_preserve_gradients(
                raw_log_scale, transform.log_scale_min_clip, transform.log_scale_max_clip
            )
            y = mean + torch.exp(log_scale) * y
            log_q = log_q + log_scale.sum(-1)
            if i:
                y = y[..., self.reverse]  # undo Permute(reverse): the reversal is its own inverse
        loc, scale = self.loc_head(h), positive_scale(self.scale_head(h))  # (c, D)
        return log_q + dist.Normal(loc, scale).to_event(1).log_prob(y)  # (n, c)
