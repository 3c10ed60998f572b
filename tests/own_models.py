"""Models of one's own for tests/test_own_model.py, imported by path (``own_models:Name``) as a
user's module would be: one that trains without noise (every guide site a point mass), so that
1 and 2 processes take the same steps, and programs that break one rule each."""

import math

import pyro
import pyro.distributions as dist
import torch
from pyro.nn import PyroModule
from torch import nn


class _Programs(nn.Module):
    """A model/guide pair over images of ``image_shape``: z2 (2) -> z1 (3) -> x."""

    def __init__(self, image_shape):
        super().__init__()
        pixels = math.prod(image_shape)
        self.model, self.guide = Model(image_shape, pixels), Guide(pixels)


class Model(PyroModule):
    def __init__(self, image_shape, pixels):
        super().__init__()
        self.image_shape = tuple(image_shape)
        self.z1_net, self.x_net = nn.Linear(2, 3), nn.Linear(3, pixels)

    def latents(self, rows):
        z2 = pyro.sample("z2", dist.Normal(torch.zeros(rows, 2), 1.0).to_event(1))
        return pyro.sample("z1", dist.Normal(self.z1_net(z2), 1.0).to_event(1))

    def forward(self, x, y=None):
        with pyro.plate("data", x.shape[0], dim=-1):
            logits = self.x_net(self.latents(x.shape[0])).unflatten(-1, self.image_shape)
            return pyro.sample("x", dist.Bernoulli(logits=logits).to_event(3), obs=x)


class Guide(PyroModule):
    def __init__(self, pixels):
        super().__init__()
        self.z1_net, self.z2_net = nn.Linear(pixels, 3), nn.Linear(3, 2)

    def forward(self, x, y=None):
        with pyro.plate("data", x.shape[0], dim=-1):
            z1 = pyro.sample("z1", dist.Delta(self.z1_net(x.flatten(1))).to_event(1))  # no noise
            pyro.sample("z2", dist.Delta(self.z2_net(z1)).to_event(1))


class PointMassTwoLayer(_Programs):
    """Two layers, the guide a point mass per site: training draws no random numbers."""


class OutsidePlate(_Programs):
    """The model's z2 is drawn once for all images, outside the data plate."""

    def __init__(self, image_shape):
        super().__init__(image_shape)
        model = self.model

        def forward(x, y=None):
            z2 = pyro.sample("z2", dist.Normal(torch.zeros(2), 1.0).to_event(1))
            with pyro.plate("data", x.shape[0], dim=-1):
                z1 = pyro.sample("z1", dist.Normal(model.z1_net(z2).expand(x.shape[0], 3), 1.0).to_event(1))
                pyro.sample(
                    "x", dist.Bernoulli(logits=model.x_net(z1).unflatten(-1, model.image_shape)).to_event(3), obs=x
                )

        model.forward = forward


class GuideMissesASite(_Programs):
    """The guide samples z1 but not z2."""

    def __init__(self, image_shape):
        super().__init__(image_shape)
        guide = self.guide

        def forward(x, y=None):
            with pyro.plate("data", x.shape[0], dim=-1):
                pyro.sample("z1", dist.Normal(guide.z1_net(x.flatten(1)), 1.0).to_event(1))

        guide.forward = forward


class DiscreteGuideSite(_Programs):
    """The guide draws a discrete site (no rsample) that the model has too."""

    def __init__(self, image_shape):
        super().__init__(image_shape)
        model, guide = self.model, self.guide

        def model_forward(x, y=None):
            with pyro.plate("data", x.shape[0], dim=-1):
                pyro.sample("c", dist.Categorical(logits=torch.zeros(x.shape[0], 3)))
                logits = model.x_net(model.latents(x.shape[0])).unflatten(-1, model.image_shape)
                pyro.sample("x", dist.Bernoulli(logits=logits).to_event(3), obs=x)

        def guide_forward(x, y=None):
            with pyro.plate("data", x.shape[0], dim=-1):
                pyro.sample("c", dist.Categorical(logits=torch.zeros(x.shape[0], 3)))
                z1 = pyro.sample("z1", dist.Normal(guide.z1_net(x.flatten(1)), 1.0).to_event(1))
                pyro.sample("z2", dist.Normal(guide.z2_net(z1), 1.0).to_event(1))

        model.forward, guide.forward = model_forward, guide_forward


class NoImages(_Programs):
    """The model observes its images at a site named 'pixels', not 'x'."""

    def __init__(self, image_shape):
        super().__init__(image_shape)
        model = self.model

        def forward(x, y=None):
            with pyro.plate("data", x.shape[0], dim=-1):
                logits = model.x_net(model.latents(x.shape[0])).unflatten(-1, model.image_shape)
                pyro.sample("pixels", dist.Bernoulli(logits=logits).to_event(3), obs=x)

        model.forward = forward


class NotPrograms:
    """Has a model but no guide."""

    def __init__(self, image_shape):
        self.model = Model(image_shape, math.prod(image_shape))


class LabelledTwoLayer(_Programs):
    """The two-layer pair given the label: p(x | z1, y) with y one-hot beside z1."""

    takes_labels = True

    def __init__(self, image_shape, num_classes):
        super().__init__(image_shape)
        model, pixels = self.model, math.prod(image_shape)
        model.num_classes = num_classes
        model.x_net = nn.Linear(3 + num_classes, pixels)

        def forward(x, y=None):
            assert y is not None, "the label is given"
            with pyro.plate("data", x.shape[0], dim=-1):
                z1 = model.latents(x.shape[0])
                h = torch.cat([z1, torch.nn.functional.one_hot(y, num_classes).to(z1.dtype)], -1)
                logits = model.x_net(h).unflatten(-1, model.image_shape)
                return pyro.sample("x", dist.Bernoulli(logits=logits).to_event(3), obs=x)

        model.forward = forward
