"""The conditional VAE and the semi-supervised M2 model: exact enumeration, label-summed log p(x)
against a closed form, trained models that use their labels, the generate command, bad input."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pyro
import pyro.distributions as dist
import pytest
import torch
from PIL import Image
from pyro.infer import TraceEnum_ELBO, config_enumerate
from pyro.nn import PyroModule
from test_train import cli_args

import pyro_vae
from pyro_vae.cli.fit import main as fit_main
from pyro_vae.cli.generate import main as generate_main
from pyro_vae.config import FitConfig
from pyro_vae.errors import ConfigError, PyroVAEError
from pyro_vae.evaluation import importance_weighted_log_px, label_summed_log_px
from pyro_vae.labels import balanced_labelled_subset
from pyro_vae.variants import build_vae, check

C = 10  # MNIST's labels


def binary_images(mnist_dataset, n: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.bernoulli(mnist_dataset.test.images[:n], generator=g)


# -- M2's enumeration is exact ------------------------------------------------------------------


def test_m2_enumerated_elbo_equals_the_hand_summed_elbo_over_the_ten_labels(mnist_dataset, one_thread):
    vae = build_vae(FitConfig(model="m2", latent_dim=3, hidden=(32,)), (1, 28, 28))
    x = binary_images(mnist_dataset, 4)
    pyro.set_rng_seed(7)
    enumerated = -TraceEnum_ELBO(max_plate_nesting=1).loss(vae.model, config_enumerate(vae.guide), x)

    # By hand: U(x) = sum_y q(y|x) [log p(x|z_y,y) + log p(y) + log p(z_y) - log q(z_y|x,y) - log q(y|x)]
    # with z_y ~ q(z|x,y) drawn as TraceEnum_ELBO draws it: one (C, B, D) draw after the same seed.
    pyro.set_rng_seed(7)
    with torch.no_grad():
        labels = torch.arange(C)[:, None].expand(C, x.shape[0])  # (C, B)
        log_q_y = vae.guide.label_distribution(x).logits.log_softmax(-1).T  # (C, B)
        q_z = vae.guide.distribution(x, labels)  # batch (C, B)
        z = q_z.rsample()  # (C, B, D)
        log_p_x = vae.model.decode(z, labels).log_prob(x)  # (C, B)
        log_p_y = math.log(1 / C)
        log_p_z = dist.Normal(0.0, 1.0).log_prob(z).sum(-1)  # (C, B)
        per_label = log_p_x + log_p_y + log_p_z - q_z.log_prob(z) - log_q_y  # (C, B)
        by_hand = (log_q_y.exp() * per_label).sum()
    assert enumerated == pytest.approx(float(by_hand), rel=1e-5)
    # and it differs from one label's ELBO: the sum over labels really happened
    assert abs(enumerated - float(per_label[0].sum())) > 1.0


def test_balanced_weighting_multiplies_the_labelled_part_by_n_unlabelled_over_n_labelled(mnist_dataset, one_thread):
    from pyro_vae.objectives import SemiSupervisedLoss

    vae = build_vae(FitConfig(model="m2", latent_dim=3, hidden=(32,)), (1, 28, 28))
    x = binary_images(mnist_dataset, 7)
    xu, xl, yl = x[:4], x[4:], mnist_dataset.test.labels[4:7]

    def objective(alpha, balanced):
        return SemiSupervisedLoss(vae.model, vae.guide, 600, 40, alpha, balanced=balanced)

    scales = (600 / 4, 40 / 3, 1.0)  # N_u / B_u, N_l / B_l, beta
    counted, balanced = objective(0.1, False), objective(0.1, True)
    losses = {}
    for name, loss_fn in (("counted", counted), ("balanced", balanced)):
        pyro.set_rng_seed(1)
        losses[name] = float(loss_fn(xu, xl, yl, *scales).detach())
    pyro.set_rng_seed(1)
    unlabelled = float(counted.unlabelled_loss(xu, 600 / 4).detach())
    labelled = losses["counted"] - unlabelled  # -[L(x, y) sum + alpha N mean log q(y|x)], counted once
    assert losses["balanced"] == pytest.approx(unlabelled + 600 / 40 * labelled, rel=1e-5)
    # and the classification term really is alpha N mean log q(y|x): take it away by hand
    with torch.no_grad():
        log_q = vae.guide.label_distribution(xl).log_prob(yl).mean()
    pyro.set_rng_seed(1)
    without = float(objective(0.0, False)(xu, xl, yl, *scales).detach())
    assert losses["counted"] == pytest.approx(without - 0.1 * 640 * float(log_q), rel=1e-5)


def test_m2_losses_take_the_data_scale_through_the_one_wrapper(mnist_dataset, monkeypatch, one_thread):
    """A labelled (and an unlabelled) batch's loss with data scale s is s times its unscaled loss
    (the classification term included), and both parts run their programs through
    :class:`pyro_vae.objectives.Scaled`, the wrapper of the plain ELBO's programs."""
    from pyro_vae import objectives
    from pyro_vae.objectives import SemiSupervisedLoss

    vae = build_vae(FitConfig(model="m2", latent_dim=3, hidden=(32,)), (1, 28, 28))
    x = binary_images(mnist_dataset, 7)
    xu, xl, yl = x[:4], x[4:], mnist_dataset.test.labels[4:7]
    loss = SemiSupervisedLoss(vae.model, vae.guide, 600, 40, alpha=0.1)
    wrapped, forward = [], objectives.Scaled.forward
    monkeypatch.setattr(
        objectives.Scaled, "forward", lambda self, *args: (wrapped.append(args[2:]), forward(self, *args))[1]
    )
    s = 40 / 3
    for args, scaled_args in (
        ((None, xl, yl), (None, xl, yl, 1.0, s, 0.5)),
        ((xu, None, None), (xu, None, None, s, 1.0, 0.5)),
    ):
        pyro.set_rng_seed(2)
        scaled = float(loss(*scaled_args).detach())
        pyro.set_rng_seed(2)
        plain = float(loss(*args, 1.0, 1.0, 0.5).detach())
        assert scaled == pytest.approx(s * plain, rel=1e-5)
    assert (s, 0.5) in wrapped and (1.0, 0.5) in wrapped  # model and guide, both parts


class MixtureOfPPCA(PyroModule):
    """y ~ Cat(pi), z ~ N(0, I), x | z, y ~ N(W_y z + b_y, s^2 I): log p(x) has a closed form, and
    the guide below is the exact posterior q(z | x, y), so every importance weight is p(x, y)."""

    def __init__(self, classes=3, data_dim=5, latent_dim=2, s=0.4):
        super().__init__()
        g = torch.Generator().manual_seed(3)
        self.w = torch.randn(classes, data_dim, latent_dim, generator=g, dtype=torch.float64)
        self.b = 2 * torch.randn(classes, data_dim, generator=g, dtype=torch.float64)
        self.pi = torch.tensor([0.2, 0.5, 0.3], dtype=torch.float64)
        self.s = s

    def model(self, x, y=None):
        with pyro.plate("data", x.shape[0], dim=-1):
            y = pyro.sample("y", dist.Categorical(self.pi), obs=y)
            z = pyro.sample("z", dist.Normal(torch.zeros(2, dtype=torch.float64), 1.0).to_event(1))
            loc = (self.w[y] @ z.unsqueeze(-1)).squeeze(-1) + self.b[y]
            pyro.sample("x", dist.Normal(loc, self.s).to_event(1), obs=x)

    def posterior(self, x, y):
        w, b = self.w[y], self.b[y]  # (B, P, D), (B, P)
        m = w.transpose(-1, -2) @ w + self.s**2 * torch.eye(2, dtype=torch.float64)
        cov = self.s**2 * torch.linalg.inv(m)
        mean = (torch.linalg.inv(m) @ w.transpose(-1, -2) @ (x - b).unsqueeze(-1)).squeeze(-1)
        return dist.MultivariateNormal(mean, cov)

    def guide(self, x, y=None):
        with pyro.plate("data", x.shape[0], dim=-1):
            if y is None:  # any q(y|x) will do: the sum over y is exact
                y = pyro.sample("y", dist.Categorical(logits=torch.zeros(x.shape[0], 3, dtype=torch.float64)))
            pyro.sample("z", self.posterior(x, y))

    def log_px(self, x):
        terms = []
        for c in range(3):
            cov = self.w[c] @ self.w[c].T + self.s**2 * torch.eye(5, dtype=torch.float64)
            terms.append(self.pi[c].log() + dist.MultivariateNormal(self.b[c], cov).log_prob(x))
        return torch.logsumexp(torch.stack(terms), 0)


@pytest.mark.parametrize("k", [1, 7])
def test_label_summed_log_px_is_exact_with_exact_posteriors(k, one_thread):
    mix = MixtureOfPPCA()
    x = 2 * torch.randn(6, 5, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    est = label_summed_log_px(mix.model, mix.guide, x, num_classes=3, k=k, return_log_weights=True)
    assert torch.allclose(est.log_px, mix.log_px(x), atol=1e-9)
    # sanity of the bookkeeping: ESS counts all 3 K weights; the ELBO is below log p(x) by KL(q(y|x)||p(y|x))
    assert est.log_weights.shape == (6, 3 * k) and bool((est.ess <= 3 * k + 1e-9).all())
    assert bool((est.elbo <= est.log_px + 1e-9).all())


# -- trained models use their labels -------------------------------------------------------------


@pytest.fixture(scope="module")
def cvae_run(mnist_dataset, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("cvae") / "run"
    args = cli_args(
        mnist_dataset,
        out,
        model="cvae",
        prior="learned",
        train_size=2000,
        epochs=8,
        latent_dim=8,
        hidden=(256,),
        batch_size=100,
    )
    assert fit_main(args) == 0
    return out


def test_cvae_writes_its_pictures_and_log_p_x_given_the_true_label_wins(cvae_run, mnist_dataset):
    for name in ("samples.png", "analogies.png", "reconstructions.png", "latent_map.png", "curves.png"):
        assert (cvae_run / name).is_file(), name
    with Image.open(cvae_run / "samples.png") as image:
        assert image.size == (10 * 30 + 2, 10 * 30 + 2)  # 10 labels x 10 samples
    with Image.open(cvae_run / "analogies.png") as image:
        assert image.size == (12 * 30 + 2, 11 * 30 + 2)  # source row + 10 labels, 12 styles
    vae = pyro_vae.load(cvae_run)
    x, y = binary_images(mnist_dataset, 100), mnist_dataset.test.labels[:100]
    log_p = torch.stack(
        [importance_weighted_log_px(vae.model, vae.guide, x, torch.full_like(y, c), k=20).log_px for c in range(C)], 1
    )  # log p(x | y = c)  (100, C)
    true = log_p.gather(1, y[:, None])
    beaten = (true > log_p).sum(1).double() / (C - 1)  # share of the other labels beaten, per image
    assert float(beaten.mean()) > 0.9, float(beaten.mean())
    # Bayes' rule as a classifier, argmax_y p(x | y): 0.69 here after 8 short epochs; chance is 0.1
    assert float((log_p.argmax(1) == y).double().mean()) > 0.5


def test_generate_writes_a_valid_grid_for_each_label(cvae_run):
    for label in range(C):
        out = cvae_run / f"seven_{label}.png"
        assert generate_main([str(cvae_run), "--label", str(label), "--n", "6", "--out", str(out)]) == 0
        with Image.open(out) as image:
            assert image.format == "PNG" and image.size == (3 * 30 + 2, 2 * 30 + 2)
            assert image.convert("L").getextrema()[0] < image.convert("L").getextrema()[1]  # not blank
    assert generate_main([str(cvae_run), "--n", "4", "--analogies", "5"]) == 0
    with Image.open(cvae_run / "analogies_prior.png") as image:
        assert image.size == (5 * 30 + 2, 10 * 30 + 2)
    # the sampled digits are the asked-for ones: a loaded model samples label 3 -> E[x] of threes
    vae = pyro_vae.load(cvae_run)
    threes, ones = vae.sample(64, label=3), vae.sample(64, label=1)
    assert float(threes.mean()) > float(ones.mean())  # a 3 lights more pixels than a 1


M2_OPTIONS = dict(model="m2", labels=100, train_size=1500, latent_dim=8, hidden=(256,), batch_size=100)


@pytest.fixture(scope="module")
def m2_run(mnist_dataset, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("m2") / "run"
    assert fit_main(cli_args(mnist_dataset, out, epochs=3, **M2_OPTIONS)) == 0
    return out


def test_m2_with_few_labels_beats_chance_and_writes_accuracy(m2_run, mnist_dataset):
    out = m2_run
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert all(0 <= r["test_accuracy"] <= 1 and 0 <= r["valid_accuracy"] <= 1 for r in records)
    assert records[-1]["test_accuracy"] > 0.4, records[-1]["test_accuracy"]  # chance: 0.1
    for name in ("confusion_matrix.png", "samples.png", "analogies.png", "labelled_indices.json"):
        assert (out / name).is_file(), name
    chosen = json.loads((out / "labelled_indices.json").read_text())["indices_into_training_set"]
    labels = mnist_dataset.train.labels[:1500][chosen]
    assert torch.equal(labels.bincount(minlength=C), torch.full((C,), 10))  # class-balanced
    vae = pyro_vae.load(out)
    x = binary_images(mnist_dataset, 10)
    probs = vae.classify(x)
    assert probs.shape == (10, C) and torch.allclose(probs.sum(1), torch.ones(10))
    assert vae.sample(5, label=4).shape == (5, 1, 28, 28)
    # without a label, reconstruction uses the classifier's: the same as passing argmax q(y|x)
    assert torch.equal(vae.reconstruct(x), vae.reconstruct(x, probs.argmax(1)))


def test_interleaved_labelled_steps_follow_pyros_tutorial_and_weigh_each_image_as_j_alpha(
    mnist_dataset, tmp_path, one_thread
):
    """--labelled-steps interleaved: one pass over the labelled set per epoch, in steps of its own
    at the tutorial's positions (i % every == 1); every step's loss is its batch's sum times the
    epoch's steps, for both kinds, so the counted 46-per-image weighting is kept."""
    from test_train import small_config

    from pyro_vae.engine import Trainer

    # 600 images, 100 labelled: 5 unlabelled batches of 100 and 1 labelled batch -> 6 steps
    config = small_config(
        mnist_dataset,
        tmp_path,
        model="m2",
        labels=100,
        train_size=600,
        batch_size=100,
        hidden=(32,),
        labelled_steps="interleaved",
        labelled_weight="counted",
    )
    variant = Trainer(config, mnist_dataset, tmp_path, torch.device("cpu"), log=lambda _: None).variant
    assert len(variant) == 6 and variant.labelled_step_indices() == [1]
    steps = list(variant.training_batches())
    assert [x_l is not None for _, x_l, *_ in steps] == [False, True, False, False, False, False]
    assert all((x_u is None) != (x_l is None) for x_u, x_l, *_ in steps)  # one kind per step
    assert sum(x_u.shape[0] for x_u, *_ in steps if x_u is not None) == 500  # each unlabelled image once
    _, x_l, y_l, *_ = steps[1]
    assert x_l.shape[0] == 100 and torch.equal(y_l.bincount(minlength=C), torch.full((C,), 10))
    loss = variant.loss
    assert all(step[3:] == (6, 6, 1.0) for step in steps)  # the epoch's steps, one process; beta 1
    x_u = steps[0][0]
    for step_args, part in (
        (steps[0], lambda: loss.unlabelled_loss(x_u)),
        (steps[1], lambda: loss.labelled_loss(x_l, y_l)),
    ):
        pyro.set_rng_seed(3)
        step = float(loss(*step_args).detach())
        pyro.set_rng_seed(3)  # the batch's plain sum (scales 1)
        assert step == pytest.approx(6 * float(part().detach()), rel=1e-5)
    # the tutorial's rule spreads several labelled batches evenly: 3,000 labels in batches of 200
    # among 235 unlabelled batches -> every 16th step from step 1 (as the tutorial's comment says)
    variant.labelled_batches = range(15)
    variant.batches = range(235)
    assert variant.labelled_step_indices() == list(range(1, 250, 16))[:15]
    with pytest.raises(ValueError, match="needs an unlabelled batch, a labelled batch, or both"):
        loss(None, None, None)


@pytest.mark.parametrize("labelled_steps", ["paired", "interleaved"])
def test_m2_resume_continues_exactly(mnist_dataset, tmp_path, labelled_steps):
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    options = dict(M2_OPTIONS, train_size=600, hidden=(32,), labelled_steps=labelled_steps)
    assert fit_main(cli_args(mnist_dataset, straight, epochs=2, **options)) == 0
    assert fit_main(cli_args(mnist_dataset, resumed, epochs=1, **options)) == 0
    assert fit_main(["--resume", str(resumed), "--epochs", "2"]) == 0
    a = torch.load(straight / "last.pt", weights_only=True)["networks"]
    b = torch.load(resumed / "last.pt", weights_only=True)["networks"]
    for key, value in a.items():  # labelled and unlabelled batch streams both restored
        assert torch.equal(value, b[key]), key
    records = [json.loads(line) for line in (straight / "metrics.jsonl").read_text().splitlines()]
    assert records[-1]["step"] == 2 * (6 if labelled_steps == "interleaved" else 5)  # 500 unlabelled / 100


def test_evaluate_gives_log_p_x_given_y_for_cvae_and_summed_over_y_for_m2(cvae_run, m2_run, mnist_dataset):
    from pyro_vae.engine.evaluate import evaluate_run

    cvae = evaluate_run(cvae_run, k=8, limit=40, batch_size=20, curve_images=20, progress=False, log=lambda _: None)
    m2 = evaluate_run(m2_run, k=8, limit=40, batch_size=20, curve_images=20, progress=False, log=lambda _: None)
    assert cvae["quantity"].startswith("log p(x | y)") and m2["quantity"].startswith("log p(x) = log sum_y")
    for entry in (cvae, m2):
        assert entry["n_images"] == 40 and entry["log_px_mean"] >= entry["elbo_mean"]
        assert math.isfinite(entry["log_px_mean"]) and entry["log_px_mean"] < 0
    # the driver agrees with summing the ten per-label estimates by hand
    vae = pyro_vae.load(m2_run)
    from pyro_vae.data import evaluation_images

    x = evaluation_images(mnist_dataset.test, "dynamic", 0)[0][:20]
    summed = label_summed_log_px(vae.model, vae.guide, x, num_classes=C, k=8)
    each = torch.stack(
        [importance_weighted_log_px(vae.model, vae.guide, x, torch.full((20,), c), k=8).log_px for c in range(C)]
    )
    assert torch.allclose(summed.log_px, torch.logsumexp(each, 0), atol=1e-9)


# -- labelled subsets and bad input --------------------------------------------------------------


def test_labelled_subset_is_balanced_seeded_and_within_the_data(mnist_dataset):
    labels = mnist_dataset.train.labels[:3000]
    a = balanced_labelled_subset(labels, 100, C, seed=0)
    assert torch.equal(a, balanced_labelled_subset(labels, 100, C, seed=0))
    assert not torch.equal(a, balanced_labelled_subset(labels, 100, C, seed=1))
    assert torch.equal(labels[a].bincount(minlength=C), torch.full((C,), 10)) and len(set(a.tolist())) == 100


@pytest.mark.parametrize(
    "labels, message",
    [
        (105, "cannot be split into 10 equal classes"),
        (5, "cannot be split into 10 equal classes"),
        (400, "at least as many labelled images as the training set"),
    ],
)
def test_bad_labels_are_clear_errors(mnist_dataset, tmp_path, capsys, labels, message):
    args = cli_args(mnist_dataset, tmp_path / "run", model="m2", labels=labels, epochs=1)
    assert fit_main(args) == 2
    assert message in capsys.readouterr().err


@pytest.mark.parametrize(
    "options, message",
    [
        (dict(labels=100), "--labels picks the labelled images of --model m2"),
        (dict(model="cvae", prior="vamp"), "--model cvae takes --prior standard or learned"),
        (dict(model="m2", elbo="meanfield"), "use --elbo trace"),
        (dict(model="m2", alpha=-1.0), "--alpha must be >= 0"),
        (dict(model="m2", labelled_weight="some"), "--labelled-weight 'some' is not one of"),
    ],
)
def test_conflicting_options_are_refused(options, message):
    with pytest.raises(ConfigError, match=message):
        check(FitConfig(**options))


def test_labels_outside_the_classes_and_labels_on_a_plain_vae(cvae_run, tmp_path, capsys):
    vae = pyro_vae.load(cvae_run)
    with pytest.raises(ConfigError, match="label 10 is outside 0-9"):
        vae.sample(3, label=10)
    with pytest.raises(ConfigError, match="label -1 is outside 0-9"):
        vae.sample(3, label=[1, -1, 2])
    with pytest.raises(ConfigError, match=r"got \(2,\) labels for 3 images"):
        vae.sample(3, label=[1, 2])
    with pytest.raises(ConfigError, match="needs a semi-supervised run"):
        vae.classify(torch.zeros(1, 1, 28, 28))
    with pytest.raises(ConfigError, match="pass the labels y"):
        vae.model(torch.zeros(2, 1, 28, 28))
    assert generate_main([str(cvae_run), "--label", "11"]) == 2
    assert "label 11 is outside 0-9" in capsys.readouterr().err
    plain = build_vae(FitConfig(latent_dim=2, hidden=(16,)), (1, 28, 28))
    with pytest.raises(ConfigError, match="needs a conditional run"):
        plain.sample(2, label=3)
    with pytest.raises(PyroVAEError, match="pass labels=None"):
        from pyro_vae.evaluation import evaluate_log_px

        evaluate_log_px(
            plain.model, plain.guide, torch.zeros(2, 1, 28, 28), torch.zeros(2), k=1, batch_size=2, sum_over_labels=10
        )
