"""A Gaussian-mixture VAE, written as a user would write one (no pyro_vae inside):

    p(x, z, c) = Categorical(c; pi) N(z; mu_c, diag sigma_c^2) Bernoulli(x; sigmoid(f(z)))
    q(z | x)   = N(z; mu(x), diag sigma(x)^2)

The cluster c is summed out exactly: its site is marked ``infer={"enumerate": "parallel"}`` in the
model and the guide has no c, so train with ``TraceEnum_ELBO(max_plate_nesting=1)``. pi, mu_c and
sigma_c are learned. The protocol: ``GMMVAE(image_shape, **options)`` with the data's image shape
(C, H, W) and the options below; ``model`` and ``guide`` are PyroModules with ``forward(x, y=None)``
(parameters local to the modules, every site inside ``pyro.plate("data", B, dim=-1)``);
``decode``, ``mean_image`` and ``sample_latents`` are for pictures. From Python:

    vae = GMMVAE((1, 28, 28), latent_dim=8, components=10)
    loss = pyro.infer.TraceEnum_ELBO(max_plate_nesting=1)(vae.model, vae.guide)
    loss(x)  # one call first: it creates the lazily built parameters
    optimizer = torch.optim.Adam(loss.parameters(), lr=1e-3)

From the command line (the repository's root; docs/extending.md, "Your own model"):

    PYTHONPATH=examples python -m pyro_vae.fit --model gmm_vae:GMMVAE --elbo enum --out runs/gmm
    PYTHONPATH=examples python -m pyro_vae.evaluate runs/gmm --k 1000 --limit 1000
    PYTHONPATH=examples python -m pyro_vae.generate runs/gmm --n 64

``--latent-dim`` and ``--hidden`` reach ``latent_dim`` and ``hidden``; ``components`` keeps its default 10.
Without ``--elbo enum`` the run is refused before training (Trace_ELBO cannot sum out c).
"""

import math

import pyro
import pyro.distributions as dist
import torch
import torch.nn.functional as F
from pyro.distributions import constraints
from pyro.nn import PyroModule, PyroParam
from torch import nn


def mlp(*widths):
    """Linear layers through ``widths``, ReLU between them."""
    layers = [m for a, b in zip(widths[:-1], widths[1:]) for m in (nn.Linear(a, b), nn.ReLU())]
    return nn.Sequential(*layers[:-1])


class GMMModel(PyroModule):
    def __init__(self, image_shape, latent_dim, components, hidden):
        super().__init__()
        self.image_shape = tuple(image_shape)
        self.logits = PyroParam(torch.zeros(components))  # log pi, up to a constant   (K,)
        self.locs = PyroParam(torch.randn(components, latent_dim))  # mu_c              (K, D)
        self.scales = PyroParam(torch.ones(components, latent_dim), constraint=constraints.positive)
        self.decoder = mlp(latent_dim, *reversed(hidden), math.prod(image_shape))  # z -> pixel logits

    def latents(self):  # c ~ pi, z ~ N(mu_c, sigma_c^2), in the caller's plate
        c = pyro.sample("c", dist.Categorical(logits=self.logits), infer={"enumerate": "parallel"})
        # c: (B,) when drawn, (K, 1) when enumerated; mu_c then (K, 1, D), broadcast against z (B, D)
        return {"c": c, "z": pyro.sample("z", dist.Normal(self.locs[c], self.scales[c]).to_event(1))}

    def pixels(self, z):  # p(x | z): batch (B,), event (C, H, W)
        return dist.Bernoulli(logits=self.decoder(z).unflatten(-1, self.image_shape)).to_event(3)

    def forward(self, x, y=None):
        with pyro.plate("data", x.shape[0], dim=-1):
            return pyro.sample("x", self.pixels(self.latents()["z"]), obs=x)


class GMMGuide(PyroModule):
    def __init__(self, image_shape, latent_dim, hidden):
        super().__init__()
        self.encoder = mlp(math.prod(image_shape), *hidden, 2 * latent_dim)  # x -> [loc, a] of z

    def forward(self, x, y=None):
        with pyro.plate("data", x.shape[0], dim=-1):
            loc, a = self.encoder(x.flatten(-3)).chunk(2, dim=-1)  # (B, D) each
            return pyro.sample("z", dist.Normal(loc, F.softplus(a) + 1e-4).to_event(1))


class GMMVAE(nn.Module):
    """Options: ``latent_dim`` D, ``components`` K clusters, ``hidden`` the encoder's widths (the
    decoder's reversed)."""

    def __init__(self, image_shape, latent_dim=8, components=10, hidden=(256,)):
        super().__init__()
        self.model = GMMModel(image_shape, latent_dim, components, hidden)
        self.guide = GMMGuide(image_shape, latent_dim, hidden)

    def decode(self, z):
        return self.model.pixels(z)

    def mean_image(self, z):
        return self.model.pixels(z).mean  # (B, C, H, W)

    def sample_latents(self, n):
        with pyro.plate("data", n, dim=-1):
            return self.model.latents()  # {"c": (n,), "z": (n, D)}
