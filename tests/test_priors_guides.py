"""Swappable priors and guides: normalisation, sampling, gradients, change of variables, and every
prior x guide pair training from the CLI."""

import itertools
import json
import math

import pytest
import torch
from test_train import cli_args

from pyro_vae.cli.fit import main
from pyro_vae.config import FitConfig, config_fields
from pyro_vae.errors import ConfigError
from pyro_vae.guides import GUIDES
from pyro_vae.models import PRIORS
from pyro_vae.variants import build_vae

IMAGE_SHAPE = (1, 28, 28)
PROPOSAL_SCALE = 3.0  # wide Gaussian proposal for the importance-sampling checks
SAMPLES = 200_000


def prior_of(name, latent_dim=2):
    config = FitConfig(prior=name, latent_dim=latent_dim, hidden=(16,), prior_components=4)
    return build_vae(config, IMAGE_SHAPE).model.prior


@pytest.mark.parametrize("name", PRIORS.names())
def test_prior_log_prob_integrates_to_one(name):
    """E_r[p(z) / r(z)] = integral of p = 1, with r = N(0, 3^2 I) in two dimensions."""
    torch.manual_seed(0)
    with torch.no_grad():
        p = prior_of(name)()
        r = torch.distributions.Independent(torch.distributions.Normal(torch.zeros(2), PROPOSAL_SCALE), 1)
        z = r.sample((SAMPLES,))
        ratio = torch.exp(p.log_prob(z) - r.log_prob(z))  # (S,)
    estimate = ratio.mean().item()
    standard_error = ratio.std().item() / math.sqrt(SAMPLES)
    assert abs(estimate - 1) < 5 * standard_error + 1e-3, (estimate, standard_error)


@pytest.mark.parametrize("name", PRIORS.names())
def test_prior_samples_match_its_log_prob(name):
    """The mean of samples equals E_p[z] computed from log_prob by importance sampling."""
    torch.manual_seed(1)
    with torch.no_grad():
        p = prior_of(name)()
        sample_mean = p.sample((SAMPLES,)).mean(0)
        r = torch.distributions.Independent(torch.distributions.Normal(torch.zeros(2), PROPOSAL_SCALE), 1)
        z = r.sample((SAMPLES,))
        w = torch.softmax(p.log_prob(z) - r.log_prob(z), 0)  # self-normalised weights (S,)
        weighted_mean = (w[:, None] * z).sum(0)
    # both are Monte-Carlo estimates of the same mean; the latent scale is O(1)
    assert torch.allclose(sample_mean, weighted_mean, atol=0.05), (sample_mean, weighted_mean)


def test_vampprior_gradients_reach_the_pseudo_inputs():
    prior = prior_of("vamp")
    z = torch.randn(8, 2)
    loss = -prior().log_prob(z).sum()
    loss.backward()
    grad = prior.pseudo_weights.grad
    assert grad is not None and grad.abs().sum() > 0
    # and they were initialised as in Tomczak & Welling's code: hardtanh(N(0.05, 0.01^2))
    u = prior.pseudo_inputs()
    assert u.shape == (4, *IMAGE_SHAPE) and 0.0 <= u.min() and u.max() <= 0.1


def test_flow_guide_log_prob_is_the_change_of_variables():
    """log q(z|x) = log q0(z0|x) - log |det dz/dz0|, the Jacobian taken by autograd."""
    torch.manual_seed(2)
    config = FitConfig(guide="iaf", latent_dim=3, hidden=(16,), flow_layers=2, flow_hidden=8)
    guide = build_vae(config, IMAGE_SHAPE).guide
    x = torch.rand(1, *IMAGE_SHAPE).round()
    q = guide.distribution(x)
    transform = torch.distributions.transforms.ComposeTransform(q.transforms)
    z0 = q.base_dist.sample()  # (1, 3)

    def flow(v):  # R^3 -> R^3
        return transform(v[None])[0]

    jacobian = torch.autograd.functional.jacobian(flow, z0[0])  # (3, 3)
    expected = q.base_dist.log_prob(z0) - torch.linalg.slogdet(jacobian).logabsdet
    z = transform(z0)
    assert torch.allclose(q.log_prob(z), expected, atol=1e-4)
    assert not torch.allclose(z, z0)  # the flow does something


@pytest.mark.parametrize("guide", GUIDES.names())
def test_every_guide_is_reparameterized(guide):
    config = FitConfig(guide=guide, latent_dim=3, hidden=(16,), flow_hidden=8)
    q = build_vae(config, IMAGE_SHAPE).guide.distribution(torch.rand(4, *IMAGE_SHAPE).round())
    assert q.has_rsample and q.batch_shape == (4,) and q.event_shape == (3,)


def test_config_offers_exactly_the_registered_priors_and_guides():
    from pyro_vae.config_values import field_choices

    choices = {f.name: field_choices(f) for f in config_fields()}
    assert tuple(PRIORS.names()) == choices["prior"]
    assert tuple(GUIDES.names()) == choices["guide"]


@pytest.mark.parametrize(
    "prior, guide", [("mog", "diag"), ("vamp", "diag"), ("standard", "iaf"), ("standard", "lowrank")]
)
def test_meanfield_without_analytic_kl_is_refused(prior, guide):
    with pytest.raises(ConfigError, match=f"--elbo meanfield needs the KL .* --guide {guide} with --prior {prior}"):
        build_vae(FitConfig(prior=prior, guide=guide, elbo="meanfield", hidden=(8,)), IMAGE_SHAPE)


@pytest.mark.parametrize("prior, guide", list(itertools.product(PRIORS.names(), GUIDES.names())))
def test_every_prior_guide_pair_trains_from_the_cli(mnist_dataset, tmp_path, prior, guide):
    out = tmp_path / "run"
    args = cli_args(
        mnist_dataset,
        out,
        epochs=2,
        train_size=200,
        eval_size=50,
        prior=prior,
        guide=guide,
        prior_components=5,
        flow_hidden=16,
    )
    assert main(args) == 0
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert all(math.isfinite(r["test_elbo"]) for r in records)
    assert records[-1]["train_elbo"] > records[0]["train_elbo"] - 1.0  # learning, not diverging
