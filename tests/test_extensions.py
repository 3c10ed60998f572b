"""Own model pieces from outside the package (tests/extensions_example.py) and the Python API:
trained from the CLI (a subprocess, the module found on PYTHONPATH) and from ``pyro_vae.fit``,
reloaded and evaluated; one ELBO check for every route; checkpoints that do not match their
config refused; ``vae.log_px`` equal to ``evaluate``'s numbers; input checks that name shapes."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from extensions_example import FullCovarianceGuide, LaplacePrior, StudentTPrior

import pyro_vae
from pyro_vae import FitConfig, build_vae
from pyro_vae.data import binarize_fixed, evaluation_images
from pyro_vae.engine import Trainer
from pyro_vae.engine.evaluate import evaluate_run
from pyro_vae.errors import CheckpointError, ConfigError, InputError
from pyro_vae.evaluation import evaluate_log_px
from pyro_vae.models import PRIORS
from pyro_vae.variants import resolve_defaults

ROOT = Path(__file__).parent.parent
TESTS = Path(__file__).parent
SMALL = dict(train_size=400, eval_size=200, latent_dim=4, hidden=(64,), batch_size=50, epochs=2)
LAPLACE = "extensions_example:LaplacePrior"
FULLCOV = "extensions_example:FullCovarianceGuide"


def data_dir_of(dataset) -> str:
    return str(Path(dataset.root).parent.parent)  # root is <data dir>/MNIST/raw


def _env(*paths) -> dict:
    return {**os.environ, "PYTHONPATH": os.pathsep.join(map(str, paths)), "OMP_NUM_THREADS": "1"}


def _cli(tool, *args, env, cwd) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", f"pyro_vae.{tool}", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
        cwd=cwd,
    )


GIVEN = {}  # the guide object handed to pyro_vae.fit


@pytest.fixture(scope="module")
def python_run(mnist_dataset, tmp_path_factory):
    """A Laplace prior (a class) and a full-covariance guide (an object) through pyro_vae.fit."""
    import pyro

    from pyro_vae.nets import NetSpec, build_encoder

    pyro.settings.set(module_local_params=True)
    out = tmp_path_factory.mktemp("api") / "run"
    GIVEN["guide"] = FullCovarianceGuide(build_encoder("mlp", NetSpec((1, 28, 28), 4, (64,))), 4)
    return pyro_vae.fit(
        prior=LaplacePrior, guide=GIVEN["guide"], data_dir=data_dir_of(mnist_dataset), out=str(out), **SMALL
    )


def test_fit_from_python_records_and_reloads_own_pieces(python_run, mnist_dataset):
    run = python_run
    saved = json.loads((run.out / "config.json").read_text())
    assert saved["prior"] == LAPLACE and saved["guide"] == FULLCOV  # import paths, not names
    assert isinstance(run.vae.model.prior, LaplacePrior) and isinstance(run.vae.guide, FullCovarianceGuide)
    assert len(run.metrics) == 2 and run.final["test_elbo"] == run.metrics[-1]["test_elbo"]
    assert run.metrics[-1]["valid_elbo"] > run.metrics[0]["valid_elbo"] - 5  # it trained, no collapse
    # the returned VAE is best.pt reloaded: the same weights as a fresh load
    again = pyro_vae.load(run.out)
    for (k, a), (_, b) in zip(run.vae.state_dict().items(), again.state_dict().items()):
        assert torch.equal(a, b), k
    # the learned Laplace scales moved away from their start, and are what load gives back
    assert not torch.allclose(again.model.prior.scale, torch.full((4,), 2**-0.5))
    # the guide object given is the one trained: its weights are those of the last checkpoint
    last = pyro_vae.load(run.out, checkpoint="last").guide.state_dict()
    for k, v in GIVEN["guide"].state_dict().items():
        assert torch.equal(v, last[k]), k


def test_log_px_of_the_api_equals_evaluate(python_run, mnist_dataset):
    """vae.log_px on the evaluation images gives evaluate's numbers (same estimator, same seed)."""
    n = 40
    entry = evaluate_run(python_run.out, k=30, limit=n, curve_images=0, progress=False, log=lambda _: None)
    images, _ = evaluation_images(mnist_dataset.test, "dynamic", python_run.config.seed)
    result = python_run.vae.log_px(images[:n], k=30, seed=0)
    assert result.log_px.shape == (n,) and result.ess.shape == (n,) and result.khat.shape == (n,)
    assert result.summary()["log_px_mean"] == pytest.approx(entry["log_px_mean"], abs=1e-9)
    assert result.summary()["elbo_mean"] == pytest.approx(entry["elbo_mean"], abs=1e-9)
    assert (result.log_px >= result.elbo - 1e-9).all()  # logmeanexp >= mean, on the same samples
    assert "split" not in result.table().splitlines()[0]  # no "split -:" for given images


def test_own_pieces_from_the_cli_train_reload_evaluate_generate(mnist_dataset, tmp_path):
    out = tmp_path / "cli"
    args = []
    for key, value in SMALL.items():
        args += [f"--{key.replace('_', '-')}", ",".join(map(str, value)) if isinstance(value, tuple) else value]
    env = _env(ROOT, TESTS)
    done = _cli(
        "fit",
        "--prior",
        LAPLACE,
        "--guide",
        FULLCOV,
        "--data-dir",
        data_dir_of(mnist_dataset),
        "--out",
        out,
        *args,
        env=env,
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert json.loads((out / "config.json").read_text())["prior"] == LAPLACE
    done = _cli("evaluate", out, "--k", 30, "--limit", 20, "--curve-images", 0, "--no-progress", env=env, cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    assert json.loads((out / "eval.json").read_text())["test"]["n_images"] == 20
    done = _cli("generate", out, "--n", 4, env=env, cwd=tmp_path)
    assert done.returncode == 0 and (out / "generated.png").is_file(), done.stderr
    # without the module on the path, evaluate says which import failed (no traceback)
    done = _cli("evaluate", out, "--k", 2, "--limit", 2, env=_env(ROOT), cwd=tmp_path)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert "cannot import extensions_example" in done.stderr and "config.json" in done.stderr
    # a typo in an import path is refused before any work
    done = _cli("fit", "--prior", "extensions_example:LaplacePriorr", "--out", tmp_path / "x", env=env, cwd=tmp_path)
    assert done.returncode == 2 and "has no LaplacePriorr" in done.stderr, done.stderr


@pytest.fixture
def registered_laplace():
    PRIORS.register("laplace")(LaplacePrior)
    PRIORS.register("laplace-here")(lambda latent_dim: LaplacePrior(latent_dim))
    yield
    for name in ("laplace", "laplace-here"):
        PRIORS._factories.pop(name)


def test_a_registered_name_is_a_choice_and_is_recorded_by_import_path(registered_laplace):
    from pyro_vae.cli.fit import build_parser

    assert "laplace" in build_parser().format_help()  # the registry is read when the choices are
    # config.json records what a fresh process rebuilds without registering; a lambda has no import path
    assert resolve_defaults(FitConfig(prior="laplace")).prior == LAPLACE
    assert resolve_defaults(FitConfig(prior="laplace-here")).prior == "laplace-here"
    vae = build_vae(FitConfig(prior="laplace", latent_dim=3), (1, 28, 28))
    assert isinstance(vae.model.prior, LaplacePrior) and vae.model.prior.scale.shape == (3,)


def test_meanfield_needs_analytic_kl_on_every_route(mnist_dataset, tmp_path):
    """--elbo meanfield with a prior that has no closed-form KL: the CLI, pyro_vae.fit and a
    Trainer handed such a VAE all refuse it with one message; a Normal pair is accepted."""
    config = FitConfig(
        **SMALL,
        elbo="meanfield",
        prior="extensions_example:StudentTPrior",
        data_dir=data_dir_of(mnist_dataset),
        out=str(tmp_path / "m"),
    )
    with pytest.raises(ConfigError, match="meanfield needs the KL .* closed form") as from_config:
        build_vae(config, (1, 28, 28))
    with pytest.raises(ConfigError) as from_fit:
        pyro_vae.fit(config, prior=StudentTPrior(4))
    vae = build_vae(config.replace(elbo="trace"), (1, 28, 28))  # built for the trace ELBO ...
    with pytest.raises(ConfigError) as from_trainer:  # ... then handed to a meanfield trainer
        Trainer(config, mnist_dataset, tmp_path / "m", torch.device("cpu"), vae=vae, log=lambda _: None)
    assert str(from_config.value) == str(from_fit.value) == str(from_trainer.value)
    assert "StudentTPrior" in str(from_trainer.value)
    done = _cli(
        "fit",
        "--elbo",
        "meanfield",
        "--prior",
        "extensions_example:StudentTPrior",
        "--data-dir",
        data_dir_of(mnist_dataset),
        "--out",
        tmp_path / "c",
        "--train-size",
        100,
        env=_env(ROOT, TESTS),
        cwd=tmp_path,
    )
    assert done.returncode == 2 and str(from_config.value) in done.stderr, done.stderr
    build_vae(config.replace(prior="standard"), (1, 28, 28))  # N(0, I) with the diagonal guide: fine


def test_trainer_refuses_a_vae_its_config_does_not_describe(mnist_dataset, tmp_path):
    """The issue's route: own pieces put together by hand, config saying "standard": refused
    before training, since config.json could not rebuild the model."""
    config = FitConfig(**SMALL, data_dir=data_dir_of(mnist_dataset), out=str(tmp_path / "t"))
    vae = build_vae(config, (1, 28, 28), prior=LaplacePrior(4))
    with pytest.raises(
        ConfigError, match=r"not the model its config describes \(prior standard.*missing \(model.prior.scale\)"
    ):
        Trainer(config, mnist_dataset, tmp_path / "t", torch.device("cpu"), vae=vae, log=lambda _: None)
    Trainer(
        config.replace(prior=LaplacePrior),
        mnist_dataset,
        tmp_path / "t",
        torch.device("cpu"),
        vae=vae,
        log=lambda _: None,
    )  # named in the config: accepted


def test_a_checkpoint_that_does_not_match_its_config_is_refused(python_run, tmp_path):
    import shutil

    run = tmp_path / "copy"
    shutil.copytree(python_run.out, run)
    config = json.loads((run / "config.json").read_text())
    (run / "config.json").write_text(json.dumps({**config, "prior": "standard"}))
    with pytest.raises(CheckpointError) as edited:
        pyro_vae.load(run)
    message = str(edited.value)
    assert f"checkpoint {run / 'best.pt'} belongs to another run than its folder's config.json" in message
    assert f"prior (config.json: 'standard', checkpoint: {LAPLACE!r})" in message
    # a checkpoint whose own copy of the config was edited too: the state-dict keys are compared
    payload = torch.load(run / "best.pt", weights_only=True)
    payload["config"]["prior"] = "standard"
    torch.save(payload, run / "best.pt")
    with pytest.raises(
        CheckpointError,
        match=r"does not fit the model .*config.json describes .*prior standard.*"
        r"missing \(model.prior.scale\).*"
        r"extra \(model.prior.scale_unconstrained",
    ):
        pyro_vae.load(run)


class WidePrior(LaplacePrior):
    def __init__(self, latent_dim, width):
        super().__init__(latent_dim)


def test_fit_takes_a_config_or_a_dict_and_names_unknown_options(tmp_path):
    with pytest.raises(ConfigError, match="unknown key.*'epoch'"):
        pyro_vae.fit({"epoch": 3})
    with pytest.raises(ConfigError, match="^prior: .*cannot be recorded.*lambda"):  # Python words
        pyro_vae.fit(FitConfig(out=str(tmp_path)), prior=lambda latent_dim: LaplacePrior(latent_dim))
    with pytest.raises(ConfigError, match="asks for an argument 'width', which a prior is not given; .*latent_dim"):
        build_vae(FitConfig().replace(prior=WidePrior), (1, 28, 28))


# -- vae.log_px and the input checks (an untrained model is enough) ------------------------------


@pytest.fixture
def vae():
    return build_vae(FitConfig(latent_dim=3, hidden=(32,)), (1, 28, 28)).eval()


def test_log_px_binarization_is_explicit(vae):
    x = torch.rand(6, 1, 28, 28)
    with pytest.raises(InputError, match="grey-scale intensities.*binarize='sample'"):
        vae.log_px(x, k=5)
    sampled = vae.log_px(x, k=5, binarize="sample", seed=3)
    given = vae.log_px(binarize_fixed(x, 3), k=5, seed=3)  # the same draw, binarized by hand
    assert torch.equal(torch.as_tensor(sampled.log_px), torch.as_tensor(given.log_px))
    assert vae.log_px(x, k=5, binarize="dynamic", seed=3).log_px.tolist() == sampled.log_px.tolist()
    one = vae.log_px(binarize_fixed(x, 3), k=1)
    assert one.log_px.tolist() == pytest.approx(one.elbo.tolist())  # K = 1: the bound is the ELBO
    direct = evaluate_log_px(vae.model, vae.guide, binarize_fixed(x, 3), k=5, batch_size=6, seed=3, progress=False)
    assert direct.log_px.tolist() == given.log_px.tolist()
    with pytest.raises(InputError, match="binarize='threshold' is not one of"):
        vae.log_px(x, binarize="threshold")
    with pytest.raises(InputError, match="k .* must be a whole number"):
        vae.log_px(binarize_fixed(x, 0), k=0)


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda v: v.encode(torch.rand(784)), r"shape \(B, 1, 28, 28\) \(B any\), got \(784,\)"),
        (lambda v: v.encode(torch.rand(5, 784)), r"flattened: pass x.view\(-1, 1, 28, 28\)"),
        (lambda v: v.encode(torch.rand(1, 28, 28)), r"for one image, pass x\[None\]"),
        (lambda v: v.reconstruct(torch.rand(2, 28, 28, 1)), r"channels last\?"),
        (lambda v: v.encode(torch.rand(2, 1, 28, 28) * 255), r"values in \[.*\]; expected intensities in \[0, 1\]"),
        (lambda v: v.encode((torch.rand(2, 1, 28, 28) * 255).to(torch.uint8)), r"integers \(torch.uint8"),
        (lambda v: v.decode(torch.zeros(3, 5)), r"latents of shape \(B, 3\) \(B any\), got \(3, 5\)"),
        (lambda v: v.decode(torch.zeros(3)), r"for one latent, pass z\[None\]"),
        (lambda v: v.sample(0), r"n must be a whole number"),
        (lambda v: v.log_px(torch.rand(2, 1, 14, 14)), r"shape \(B, 1, 28, 28\)"),
    ],
    ids=["1-d", "flat", "single", "channels-last", "0-255", "uint8", "latent-dim", "one-latent", "n=0", "log_px"],
)
def test_inputs_are_checked_with_the_expected_shape(vae, call, message):
    with pytest.raises(InputError, match=message):
        call(vae)


def test_arrays_and_single_images_in_a_batch_work(vae):
    import numpy as np

    x = np.random.default_rng(0).random((3, 1, 28, 28)).astype(np.float32)
    assert vae.encode(x).batch_shape == (3,)
    assert vae.reconstruct(torch.as_tensor(x[0])[None]).shape == (1, 1, 28, 28)
    assert vae.decode(vae.encode(x).mean).batch_shape == (3,)


def test_own_likelihood_and_networks_by_import_path():
    from extensions_example import GlobalScaleGaussian, TinyDecoder, TinyEncoder

    config = FitConfig(
        likelihood="extensions_example:GlobalScaleGaussian",
        net="extensions_example:TinyNets",
        binarize="none",
        latent_dim=3,
    )
    assert (config.likelihood, config.net) == ("extensions_example:GlobalScaleGaussian", "extensions_example:TinyNets")
    vae = build_vae(config, (1, 28, 28)).eval()
    assert isinstance(vae.model.likelihood, GlobalScaleGaussian) and isinstance(vae.model.decoder, TinyDecoder)
    assert isinstance(vae.guide.encoder, TinyEncoder)
    x = torch.rand(4, 1, 28, 28)
    result = vae.log_px(x, k=3, binarize="none")  # intensities scored as they are
    assert result.log_px.shape == (4,) and (result.log_px >= result.elbo - 1e-9).all()
    with pytest.raises(ConfigError, match="no attribute 'encoder'"):
        FitConfig(net="extensions_example:TinyEncoder")


def test_log_px_of_labelled_models_takes_what_their_variant_says():
    """cvae: log p(x | y) needs y; M2: log p(x) sums over the labels and takes no y."""
    x = binarize_fixed(torch.rand(5, 1, 28, 28), 0)
    y = torch.tensor([0, 1, 2, 3, 4])
    cvae = build_vae(FitConfig(model="cvae", latent_dim=3, hidden=(32,)), (1, 28, 28)).eval()
    with pytest.raises(InputError, match="scores log p\\(x \\| y\\): pass y"):
        cvae.log_px(x, k=4)
    given = cvae.log_px(x, k=4, y=y)
    direct = evaluate_log_px(cvae.model, cvae.guide, x, y, k=4, batch_size=5, progress=False)
    assert given.log_px.tolist() == direct.log_px.tolist()
    m2 = build_vae(FitConfig(model="m2", latent_dim=3, hidden=(32,)), (1, 28, 28)).eval()
    with pytest.raises(InputError, match="summed over the labels; it takes no y"):
        m2.log_px(x, k=4, y=y)
    summed = m2.log_px(x, k=4)
    direct = evaluate_log_px(m2.model, m2.guide, x, k=4, batch_size=5, progress=False, sum_over_labels=10)
    assert summed.log_px.tolist() == direct.log_px.tolist()


def test_float64_arrays_and_devices_are_converted(vae):
    x = binarize_fixed(torch.rand(2, 1, 28, 28, dtype=torch.float64), 0)
    assert vae.encode(x).mean.dtype == torch.float32
    assert vae.decode(torch.zeros(2, 3, dtype=torch.float64)).batch_shape == (2,)


def test_pyro_vae_fit_is_the_function_even_after_the_cli_module_is_imported():
    import importlib

    import pyro_vae.api

    cli = importlib.import_module("pyro_vae.cli.fit")
    assert callable(cli.main)
    assert pyro_vae.fit is pyro_vae.api.fit
    with pytest.raises(ConfigError, match="unknown key.*'epoch'"):
        pyro_vae.fit(epoch=3)


def test_evaluate_log_px_on_intensities_says_how_to_binarize(vae):
    from pyro_vae.errors import PyroVAEError

    with pytest.raises(PyroVAEError, match="grey-scale intensities.*binarize_fixed"):
        evaluate_log_px(vae.model, vae.guide, torch.rand(3, 1, 28, 28), k=2, batch_size=3, progress=False)


@pytest.fixture
def one_of_each():
    """A prior, guide, likelihood, network pair, ELBO and model kind, each registered by name from
    this module (outside the package): one class and one registry line apiece."""
    sys.path.insert(0, str(ROOT / "examples"))
    from extensions_example import GlobalScaleGaussian, TinyDecoder, TinyEncoder
    from pyro.infer import Trace_ELBO
    from two_layer_vae import TwoLayerVAE

    from pyro_vae.guides import GUIDES
    from pyro_vae.models import LIKELIHOODS
    from pyro_vae.nets import DECODERS, ENCODERS
    from pyro_vae.objectives import ELBOS
    from pyro_vae.variants import VARIANTS

    entries = [
        (PRIORS, LaplacePrior),
        (GUIDES, FullCovarianceGuide),
        (LIKELIHOODS, GlobalScaleGaussian),
        (ENCODERS, TinyEncoder),
        (DECODERS, TinyDecoder),
        (ELBOS, Trace_ELBO),
        (VARIANTS, TwoLayerVAE),
    ]
    for registry, factory in entries:
        registry.register("outside")(factory)
    yield
    for registry, _ in entries:
        registry._factories.pop("outside")
    sys.path.remove(str(ROOT / "examples"))


def test_one_of_each_piece_registered_from_outside_the_package_trains_on_own_data(one_of_each, tmp_path):
    """The design table's promise: a new prior, guide, likelihood, network, ELBO, model kind and
    data source each need one class and one registry line (the data source: a file of arrays)."""
    import numpy as np

    data = tmp_path / "digits.npz"
    rng = np.random.default_rng(0)
    np.savez(data, images=rng.integers(0, 256, (120, 8, 8), dtype=np.uint8), labels=rng.integers(0, 3, 120))
    small = dict(data=str(data), train_size=80, batch_size=20, epochs=1, latent_dim=3, hidden=(16,))
    pieces = dict(prior="outside", guide="outside", likelihood="outside", net="outside", elbo="outside")
    run = pyro_vae.fit(**small, **pieces, binarize="none", out=str(tmp_path / "pieces"))
    recorded = json.loads((tmp_path / "pieces" / "config.json").read_text())
    assert recorded["prior"] == LAPLACE and recorded["guide"] == FULLCOV  # rebuilt without the registration
    assert recorded["likelihood"] == "extensions_example:GlobalScaleGaussian"
    assert recorded["elbo"] == "pyro.infer.trace_elbo:Trace_ELBO" and recorded["net"] == "outside"
    assert recorded["data_kind"] == "array-file"
    assert isinstance(run.vae.guide, FullCovarianceGuide) and isinstance(run.vae.model.prior, LaplacePrior)
    run = pyro_vae.fit(**small, model="outside", out=str(tmp_path / "kind"))
    assert json.loads((tmp_path / "kind" / "config.json").read_text())["model"] == "two_layer_vae:TwoLayerVAE"
    assert run.vae.sample(2).shape == (2, 1, 8, 8)
