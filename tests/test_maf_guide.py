"""The masked-autoregressive-flow guide (--guide maf): its density against a brute-force change of
variables, the VampPrior's pair densities against the per-pair log_prob, and a trained run that
loads and evaluates. (Training from the CLI with every prior: test_priors_guides.)"""

import json
import math

import pytest
import torch
from test_train import cli_args
from torch import nn

import pyro_vae
from pyro_vae.cli.evaluate import main as evaluate_main
from pyro_vae.cli.fit import main as fit_main
from pyro_vae.guides import AmortizedMAF

LATENT, FEATURES = 3, 5


class SmallEncoder(nn.Module):
    feature_dim = FEATURES

    def __init__(self):
        super().__init__()
        self.layer = nn.Linear(4, FEATURES)

    def forward(self, x, y=None):
        return torch.tanh(self.layer(x))


@pytest.fixture
def maf_guide(one_thread):
    torch.manual_seed(0)
    guide = AmortizedMAF(SmallEncoder(), LATENT, flow_layers=2, flow_hidden=8).double()
    with torch.no_grad():  # scales away from 1, so a sign or direction error shows
        for flow in guide.flows:
            flow.nn.layers[-1].weight.mul_(3.0)
    return guide


def test_log_prob_is_the_change_of_variables_of_the_sampling_map(maf_guide):
    """z = G(z_0) with G the drawing map (each flow inverted, Pyro's D passes): log q(z) must be
    log N(z_0; mu, sigma) - log |det dG/dz_0|, the Jacobian taken by autograd in float64."""
    x = torch.randn(3, 4, dtype=torch.float64)
    h = maf_guide.features(x)
    base = maf_guide.distribution_from_features(h).base_dist
    z0 = base.sample()  # (3, D)
    for row in range(x.shape[0]):

        def draw(point, row=row):
            q = maf_guide.distribution_from_features(h[row : row + 1])
            for transform in q.transforms:
                point = transform(point)
            return point

        z = draw(z0[row : row + 1]).detach()
        jacobian = torch.autograd.functional.jacobian(draw, z0[row : row + 1]).reshape(LATENT, LATENT)
        expected = base.log_prob(z0)[row] - torch.linalg.slogdet(jacobian).logabsdet
        fresh = maf_guide.distribution_from_features(h[row : row + 1])  # no cached inverse
        assert fresh.log_prob(z).item() == pytest.approx(expected.item(), abs=1e-10)


def test_draws_are_differentiable_and_scored_by_their_density(maf_guide):
    h = maf_guide.features(torch.randn(4, 4, dtype=torch.float64))
    q = maf_guide.distribution_from_features(h)
    z = q.rsample()
    assert z.shape == (4, LATENT) and z.requires_grad
    z.sum().backward()
    assert maf_guide.loc_head.weight.grad.abs().sum() > 0
    assert maf_guide.flows[0].nn.layers[0].weight.grad.abs().sum() > 0
    fresh = maf_guide.distribution_from_features(h.detach())
    torch.testing.assert_close(q.log_prob(z), fresh.log_prob(z.detach()), rtol=0, atol=1e-10)


def test_pair_log_prob_equals_the_per_pair_log_prob_in_value_and_gradient(maf_guide):
    h = maf_guide.features(torch.randn(5, 4, dtype=torch.float64))  # 5 "pseudo-inputs"
    z = (2 * torch.randn(6, LATENT, dtype=torch.float64)).requires_grad_()
    pairs = maf_guide.pair_log_prob(z, h)
    assert pairs.shape == (6, 5)
    q = maf_guide.distribution_from_features(h)
    reference = q.log_prob(z.unsqueeze(-2).expand(6, 5, LATENT))
    torch.testing.assert_close(pairs, reference, rtol=0, atol=1e-10)
    weights = torch.randn(6, 5, dtype=torch.float64)
    parameters = [z, *maf_guide.parameters()]
    grads = torch.autograd.grad((pairs * weights).sum(), parameters, allow_unused=True, retain_graph=True)
    reference_grads = torch.autograd.grad((reference * weights).sum(), parameters, allow_unused=True)
    for got, want in zip(grads, reference_grads):
        if want is None:
            assert got is None
        else:
            torch.testing.assert_close(got, want, rtol=1e-9, atol=1e-10)


def test_a_vamp_maf_run_loads_and_evaluates(mnist_dataset, tmp_path):
    out = tmp_path / "run"
    args = cli_args(
        mnist_dataset, out, epochs=1, train_size=100, eval_size=40, prior="vamp", guide="maf",
        prior_components=5, flow_hidden=16,
    )  # fmt: skip
    assert fit_main(args) == 0
    vae = pyro_vae.load(out, checkpoint="last")
    assert isinstance(vae.guide, AmortizedMAF)
    for order, flow in zip(vae.guide.orders_on_host, vae.guide.flows):  # the loaded orders
        assert torch.equal(order, flow.nn.permutation.cpu())
    options = ["--k", "5", "--limit", "20", "--batch-size", "10", "--checkpoint", "last", "--curve-images", "0"]
    assert evaluate_main([str(out), *options, "--no-progress"]) == 0
    assert math.isfinite(json.loads((out / "eval.json").read_text())["test"]["log_px_mean"])
