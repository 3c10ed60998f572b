"""Samples, reconstructions and posterior means read from any Pyro model and guide
(pyro_vae.models.programs), checked against the built-in VAE's own methods and on a two-layer model."""

import importlib.util
from pathlib import Path

import pyro
import pytest
import torch

from pyro_vae.config import FitConfig
from pyro_vae.models.programs import posterior_means, reconstruct_images, sample_images
from pyro_vae.variants import build_vae

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def example(name: str):
    spec = importlib.util.spec_from_file_location(name, EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def vae():
    return build_vae(FitConfig(latent_dim=3, hidden=(16,)), (1, 6, 6)).eval()


def test_samples_equal_the_builtin_vae_samples_for_the_same_seed(vae):
    pyro.set_rng_seed(4)
    expected = vae.sample(5)
    pyro.set_rng_seed(4)
    got = sample_images(vae.model, 5, (1, 6, 6))
    assert got.shape == (5, 1, 6, 6)
    assert torch.equal(got, expected)


def test_reconstructions_equal_the_builtin_vae_reconstructions(vae):
    x = torch.rand(4, 1, 6, 6)
    assert torch.allclose(reconstruct_images(vae.model, vae.guide, x), vae.reconstruct(x))
    means = posterior_means(vae.guide, x)
    assert list(means) == ["z"] and torch.allclose(means["z"], vae.encode(x).mean)


def test_two_layer_samples_draw_every_layer_per_image():
    two_layer = example("two_layer_vae").TwoLayerVAE((1, 6, 6), latent_dims=(4, 2), hidden=(8, 8))
    images = sample_images(two_layer.model, 6, (1, 6, 6))
    assert images.shape == (6, 1, 6, 6)
    assert len({tuple(row.flatten().tolist()) for row in images}) == 6  # no two samples share their z2
    means = posterior_means(two_layer.guide, torch.rand(3, 1, 6, 6))
    assert {k: tuple(v.shape) for k, v in means.items()} == {"z1": (3, 4), "z2": (3, 2)}


def test_a_model_without_an_x_site_is_named():
    def model(x, y=None):
        with pyro.plate("data", x.shape[0], dim=-1):
            pyro.sample("pixels", pyro.distributions.Bernoulli(0.5 * torch.ones(x.shape[1:])).to_event(3), obs=x)

    with pytest.raises(KeyError, match="obs=x"):
        sample_images(model, 2, (1, 2, 2))
