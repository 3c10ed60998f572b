"""Any image size and channel count: nets sized from the data, the discretized logistic, bits per
dimension, the importance-weighted evaluator on every likelihood, and short training runs on
generated colour folders and flat vectors."""

import math

import numpy as np
import pytest
import torch
from own_data_helpers import blob_images, write_folder

from pyro_vae.config import FitConfig
from pyro_vae.data import load_own_data
from pyro_vae.engine import Trainer, mean_elbo_terms
from pyro_vae.evaluation import evaluate_log_px
from pyro_vae.models import LIKELIHOODS
from pyro_vae.models.likelihoods import DiscretizedLogistic
from pyro_vae.nets import DECODERS, ENCODERS, NetSpec, conv_plan
from pyro_vae.variants import build_vae

SHAPES = [(1, 28, 28), (3, 32, 32), (3, 64, 64)]


def quiet(line):
    """A log that drops the summary line."""


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s[1:] + s[:1])))
@pytest.mark.parametrize("net", ["mlp", "conv"])
def test_nets_are_sized_from_the_image_shape(shape, net):
    spec = NetSpec(shape, latent_dim=5, hidden=(32,))
    encoder, decoder = ENCODERS.build(net, spec), DECODERS.build(net, spec, 2)
    assert encoder(torch.rand(3, *shape)).shape == (3, 32)
    assert decoder(torch.randn(3, 5)).shape == (3, 2 * shape[0], *shape[1:])


def test_conv_blocks_halve_to_about_4x4_with_channels_doubling():
    assert conv_plan((1, 28, 28)) == ([32, 64], [(28, 28), (14, 14), (7, 7)])
    assert conv_plan((3, 32, 32)) == ([32, 64, 128], [(32, 32), (16, 16), (8, 8), (4, 4)])
    assert conv_plan((3, 64, 64)) == ([32, 64, 128, 256], [(64, 64), (32, 32), (16, 16), (8, 8), (4, 4)])
    encoder = ENCODERS.build("conv", NetSpec((3, 64, 64), 5, (32,)))
    convs = [m for m in encoder.conv if isinstance(m, torch.nn.Conv2d)]
    assert [(c.in_channels, c.out_channels, c.stride) for c in convs] == [
        (3, 32, (2, 2)),
        (32, 64, (2, 2)),
        (64, 128, (2, 2)),
        (128, 256, (2, 2)),
    ]
    decoder = DECODERS.build("conv", NetSpec((3, 64, 64), 5, (32,)), 2)
    deconvs = [m for m in decoder.deconv if isinstance(m, torch.nn.ConvTranspose2d)]
    assert [(c.in_channels, c.out_channels) for c in deconvs] == [(256, 128), (128, 64), (64, 32), (32, 6)]


def test_flat_vectors_take_the_mlp():
    spec = NetSpec((1, 1, 20), latent_dim=3, hidden=(16,))
    assert ENCODERS.build("mlp", spec)(torch.rand(4, 1, 1, 20)).shape == (4, 16)
    assert DECODERS.build("mlp", spec, 1)(torch.randn(4, 3)).shape == (4, 1, 1, 20)


# -- the discretized logistic -------------------------------------------------------------------
LEVELS = torch.arange(256, dtype=torch.float64) / 255


@pytest.mark.parametrize("scale", [1e-3, 0.01, 0.1, 1.0, 30.0])
def test_discretized_logistic_sums_to_one_over_the_256_values_of_every_pixel(scale):
    loc = torch.linspace(-3, 3, 25, dtype=torch.float64)  # 25 pixels, inside and far outside [-1, 1]
    d = DiscretizedLogistic(loc[:, None], torch.full((25, 1), scale, dtype=torch.float64))
    log_p = d.log_prob(LEVELS)  # (25, 256): every value of every pixel
    assert torch.isfinite(log_p).all()
    assert torch.allclose(log_p.logsumexp(-1), torch.zeros(25, dtype=torch.float64), atol=1e-9)


def test_discretized_logistic_is_the_difference_of_logistic_cdfs():
    loc, scale = torch.tensor(0.1, dtype=torch.float64), torch.tensor(0.2, dtype=torch.float64)
    y = 2 * LEVELS - 1
    cdf = lambda t: torch.sigmoid((t - loc) / scale)  # noqa: E731
    direct = cdf(y + 1 / 255) - cdf(y - 1 / 255)
    direct[0], direct[-1] = cdf(y[0] + 1 / 255), 1 - cdf(y[-1] - 1 / 255)
    assert torch.allclose(DiscretizedLogistic(loc, scale).log_prob(LEVELS).exp(), direct, atol=1e-12)


def test_discretized_logistic_samples_follow_its_probabilities():
    d = DiscretizedLogistic(torch.tensor(0.3), torch.tensor(0.05))
    samples = d.sample((40_000,))
    assert torch.equal(samples * 255, (samples * 255).round())  # on the 256 levels
    counts = torch.bincount((samples * 255).round().long(), minlength=256).double() / 40_000
    probs = d.log_prob(LEVELS.float()).exp().double()
    assert (counts - probs).abs().max() < 0.01


def test_bits_per_dimension_have_their_closed_forms():
    dims = 3 * 8 * 8
    config = FitConfig()
    bernoulli = LIKELIHOODS.build("bernoulli", (3, 8, 8), config)
    assert bernoulli.bits_per_dim(-dims * math.log(2), dims) == pytest.approx(1.0)  # P = 1/2 a pixel
    logistic = LIKELIHOODS.build("discretized-logistic", (3, 8, 8), config)
    assert logistic.bits_per_dim(-dims * math.log(256), dims) == pytest.approx(8.0)  # uniform on 256
    uniform = LIKELIHOODS.build("continuous-bernoulli", (3, 8, 8), config)
    # a density of 1 on [0, 1] is 1/255 per unit of the pixel scale: log2(255) bits
    assert uniform.bits_per_dim(0.0, dims) == pytest.approx(math.log2(255))


@pytest.mark.parametrize("likelihood", LIKELIHOODS.names())
def test_the_importance_weighted_evaluator_works_on_every_likelihood(likelihood):
    shape = (3, 8, 8)
    config = FitConfig(likelihood=likelihood, latent_dim=3, hidden=(16,), net="conv")
    vae = build_vae(config, shape).eval()
    x = (torch.rand(6, *shape) * 255).round() / 255
    if likelihood == "bernoulli":
        x = x.round()
    result = evaluate_log_px(vae.model, vae.guide, x, k=16, batch_size=3, progress=False)
    s = result.summary()
    assert math.isfinite(s["log_px_mean"]) and s["log_px_mean"] >= s["elbo_mean"]  # same samples: Jensen


# -- short training runs -------------------------------------------------------------------------
def held_out_elbo_before_and_after(config, dataset, out):
    """The test set's mean ELBO before and after training ``config`` on ``dataset``, and the run's
    summary."""
    trainer = Trainer(config, dataset, out, torch.device("cpu"), log=quiet)
    test = next(s for s in trainer.eval_sets if s.name == "test")
    before = mean_elbo_terms(trainer.vae, test.images)["elbo"]
    summary = trainer.fit()
    return before, mean_elbo_terms(trainer.vae, test.images)["elbo"], summary


@pytest.mark.slow
@pytest.mark.parametrize("side", [32, 64])
def test_conv_net_on_a_generated_colour_folder_improves_the_held_out_elbo(side, tmp_path):
    write_folder(tmp_path / "images", blob_images(160, side, seed=side))
    dataset = load_own_data(tmp_path / "images", cache_root=tmp_path / "cache", log=quiet)
    config = FitConfig(
        data=str(tmp_path / "images"),
        net="conv",
        likelihood="discretized-logistic",
        latent_dim=8,
        hidden=(64,),
        batch_size=32,
        epochs=3,
        lr=3e-3,
        out=str(tmp_path / "run"),
    )
    before, after, summary = held_out_elbo_before_and_after(config, dataset, tmp_path / "run")
    dims = 3 * side * side
    assert after > before + 0.5 * dims, (before, after)  # at least half a nat a value
    bits = summary["final"]["test_bits_per_dim"]
    assert bits == pytest.approx(-after / (dims * math.log(2)), rel=1e-6) and bits < 8


@pytest.mark.slow
def test_flat_vectors_train_with_an_mlp_and_a_gaussian(tmp_path):
    rng = np.random.default_rng(0)
    z = rng.normal(size=(400, 2))
    x = 1 / (1 + np.exp(-(z @ rng.normal(size=(2, 12)))))  # 12-D data on a 2-D manifold in (0, 1)
    np.save(tmp_path / "x.npy", (x + 0.02 * rng.normal(size=x.shape)).clip(0, 1).astype(np.float32))
    dataset = load_own_data(tmp_path / "x.npy", cache_root=tmp_path, log=quiet)
    config = FitConfig(
        data=str(tmp_path / "x.npy"),
        likelihood="gaussian",
        gaussian_scale=0.05,
        binarize="none",
        latent_dim=2,
        hidden=(32,),
        batch_size=40,
        epochs=15,
        lr=3e-3,
        out=str(tmp_path / "run"),
    )
    before, after, summary = held_out_elbo_before_and_after(config, dataset, tmp_path / "run")
    assert after > before + 50, (before, after)  # measured: -78 -> +2 nats per vector
    assert "test_bits_per_dim" not in summary["final"]  # floats: no bits per dimension
