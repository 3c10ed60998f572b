"""The VAE with several stochastic layers (Burda et al. 2015), ``--model hvae --latent-dim 100,50``:

    p(x, z_1..z_L) = p(z_L) prod_l p(z_l | z_{l+1}) p(x | z_1)      q(z_1..z_L | x) = q(z_1 | x) prod_l q(z_{l+1} | z_l)

It enters as a pair of Pyro programs through the same door as a model of one's own
(:class:`~pyro_vae.variants.program.ProgramVariant`); the built-in pieces that make sense with
several layers apply: ``--prior`` is p(z_L) (a prior that needs the guide, the VampPrior, does
not: the top layer has no amortized q(z_L | x)), ``--guide`` is q(z_1 | x) (diag, lowrank, iaf),
``--likelihood`` and ``--net`` are p(x | z_1)'s, ``--hidden`` the widths between x and z_1 (halved
at each layer up), ``--activation`` every hidden layer's and ``--init`` every linear layer's.
"""

from __future__ import annotations

import inspect

from torch import nn

from ..config_values import spelled
from ..guides import GUIDES
from ..guides.hierarchical import HierarchicalGuide
from ..models import LIKELIHOODS, PRIORS
from ..models.hierarchical import GaussianLayer, build_hierarchical_model, hidden_per_gap
from ..nets import NetSpec, initialize_linear_layers
from .program import ProgramVariant


def latent_widths(config) -> tuple[int, ...]:
    """--latent-dim as one width per stochastic layer, z_1 first."""
    return config.latent_dim if isinstance(config.latent_dim, tuple) else (config.latent_dim,)


class HierarchicalVAE(nn.Module):
    """The model and guide of ``--model hvae`` for images ``image_shape`` (C, H, W)."""

    def __init__(self, image_shape: tuple[int, ...], config):
        super().__init__()
        widths = latent_widths(config)
        gaps = hidden_per_gap(tuple(config.hidden), len(widths))
        likelihood = LIKELIHOODS.build(config.likelihood, tuple(image_shape), config)
        bottom_spec = NetSpec(tuple(image_shape), widths[0], gaps[0], activation=config.activation)
        top_spec = NetSpec(tuple(image_shape), widths[-1], gaps[-1], activation=config.activation)
        bottom = GUIDES.build(config.guide, bottom_spec, config)  # q(z_1 | x)
        upward = [
            GaussianLayer(widths[level - 1], gaps[level], widths[level], config.activation)
            for level in range(1, len(widths))
        ]  # q(z_{l+1} | z_l)
        self.guide = HierarchicalGuide(bottom, upward)
        self.model = build_hierarchical_model(
            image_shape,
            widths,
            tuple(config.hidden),
            likelihood,
            config.activation,
            config.net,
            top_prior=PRIORS.build(config.prior, top_spec, config, None),
        )
        initialize_linear_layers(self, config.init)  # --init: the papers' schemes


class HVAEVariant(ProgramVariant):
    name = "hvae"
    program = HierarchicalVAE
    own = False  # the built-in pieces' options apply, as the module docstring says

    @classmethod
    def config_problems(cls, config, *, keywords: bool = False) -> list[str]:
        problems = super().config_problems(config, keywords=keywords)
        prior = PRIORS.resolve(config.prior)
        if "guide" in inspect.signature(prior).parameters:
            problems.append(
                f"{spelled('model', cls.name, keywords=keywords)} takes a prior p(z_L) of its own: "
                f"{spelled('prior', config.prior, keywords=keywords)} builds p(z) from the guide's "
                "q(z | x), which the top layer does not have"
            )
        return problems
