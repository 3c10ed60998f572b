"""The inverse-autoregressive-flow guide (Kingma et al. 2016): a diagonal Normal pushed through L
affine autoregressive transforms, each conditioned on the encoder's features of x.

    z_0 ~ N(mu(x), diag sigma(x)^2),   z_l = f_l(z_{l-1}; h(x)),   z = z_L
    log q(z|x) = log N(z_0; mu, sigma^2) - sum_l log |det df_l/dz_{l-1}|

Unconditioned (``conditioned=False``, ``--flow-context none``), the transforms f_l(z_{l-1}) are
shared by all images and x enters through the base Normal only. The density of a given z under
q(. | u) for many inputs u then inverts the flows once for that z, not once per input: what the
VampPrior's log p(z) = log (1/K) sum_k q(z | u_k) needs.
"""

from __future__ import annotations

import pyro
import pyro.distributions as dist
import torch
from pyro.distributions.transforms import Permute, conditional_affine_autoregressive
from torch import nn

from ..torch_networks import TorchNetwork
from .autoregressive_inverse import InversePlan, inverse_plan, invert_conditioned
from .base import AmortizedGuide, positive_scale


class AmortizedIAF(AmortizedGuide):
    """q(z | x): a diagonal Normal base and ``flow_layers`` conditional affine autoregressive
    transforms (``pyro.distributions.transforms``), the order of z reversed between layers."""

    analytic_kl = False
    inverted = False  # True: each transform used in the other direction (the MAF guide)
    loc_head, scale_head, flows = TorchNetwork(), TorchNetwork(), TorchNetwork()

    def __init__(
        self,
        encoder: nn.Module,
        latent_dim: int,
        flow_layers: int,
        flow_hidden: int,
        num_classes: int = 0,
        conditioned: bool = True,
    ):
        super().__init__(encoder, num_classes)
        features = encoder.feature_dim
        self.loc_head = nn.Linear(features, latent_dim)
        self.scale_head = nn.Linear(features, latent_dim)
        context = features if conditioned else 0  # an unconditioned network has no context inputs
        flows = nn.ModuleList(
            conditional_affine_autoregressive(latent_dim, context, hidden_dims=[flow_hidden, flow_hidden])
            for _ in range(flow_layers)
        )
        self.conditioned = conditioned
        self.flow_hidden = flow_hidden
        self.flows = flows  # plain torch modules: Pyro's transforms cannot become PyroModules
        # (metaclass conflict); they are ordinary submodules, and with the global param store
        # distribution() registers them with pyro.module
        self.register_buffer("reverse", torch.arange(latent_dim - 1, -1, -1))
        self.orders_on_host: list[torch.Tensor] | None = None
        self.inverse_plans: list[InversePlan] | None = None
        self.read_orders()
        self.register_load_state_dict_post_hook(AmortizedIAF.read_orders)  # the loaded orders

    def read_orders(self, _incompatible_keys=None) -> None:
        """Keep each flow's autoregressive order as a CPU tensor in ``orders_on_host`` (None on the
        data-free ``meta`` device). Pyro's inverse of an affine autoregressive transform, which the
        VampPrior's log q(z | u_k) needs, loops over the order and indexes a Python list with each
        entry: with the order on a GPU that reads the device once per latent dimension and flow,
        with a CPU copy never. The orders are buffers (saved, loaded, moved), read here at
        construction and after every ``load_state_dict``, with the schedule of each flow's one-pass
        inverse (:func:`pyro_vae.guides.autoregressive_inverse.inverse_plan`), read off its masks."""
        orders = [flow.nn.permutation for flow in self.flows]
        if any(o.device.type == "meta" for o in orders):
            self.orders_on_host, self.inverse_plans = None, None
            return
        self.orders_on_host = [o.cpu() for o in orders]
        self.inverse_plans = [inverse_plan(flow.nn) for flow in self.flows]

    def features(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        """The encoder's features h(x[, y])  (..., B, F); with Pyro's global param store in use,
        registers the flows there."""
        if not pyro.settings.get("module_local_params"):  # Pyro's global param store (e.g. SVI)
            pyro.module(f"{self._pyro_name}.flows", self.flows)  # registers the flows there
        return super().features(x, y)

    def flow_context(self, h: torch.Tensor) -> torch.Tensor:
        """What the transforms are conditioned on: the features h (..., F), or, unconditioned, one
        empty row (1, 0) that broadcasts against every batch (the networks have no context inputs)."""
        return h if self.conditioned else h.new_zeros(1, 0)

    def log_prob_bytes(self) -> int:
        """About the memory autograd keeps per (z, pseudo-input) pair of :meth:`pair_log_prob`:
        per flow every hidden unit once and a few (D,) rows, and the pending pre-activations of
        one step (old and new) on top."""
        if not self.conditioned:  # per pair only the base Normal's density: the flows run once per z
            return 4 * 4 * self.loc_head.out_features
        latent, hidden = self.loc_head.out_features, 2 * self.flow_hidden
        kept = len(self.flows) * (hidden + 8 * latent) + 4 * latent
        return 4 * (kept + 2 * (hidden + 2 * latent))

    def pair_log_prob(self, z: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        """log q(z_n | h_k) for every pair: z (n, D) against the features h (c, F) -> (n, c).

        The density of a given z inverts the flows; each inversion runs once over all n c pairs in
        about one pass of its network (:func:`~pyro_vae.guides.autoregressive_inverse.invert_conditioned`),
        where Pyro's inverse takes D passes per pair. Equal to
        ``distribution_from_features(h).log_prob(z[:, None])`` in value and gradient."""
        if self.inverse_plans is None:  # no host copy of the masks (built on ``meta``)
            q = self.distribution_from_features(h)  # batch (c,), event (D,)
            return q.log_prob(z.unsqueeze(-2).expand(z.shape[0], h.shape[0], z.shape[-1]))
        log_q = torch.zeros((), dtype=z.dtype, device=z.device)
        y = z.unsqueeze(-2)  # (n, 1, D): the flows' output for every pseudo-input
        context = self.flow_context(h)  # (c, F); unconditioned (1, 0): one inversion per z for all c
        for i in reversed(range(len(self.flows))):  # z = f_L(... f_1(z_0)): undo f_L first
            flow = self.flows[i]
            transform = flow.condition(context)  # its clipping of s (no computation)
            if transform.stable:
                raise ValueError("pair_log_prob covers the affine autoregressive transform's non-stable form")
            clip = (transform.log_scale_min_clip, transform.log_scale_max_clip)
            y, log_det = invert_conditioned(flow.nn, self.inverse_plans[i], context, y, *clip)  # (n, c|1, D), (n, c|1)
            log_q = log_q - log_det
            if i:
                y = y[..., self.reverse]  # undo Permute(reverse): the reversal is its own inverse
        loc, scale = self.loc_head(h), positive_scale(self.scale_head(h))  # (c, D)
        return log_q + dist.Normal(loc, scale).to_event(1).log_prob(y)  # (n, c): z_0 against each base

    def distribution_from_features(self, h: torch.Tensor) -> dist.TorchDistribution:
        """q(z | x) from the encoder's features h(x) (B, F): batch (B,), event (D,)."""
        loc = self.loc_head(h)  # (B, D)
        scale = positive_scale(self.scale_head(h))
        base = dist.Normal(loc, scale).to_event(1)  # q(z_0|x): batch (B,), event (D,)
        transforms = []
        for i, flow in enumerate(self.flows):
            if i:
                transforms.append(Permute(self.reverse))
            transform = flow.condition(self.flow_context(h))  # f_l(.; h(x)), or f_l(.)
            if self.orders_on_host is not None:  # (see read_orders)
                transform.arn.permutation = self.orders_on_host[i]
            transforms.append(transform.inv if self.inverted else transform)  # z_l = f_l(z_{l-1}) or f_l^-1
        return dist.TransformedDistribution(base, transforms)
