"""Configuration: the flags, the --config file, --resume conflicts and --help."""

import json
import re

import pytest

from pyro_vae.cli.fit import build_parser, main, resolve_config
from pyro_vae.config import GROUPS, FitConfig, config_fields
from pyro_vae.errors import CheckpointError, ConfigError


def test_help_explains_every_option_with_its_default(capsys):
    with pytest.raises(SystemExit) as exit_info:
        build_parser().parse_args(["--help"])
    assert exit_info.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    for f in config_fields():
        assert "--" + f.name.replace("_", "-") in text
    assert "(default: 512,512)" in text
    assert "(default: none for --likelihood discretized-logistic, else dynamic)" in text
    for flag in ("--config FILE", "--resume DIR"):
        assert flag in text


def test_help_groups_options_in_sections(capsys):
    with pytest.raises(SystemExit):
        build_parser().parse_args(["--help"])
    text = capsys.readouterr().out
    heads = [f"{name} options:" for name in GROUPS]
    assert list(GROUPS) == ["data", "model", "training", "devices", "output"]
    starts = [text.index(h) for h in heads]
    assert starts == sorted(starts)  # the sections in their order
    sections = dict(zip(GROUPS, (text[a:b] for a, b in zip(starts, starts[1:] + [len(text)]))))
    for f in config_fields():
        assert f.metadata["group"] in GROUPS, f.name
        assert re.search(rf"^  --{f.name.replace('_', '-')}\b", sections[f.metadata["group"]], re.M), f.name
    expected = {
        "dataset": "data",
        "latent_dim": "model",
        "prior": "model",
        "alpha": "training",
        "elbo": "training",
        "epochs": "training",
        "device": "devices",
        "out": "output",
    }
    assert {name: next(f for f in config_fields() if f.name == name).metadata["group"] for name in expected} == expected
    assert "--resume DIR" in sections["output"]


def test_flags_override_config_file(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("latent-dim: 8\nepochs: 3\nhidden: [64, 32]\nlr: 0.01\n")
    config = resolve_config({"epochs": "5"}, str(path), None)
    assert config.latent_dim == 8 and config.hidden == (64, 32) and config.lr == 0.01
    assert config.epochs == 5  # the flag wins


def test_json_config_file(tmp_path):
    path = tmp_path / "run.json"
    path.write_text(json.dumps({"latent_dim": 2, "net": "conv"}))
    config = resolve_config({}, str(path), None)
    assert (config.latent_dim, config.net) == (2, "conv")


@pytest.mark.parametrize(
    "given, message",
    [
        ({"likelihood": "poisson"}, "--likelihood 'poisson' is not one of: bernoulli, gaussian"),
        ({"latent_dim": "0"}, "--latent-dim must be at least 1, got 0"),
        ({"lr": "-1"}, "--lr must be positive, got -1.0"),
        ({"epochs": "many"}, "bad value 'many' for epochs"),
        ({"device": "tpu"}, "--device 'tpu' is not one of: auto, cpu, cuda, mps"),
        ({"accelerator": "tpu"}, "--accelerator 'tpu' is not one of: auto, cpu, cuda, mps"),
        ({"devices": "two"}, "--devices takes a number of processes (1, 2, ...) or auto, got 'two'"),
        ({"precision": "8-true"}, "--precision '8-true' is not one of: 32-true, bf16-mixed, 16-mixed"),
        ({"device": "cpu", "accelerator": "cuda"}, "--device is the old name of --accelerator"),
        ({"lr_decay": "1.5"}, "--lr-decay must be in (0, 1], got 1.5"),
    ],
)
def test_bad_option_values_are_named(given, message):
    with pytest.raises(ConfigError) as info:
        resolve_config(given, None, None)
    assert message in str(info.value)


def test_unknown_config_file_key(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("latent_dimension: 8\n")
    with pytest.raises(ConfigError, match="unknown key\\(s\\) 'latent_dimension'"):
        resolve_config({}, str(path), None)


def test_missing_and_unparseable_config_file(tmp_path):
    with pytest.raises(ConfigError, match="no such file"):
        resolve_config({}, str(tmp_path / "absent.yaml"), None)
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(ConfigError, match="cannot parse it as JSON"):
        resolve_config({}, str(bad), None)


def test_resume_names_conflicting_keys(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text(json.dumps(FitConfig(out=str(run), epochs=2).to_dict()))
    with pytest.raises(ConfigError) as info:
        resolve_config({"lr": "0.01", "latent_dim": "8", "epochs": "4"}, None, str(run))
    message = str(info.value)
    assert "lr (run: 0.001, given: 0.01)" in message
    assert "latent-dim (run: 32, given: 8)" in message
    assert "epochs" not in message  # more epochs is what resuming is for
    assert resolve_config({"epochs": "4"}, None, str(run)).epochs == 4


def test_resume_without_run_folder(tmp_path):
    with pytest.raises(CheckpointError, match="no config.json there"):
        resolve_config({}, None, str(tmp_path))


def test_cli_prints_error_without_traceback(capsys):
    assert main(["--likelihood", "poisson"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "Traceback" not in err


def test_cuda_without_gpu_is_a_clear_error(capsys, monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert main(["--device", "cuda"]) == 2  # the old name of --accelerator
    assert "--accelerator cuda was given but PyTorch sees no CUDA GPU" in capsys.readouterr().err
    assert main(["--accelerator", "cuda"]) == 2
    assert "--accelerator cuda was given but PyTorch sees no CUDA GPU" in capsys.readouterr().err


def test_device_is_an_alias_of_accelerator():
    config = resolve_config({"device": "cpu"}, None, None)
    assert config.accelerator == "cpu" and config.device is None
    assert FitConfig.from_dict(config.to_dict()) == config


def test_every_choice_comes_from_its_registry():
    from pyro_vae.config_values import field_choices
    from pyro_vae.data.catalog import DATASET_NAMES
    from pyro_vae.guides import GUIDES
    from pyro_vae.models import LIKELIHOODS, PRIORS
    from pyro_vae.nets import ENCODERS
    from pyro_vae.objectives import ELBOS
    from pyro_vae.variants import VARIANTS

    choices = {f.name: field_choices(f) for f in config_fields()}
    for name, registry in [
        ("model", VARIANTS),
        ("likelihood", LIKELIHOODS),
        ("prior", PRIORS),
        ("guide", GUIDES),
        ("net", ENCODERS),
        ("elbo", ELBOS),
    ]:
        assert choices[name] == tuple(registry.names()), name
    assert choices["dataset"] == tuple(DATASET_NAMES)
    text = build_parser().format_help()
    for registry in (VARIANTS, ELBOS):  # the help lists the registry's names, in its order
        assert "{" + ",".join(registry.names()) + "}" in "".join(text.split()), registry.names()  # (wrapped)


def test_resolve_defaults_returns_a_new_config_and_leaves_the_given_one():
    from pyro_vae.variants import resolve_defaults

    given = FitConfig(likelihood="discretized-logistic", prior="vamp")
    resolved = resolve_defaults(given)
    assert resolved is not given
    assert (given.dataset, given.binarize, given.prior_components) == (None, None, None)
    assert (resolved.dataset, resolved.binarize, resolved.prior_components) == ("mnist", "none", 500)
    assert resolve_defaults(FitConfig(prior="mog")).binarize == "dynamic"
    assert resolve_defaults(FitConfig(prior="mog")).prior_components == 10
    assert resolve_defaults(FitConfig(prior="mog", prior_components=3)).prior_components == 3
    assert resolve_defaults(FitConfig(data="faces.npz")).dataset is None  # --data: no named data set
    assert resolve_defaults(resolved) == resolved


@pytest.mark.parametrize(
    "options, message",
    [
        (dict(data="x.npz", dataset="mnist"), "give --data (your own data) or --dataset (a named data set), not both"),
        (
            dict(likelihood="discretized-logistic", binarize="dynamic"),
            "--likelihood discretized-logistic models the 256 values of 8-bit pixels; use --binarize none, not dynamic",
        ),
        (dict(split="0.8,0.1,0.1"), "--split cuts --data without a split of its own"),
        (dict(net="conv", activation="tanh"), "--activation applies to --net mlp; --net conv has its own"),
        (dict(lr_schedule="burda", lr_decay=0.5), "--lr-schedule burda sets the learning rate of every pass"),
        (dict(elbo="iwae", beta=0.5), "--elbo iwae is the importance-weighted bound of log p(x)"),
        (dict(model="m2", prior="vamp"), "--model m2 takes --prior standard or learned or mog, not vamp"),
        (dict(model="cvae", prior="mog"), "--model cvae takes --prior standard or learned, not mog"),
        (dict(model="m2", jit=True), "--model m2's enumerated objective runs eagerly"),
        (dict(elbo="iwae", jit=True), "--jit traces --elbo trace or meanfield, not --elbo iwae"),
    ],
)
def test_variants_check_names_every_rule_between_fields(options, message):
    from pyro_vae.variants import check

    config = FitConfig(**options)  # each field on its own is fine
    with pytest.raises(ConfigError) as info:
        check(config)
    assert message in str(info.value)
    with pytest.raises(ConfigError, match=re.escape(message)):
        resolve_config({k: str(v) for k, v in options.items()}, None, None)  # the CLI refuses it too


def test_check_lists_every_problem_at_once():
    from pyro_vae.variants import check

    with pytest.raises(ConfigError) as info:
        check(FitConfig(model="m2", prior="vamp", elbo="meanfield", data="x.npz", dataset="mnist"))
    message = str(info.value)
    assert "not both" in message and "takes --prior" in message and "use --elbo trace" in message


class SevenComponents:
    """A prior registered from outside the package that declares its own default K."""

    default_components = 7
    takes_labels_ok = True

    def __init__(self, latent_dim: int, components: int):
        self.latent_dim, self.components = latent_dim, components


def test_a_registered_prior_says_its_own_default_components_and_label_use():
    from pyro_vae.models import PRIORS
    from pyro_vae.models.priors import prior_components
    from pyro_vae.variants import check, resolve_defaults

    PRIORS.register("seven")(SevenComponents)
    try:
        config = FitConfig(prior="seven")
        assert prior_components(config) == 7
        assert resolve_defaults(config).prior_components == 7
        built = PRIORS.build(
            "seven", type("Spec", (), {"latent_dim": 3, "image_shape": (1, 4, 4), "cond_dim": 0})(), config, None
        )
        assert built.components == 7
        check(FitConfig(model="m2", prior="seven"))  # takes_labels_ok: M2 accepts it
        with pytest.raises(ConfigError, match="--model cvae takes --prior standard or learned"):
            check(FitConfig(model="cvae", prior="seven"))  # no per-label form (given_labels)
    finally:
        PRIORS._factories.pop("seven")


def test_variant_and_likelihood_attributes_are_the_only_lists():
    from pyro_vae.models.likelihoods import models_pixel_values
    from pyro_vae.variants import VARIANTS

    assert [n for n in VARIANTS.names() if VARIANTS.get(n).takes_labels] == ["cvae", "m2"]
    assert models_pixel_values("discretized-logistic") and not models_pixel_values("bernoulli")


def test_cvae_learned_builds_the_per_label_prior_its_registered_class_names():
    from pyro_vae.models.priors import LabelledGaussianPrior, LearnedGaussianPrior
    from pyro_vae.variants import build_vae

    assert LearnedGaussianPrior.given_labels is LabelledGaussianPrior
    prior = build_vae(FitConfig(model="cvae", prior="learned", latent_dim=3, hidden=(8,)), (1, 4, 4), 5).model.prior
    assert type(prior) is LabelledGaussianPrior and prior.locs.shape == (5, 3)
    plain = build_vae(FitConfig(model="m2", prior="learned", latent_dim=3, hidden=(8,)), (1, 4, 4), 5).model.prior
    assert type(plain) is LearnedGaussianPrior  # M2's p(z) does not depend on the label
