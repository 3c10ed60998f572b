"""The inverse-autoregressive-flow guide (Kingma et al. 2016): a diagonal Normal pushed through L
affine autoregressive transforms, each conditioned on the encoder's features of x.

    z_0 ~ N(mu(x), diag sigma(x)^2),   z_l = f_l(z_{l-1}; h(x)),   z = z_L
    log q(z|x) = log N(z_0; mu, sigma^2) - sum_l log |det df_l/dz_{l-1}|
"""

from __future__ import annotations

import pyro
import pyro.distributions as dist
import torch
from pyro.distributions.transforms import Permute, conditional_affine_autoregressive
from torch import nn

from ..torch_networks import TorchNetwork
from .base import AmortizedGuide, positive_scale


class AmortizedIAF(AmortizedGuide):
    """q(z | x): a diagonal Normal base and ``flow_layers`` conditional affine autoregressive
    transforms (``pyro.distributions.transforms``), the order of z reversed between layers."""

    analytic_kl = False
    loc_head, scale_head, flows = TorchNetwork(), TorchNetwork(), TorchNetwork()

    def __init__(self, encoder: nn.Module, latent_dim: int, flow_layers: int, flow_hidden: int, num_classes: int = 0):
        super().__init__(encoder, num_classes)
        features = encoder.feature_dim
        self.loc_head = nn.Linear(features, latent_dim)
        self.scale_head = nn.Linear(features, latent_dim)
        flows = nn.ModuleList(
            conditional_affine_autoregressive(latent_dim, features, hidden_dims=[flow_hidden, flow_hidden])
            for _ in range(flow_layers)
        )
        self.flow_hidden = flow_hidden
        self.flows = flows  # plain torch modules: Pyro's transforms cannot become PyroModules
        # (metaclass conflict); they are ordinary submodules, and with the global param store
        # distribution() registers them with pyro.module
        self.register_buffer("reverse", torch.arange(latent_dim - 1, -1, -1))
        self.orders_on_host: list[torch.Tensor] | None = None
        self.read_orders()
        self.register_load_state_dict_post_hook(AmortizedIAF.read_orders)  # the loaded orders

    def read_orders(self, _incompatible_keys=None) -> None:
        """Keep each flow's autoregressive order as a CPU tensor in ``orders_on_host`` (None on the
        data-free ``meta`` device). Pyro's inverse of an affine autoregressive transform, which the
        VampPrior's log q(z | u_k) needs, loops over the order and indexes a Python list with each
        entry: with the order on a GPU that reads the device once per latent dimension and flow,
        with a CPU copy never. The orders are buffers (saved, loaded, moved), read here at
        construction and after every ``load_state_dict``."""
        orders = [flow.nn.permutation for flow in self.flows]
        self.orders_on_host = None if any(o.device.type == "meta" for o in orders) else [o.cpu() for o in orders]

    def features(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        """The encoder's features h(x[, y])  (..., B, F); with Pyro's global param store in use,
        registers the flows there."""
        if not pyro.settings.get("module_local_params"):  # Pyro's global param store (e.g. SVI)
            pyro.module(f"{self._pyro_name}.flows", self.flows)  # registers the flows there
        return super().features(x, y)

    def log_prob_bytes(self) -> int:
        """About the memory autograd keeps per point of ``log_prob``. Evaluating the density of a
        given z inverts each autoregressive transform: D sequential passes through its network,
        each keeping the input (context F + D), two hidden layers (before and after the ReLU) and
        the output (2 D)."""
        latent, features = self.loc_head.out_features, self.loc_head.in_features
        hidden = self.flow_hidden
        per_pass = features + latent + 4 * hidden + 2 * latent + 4 * latent
        return 4 * len(self.flows) * latent * per_pass

    def distribution_from_features(self, h: torch.Tensor) -> dist.TorchDistribution:
        """q(z | x) from the encoder's features h(x) (B, F): batch (B,), event (D,)."""
        loc = self.loc_head(h)  # (B, D)
        scale = positive_scale(self.scale_head(h))
        base = dist.Normal(loc, scale).to_event(1)  # q(z_0|x): batch (B,), event (D,)
        transforms = []
        for i, flow in enumerate(self.flows):
            if i:
                transforms.append(Permute(self.reverse))
            transform = flow.condition(h)  # f_l(.; h(x))
            if self.orders_on_host is not None:  # (see read_orders)
                transform.arn.permutation = self.orders_on_host[i]
            transforms.append(transform)
        return dist.TransformedDistribution(base, transforms)
