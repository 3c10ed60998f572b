"""A VAE with two stochastic layers, written as a user would write one (no pyro_vae inside):

    p(x, z1, z2) = N(z2; 0, I) N(z1; mu(z2), diag sigma(z2)^2) Bernoulli(x; sigmoid(f(z1)))
    q(z1, z2 | x) = N(z1; mu(x), diag sigma(x)^2) N(z2; mu(z1), diag sigma(z1)^2)

Every net is an MLP with tanh hidden layers: ``hidden`` widths between x and z1, half of them
between z1 and z2 (Burda et al. 2015's ratio: latent_dims=(100, 50), hidden=(100, 100) is their
two-layer net). The protocol: ``TwoLayerVAE(image_shape, **options)`` with the data's image shape
(C, H, W) and the options below; ``model`` and ``guide`` are PyroModules with ``forward(x, y=None)``
(parameters local to the modules, every site inside ``pyro.plate("data", B, dim=-1)``);
``decode``, ``mean_image`` and ``sample_latents`` are for pictures. From Python:

    vae = TwoLayerVAE((1, 28, 28), latent_dims=(16, 8), hidden=(64, 64))
    loss = pyro.infer.Trace_ELBO()(vae.model, vae.guide)  # loss(x) = -ELBO of the batch x
    loss(x)  # one call first: it creates the lazily built parameters
    optimizer = torch.optim.Adam(loss.parameters(), lr=1e-3)

From the command line (the repository's root; docs/extending.md, "Your own model"):

    PYTHONPATH=examples python -m pyro_vae.fit --model two_layer_vae:TwoLayerVAE --out runs/two-layer
    PYTHONPATH=examples python -m pyro_vae.evaluate runs/two-layer --k 1000 --limit 1000
    PYTHONPATH=examples python -m pyro_vae.generate runs/two-layer --n 64

``--hidden`` reaches ``hidden``; ``latent_dims`` keeps its default (16, 8) there.
"""

import math

import pyro
import pyro.distributions as dist
import torch
import torch.nn.functional as F
from pyro.nn import PyroModule
from torch import nn


def mlp(*widths):
    """Linear layers through ``widths``, tanh between them."""
    layers = [m for a, b in zip(widths[:-1], widths[1:]) for m in (nn.Linear(a, b), nn.Tanh())]
    return nn.Sequential(*layers[:-1])


def diagonal_normal(params):
    """N(loc, diag softplus(a)^2) from an MLP's output [loc, a]: event shape (D,)."""
    loc, a = params.chunk(2, dim=-1)
    return dist.Normal(loc, F.softplus(a) + 1e-4).to_event(1)


class TwoLayerModel(PyroModule):
    def __init__(self, image_shape, latent_dims, hidden):
        super().__init__()
        (d1, d2), self.image_shape = latent_dims, tuple(image_shape)
        self.register_buffer("zeros", torch.zeros(d2))
        self.z1_net = mlp(d2, *[h // 2 for h in reversed(hidden)], 2 * d1)  # z2 -> [loc, a] of z1
        self.x_net = mlp(d1, *reversed(hidden), math.prod(image_shape))  # z1 -> pixel logits

    def latents(self):  # z2 ~ N(0, I), z1 ~ p(z1 | z2), in the caller's plate
        z2 = pyro.sample("z2", dist.Normal(self.zeros, 1.0).to_event(1))  # (B, D2)
        return {"z1": pyro.sample("z1", diagonal_normal(self.z1_net(z2))), "z2": z2}  # z1 (B, D1)

    def pixels(self, z1):  # p(x | z1): batch (B,), event (C, H, W)
        return dist.Bernoulli(logits=self.x_net(z1).unflatten(-1, self.image_shape)).to_event(3)

    def forward(self, x, y=None):
        with pyro.plate("data", x.shape[0], dim=-1):
            return pyro.sample("x", self.pixels(self.latents()["z1"]), obs=x)


class TwoLayerGuide(PyroModule):
    def __init__(self, image_shape, latent_dims, hidden):
        super().__init__()
        d1, d2 = latent_dims
        self.z1_net = mlp(math.prod(image_shape), *hidden, 2 * d1)  # x -> [loc, a] of z1
        self.z2_net = mlp(d1, *[h // 2 for h in hidden], 2 * d2)  # z1 -> [loc, a] of z2

    def forward(self, x, y=None):
        with pyro.plate("data", x.shape[0], dim=-1):
            z1 = pyro.sample("z1", diagonal_normal(self.z1_net(x.flatten(-3))))  # (B, D1)
            pyro.sample("z2", diagonal_normal(self.z2_net(z1)))  # (B, D2)
            return z1


class TwoLayerVAE(nn.Module):
    """Options: ``latent_dims`` (D1, D2), z1 nearest x; ``hidden`` the widths between x and z1."""

    def __init__(self, image_shape, latent_dims=(16, 8), hidden=(64, 64)):
        super().__init__()
        self.model = TwoLayerModel(image_shape, latent_dims, hidden)
        self.guide = TwoLayerGuide(image_shape, latent_dims, hidden)

    def decode(self, z1):
        return self.model.pixels(z1)

    def mean_image(self, z1):
        return self.model.pixels(z1).mean  # (B, C, H, W)

    def sample_latents(self, n):
        with pyro.plate("data", n, dim=-1):
            return self.model.latents()  # {"z1": (n, D1), "z2": (n, D2)}
