"""Missing pixels: masks drawn per image or given with the data, the masked likelihood, the guide
that reads [x * m, m], imputation by self-normalised importance sampling, and log p(x_observed)."""

import io
import json
from contextlib import redirect_stdout

import numpy as np
import pyro.distributions as dist
import pytest
import torch
from own_data_helpers import blob_images
from pyro.nn import PyroModule
from torch import nn

import pyro_vae
from pyro_vae.cli.fit import build_parser
from pyro_vae.cli.fit import main as fit_main
from pyro_vae.config import FitConfig
from pyro_vae.data import load_data
from pyro_vae.data.masks import drawn_masks
from pyro_vae.errors import ConfigError, DataError, InputError
from pyro_vae.models.likelihoods import Likelihood
from pyro_vae.models.missing import MaskedVAEModel
from pyro_vae.models.priors import StandardNormalPrior
from pyro_vae.models.vae import VAEModel
from pyro_vae.vae import VAE
from pyro_vae.variants import build_vae, checked

SIDE = 8  # tiny images: the runs here take seconds
SMALL = dict(epochs=1, hidden=(32,), latent_dim=4, batch_size=50, eval_k=20, seed=3)


# -- a linear-Gaussian (PPCA) VAE, whose conditional E[x_miss | x_obs] is known exactly ----------
class LinearGaussianLikelihood(Likelihood):
    """p(x | z) = N(x; decoder(z), sigma^2 I): with a linear decoder, probabilistic PCA."""

    def __init__(self, sigma: float):
        super().__init__()
        self.sigma = sigma

    def forward(self, params):
        return dist.Normal(params, self.sigma).to_event(3)


class WideProposal(PyroModule):
    """q(z | x) = N(0, 1.5^2 I), whatever x: a proposal that covers every posterior."""

    def __init__(self, latent_dim: int):
        super().__init__()
        self.latent_dim = latent_dim

    def distribution(self, x):
        zeros = torch.zeros(x.shape[0], self.latent_dim, dtype=x.dtype)
        return dist.Normal(zeros, 1.5).to_event(1)


P, D, SIGMA = 6, 2, 0.05


def ppca_vae():
    g = torch.Generator().manual_seed(1)
    weight = 0.15 * torch.randn(P, D, generator=g, dtype=torch.float64)  # W (P, D)
    bias = 0.5 + 0.05 * torch.randn(P, generator=g, dtype=torch.float64)  # b (P,)
    linear = nn.Linear(D, P).double()
    linear.weight.data, linear.bias.data = weight.clone(), bias.clone()
    decoder = nn.Sequential(linear, nn.Unflatten(1, (1, 1, P)))  # z (B, D) -> W z + b as (B, 1, 1, P)
    prior = StandardNormalPrior(D).double()
    vae = VAE(MaskedVAEModel(prior, decoder, LinearGaussianLikelihood(SIGMA)), WideProposal(D))
    vae.image_shape = (1, 1, P)
    return vae, weight, bias


def exact_conditional_mean(weight, bias, x, observed):
    """E[x_miss | x_obs] of x ~ N(b, W W^T + sigma^2 I): b_m + C_mo C_oo^-1 (x_o - b_o), per image."""
    cov = weight @ weight.T + SIGMA**2 * torch.eye(P, dtype=torch.float64)
    out = x.clone()
    for i in range(x.shape[0]):
        o, m = observed[i], ~observed[i]
        out[i, m] = bias[m] + cov[m][:, o] @ torch.linalg.solve(cov[o][:, o], x[i, o] - bias[o])
    return out


def ppca_images(weight, bias, n=5):
    g = torch.Generator().manual_seed(2)
    z = torch.randn(n, D, generator=g, dtype=torch.float64)
    x = (z @ weight.T + bias + SIGMA * torch.randn(n, P, generator=g, dtype=torch.float64)).clamp(0, 1)
    observed = torch.zeros(n, P, dtype=torch.bool)
    observed[:, : P // 2] = True  # the first half observed
    if n > 1:  # and another pattern
        observed[1] = torch.tensor([False, True, False, True, True, False])
    return x, observed


def test_ppca_imputation_is_the_exact_conditional_mean():
    vae, weight, bias = ppca_vae()
    x, observed = ppca_images(weight, bias)
    exact = exact_conditional_mean(weight, bias, x, observed)
    imputed = vae.impute(x.view(-1, 1, 1, P), observed.view(-1, 1, 1, P), k=20_000, seed=0).view(-1, P)
    assert torch.equal(imputed[observed], x[observed])  # the observed values as given
    error = (imputed - exact)[~observed].abs().max()
    assert error < 0.01, error
    # the control: the likelihood of every value, the missing ones taken as the zeros filled in,
    # gives the posterior of z given a wrong image (exact PPCA posterior of the zero-filled x)
    filled = x * observed
    m = weight.T @ weight + SIGMA**2 * torch.eye(D, dtype=torch.float64)
    z_mean = torch.linalg.solve(m, weight.T @ (filled - bias).T).T  # E[z | zero-filled x]   (B, D)
    unmasked = z_mean @ weight.T + bias
    assert (unmasked - exact)[~observed].abs().max() > 10 * 0.01


def test_ppca_multiple_imputations_scatter_as_the_exact_conditional():
    vae, weight, bias = ppca_vae()
    x, observed = ppca_images(weight, bias, n=1)
    x4, m4 = x.view(-1, 1, 1, P), observed.view(-1, 1, 1, P)
    draws = vae.impute(x4, m4, k=20_000, n=4000, seed=1).view(4000, P)
    assert torch.equal(draws[:, observed[0]], x[:, observed[0]].expand(4000, -1))
    exact = exact_conditional_mean(weight, bias, x, observed)[0]
    cov = weight @ weight.T + SIGMA**2 * torch.eye(P, dtype=torch.float64)
    o, mi = observed[0], ~observed[0]
    cond_cov = cov[mi][:, mi] - cov[mi][:, o] @ torch.linalg.solve(cov[o][:, o], cov[o][:, mi])
    assert (draws[:, mi].mean(0) - exact[mi]).abs().max() < 0.01
    assert torch.allclose(draws[:, mi].std(0), cond_cov.diagonal().sqrt(), rtol=0.1)
    assert len({tuple(d.tolist()) for d in draws[:50]}) == 50  # draws differ (not one per particle)


def test_impute_is_seeded_and_checks_its_mask():
    vae, weight, bias = ppca_vae()
    x, observed = ppca_images(weight, bias)
    x4, m4 = x.view(-1, 1, 1, P), observed.view(-1, 1, 1, P)
    assert torch.equal(vae.impute(x4, m4, k=50, seed=4), vae.impute(x4, m4.int(), k=50, seed=4))
    assert not torch.equal(vae.impute(x4, m4, k=50, seed=4), vae.impute(x4, m4, k=50, seed=5))
    with pytest.raises(InputError, match=r"mask must have x's shape \(5, 1, 1, 6\)"):
        vae.impute(x4, m4[:, :, :, :3], k=5)
    with pytest.raises(InputError, match="1 \\(observed\\) and 0 \\(missing\\) only"):
        vae.impute(x4, m4.double() * 0.5, k=5)
    none = m4.clone()
    none[2] = False
    with pytest.raises(InputError, match="observes no value of 1 image.*the first: image 2"):
        vae.impute(x4, none, k=5)


# -- masks ----------------------------------------------------------------------------------------
def test_drawn_masks_depend_on_seed_split_and_index_only():
    shape = (1, 5, 7)
    many = drawn_masks(0.5, 3, "train", shape, 2500)
    assert many.shape == (2500, *shape) and many.dtype == torch.bool
    assert torch.equal(drawn_masks(0.5, 3, "train", shape, 7), many[:7])  # image i's mask: any n > i
    assert (many.flatten(1).sum(1) == 35 - round(0.5 * 35)).all()  # exactly round(R * values) missing
    assert not torch.equal(drawn_masks(0.5, 4, "train", shape, 7), many[:7])
    assert not torch.equal(drawn_masks(0.5, 3, "test", shape, 7), many[:7])
    assert drawn_masks(0.0, 3, "train", shape, 4).all()
    assert len({tuple(m.flatten().tolist()) for m in many[:100]}) == 100  # a new mask per image


def test_zero_rate_builds_the_unmasked_vae_and_a_rate_the_masked_one():
    plain = build_vae(FitConfig(hidden=(16,), latent_dim=2), (1, SIDE, SIDE), 0)
    zero = build_vae(FitConfig(hidden=(16,), latent_dim=2, missing_rate=0.0), (1, SIDE, SIDE), 0)
    masked = build_vae(FitConfig(hidden=(16,), latent_dim=2, missing_rate=0.5), (1, SIDE, SIDE), 0)
    assert type(zero.model) is VAEModel and type(plain.model) is VAEModel
    assert zero.state_dict().keys() == plain.state_dict().keys()
    assert type(masked.model) is MaskedVAEModel
    first = next(p for n, p in masked.guide.named_parameters() if n.endswith("weight"))
    assert first.shape[1] == 2 * SIDE * SIDE  # the encoder reads [x * m, m]


@pytest.fixture(scope="module")
def blobs(tmp_path_factory):
    root = tmp_path_factory.mktemp("blobs")
    images = blob_images(400, SIDE, channels=1, seed=0)[..., 0]  # (N, H, W) uint8
    path = root / "blobs.npz"
    np.savez(path, images=images)
    return path, images


def test_a_zero_rate_trains_exactly_as_without_the_option(blobs, tmp_path):
    path, _ = blobs
    options = dict(SMALL, data=str(path), eval_k=0)
    a = pyro_vae.fit(out=str(tmp_path / "a"), **options)
    b = pyro_vae.fit(out=str(tmp_path / "b"), missing_rate=0.0, **options)
    sa = torch.load(tmp_path / "a" / "last.pt", weights_only=False)["networks"]
    sb = torch.load(tmp_path / "b" / "last.pt", weights_only=False)["networks"]
    assert sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)
    assert [r["test_elbo"] for r in a.metrics] == [r["test_elbo"] for r in b.metrics]
    assert type(b.vae.model) is VAEModel


# -- a run through the command line, then load(run).impute and the evaluation ---------------------
@pytest.fixture(scope="module")
def masked_run(blobs, tmp_path_factory):
    path, _ = blobs
    out = tmp_path_factory.mktemp("runs") / "masked"
    argv = ["--data", str(path), "--missing-rate", "0.5", "--elbo", "iwae", "--particles", "3", "--epochs", "1",
            "--hidden", "32", "--latent-dim", "4", "--batch-size", "50", "--eval-k", "20", "--seed", "3",
            "--out", str(out)]  # fmt: skip
    lines = []
    with redirect_stdout(_Lines(lines)):
        assert fit_main(argv) == 0  # python -m pyro_vae.fit, in this process
    return out, "".join(lines)


class _Lines(io.StringIO):
    def __init__(self, lines):
        super().__init__()
        self.lines = lines

    def write(self, text):
        self.lines.append(text)
        return len(text)


def test_the_cli_trains_with_missing_pixels_and_the_run_imputes(masked_run, blobs):
    out, stdout = masked_run
    assert "the observed values scored (--missing-rate 0.5)" in stdout
    config = json.loads((out / "config.json").read_text())
    assert config["missing_rate"] == 0.5 and config["data_mask"] is False
    assert (out / "imputations.png").is_file()
    vae = pyro_vae.load(out)
    dataset = load_data(vae.config, log=lambda _: None)
    x = (dataset.test.images[:10] > 0.5).float()
    mask = drawn_masks(0.5, 3, "test", (1, SIDE, SIDE), 10)
    imputed = vae.impute(x, mask, k=50)
    assert imputed.shape == x.shape
    assert torch.equal(imputed[mask], x[mask])
    missing = imputed[~mask]
    assert ((missing > 0) & (missing < 1)).all()  # conditional means of Bernoulli values
    draws = vae.impute(x, mask, k=50, n=3)
    assert draws.shape == (3, *x.shape) and torch.equal(draws[:, mask], x[mask].expand(3, -1))
    assert set(draws[:, ~mask].unique().tolist()) <= {0.0, 1.0}  # drawn pixels


def test_evaluate_reports_log_p_of_the_observed_values(masked_run):
    out, stdout = masked_run
    entry = json.loads((out / "eval.json").read_text())["test"]
    assert entry["quantity"].startswith("log p(x_observed)")
    assert entry["missing_fraction"] == pytest.approx(0.5, abs=0.01)
    assert "is log p(x_observed)" in stdout
    vae = pyro_vae.load(out)
    dataset = load_data(vae.config, log=lambda _: None)
    from pyro_vae.data import evaluation_images

    images, _ = evaluation_images(dataset.test, vae.config.binarize)
    full = vae.log_px(images, k=20).mean_log_px()  # every value scored: twice as many
    assert entry["log_px_mean"] > full + 5, (entry["log_px_mean"], full)  # half the values scored
    # the per-epoch ELBO scores the observed values too: above the full image's ELBO
    metrics = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert metrics[-1]["test_elbo"] > full


# -- a mask that comes with the data --------------------------------------------------------------
def test_a_mask_in_the_npz_is_used_and_recorded(blobs, tmp_path):
    _, images = blobs
    n = images.shape[0]
    rng = np.random.default_rng(0)
    mask = rng.random(images.shape) > 0.3
    mask[:, 0, 0] = True  # every image observes a value
    mask[:, 1, 1] = np.arange(n) % 2 == 0  # the pairing image <-> mask survives the split's shuffle
    marked = images.copy()
    marked[:, 2, 2] = np.where(np.arange(n) % 2 == 0, 255, 0)
    path = tmp_path / "masked.npz"
    np.savez(path, images=marked, mask=mask.astype(np.uint8))
    run = pyro_vae.fit(data=str(path), out=str(tmp_path / "run"), **dict(SMALL, eval_k=0))
    config = run.vae.config
    assert config.data_mask and config.missing_rate == 0 and type(run.vae.model) is MaskedVAEModel
    dataset = load_data(config, log=lambda _: None)
    for split in (dataset.train, dataset.valid, dataset.test):
        assert split.mask is not None and split.mask.shape == split.data.shape
        assert torch.equal(split.mask[:, 0, 1, 1], split.data[:, 0, 2, 2] == 255)
    from pyro_vae.variants.missing import split_masks

    assert torch.equal(split_masks(config, dataset.test), dataset.test.mask)
    with pytest.raises(ConfigError, match="drop --missing-rate to use the file's mask"):
        pyro_vae.fit(data=str(path), out=str(tmp_path / "both"), missing_rate=0.5, **dict(SMALL, eval_k=0))


@pytest.mark.parametrize(
    "mask, message",
    [
        (np.ones((400, SIDE, SIDE - 1)), r"the mask has shape \(400, 1, 8, 7\), the images \(400, 1, 8, 8\)"),
        (np.full((400, SIDE, SIDE), 2), "values other than 0 and 1 .*the first 2, image 0"),
        (np.pad(np.ones((399, SIDE, SIDE)), ((1, 0), (0, 0), (0, 0))), "1 images have no observed value.*image 0"),
    ],
)
def test_bad_masks_are_refused_with_what_is_wrong(blobs, tmp_path, mask, message):
    _, images = blobs
    path = tmp_path / "bad.npz"
    np.savez(path, images=images, mask=mask)
    with pytest.raises(DataError, match=message):
        load_data(FitConfig(data=str(path)), log=lambda _: None)


def test_missing_pixels_are_refused_where_they_do_not_apply():
    with pytest.raises(ConfigError, match="supported by --model vae.*--model cvae has no masked model"):
        checked(FitConfig(model="cvae", missing_rate=0.5))
    with pytest.raises(ConfigError, match="--jit traces the model without masks"):
        checked(FitConfig(missing_rate=0.5, jit=True))
    with pytest.raises(ConfigError, match=r"--missing-rate is the share .* in \[0, 1\), got 1.0"):
        FitConfig(missing_rate=1.0)


def test_the_flag_is_in_fit_help():
    text = build_parser().format_help()
    assert "--missing-rate MISSING_RATE" in text and "MIWAE with --elbo iwae" in text
