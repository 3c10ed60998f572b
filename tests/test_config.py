"""Configuration: the flags, the --config file, --resume conflicts and --help."""

import json
import re

import pytest

from pyro_vae.config import GROUPS, FitConfig, config_fields
from pyro_vae.errors import CheckpointError, ConfigError
from pyro_vae.cli.fit import build_parser, main, resolve_config


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
    expected = {"dataset": "data", "latent_dim": "model", "prior": "model", "alpha": "training",
                "elbo": "training", "epochs": "training", "device": "devices", "out": "output"}
    assert {name: next(f for f in config_fields() if f.name == name).metadata["group"]
            for name in expected} == expected
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


@pytest.mark.parametrize("given, message", [
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
])
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
    from pyro_vae.config import field_choices
    from pyro_vae.data.catalog import DATASET_NAMES
    from pyro_vae.guides import GUIDES
    from pyro_vae.models import LIKELIHOODS, PRIORS
    from pyro_vae.nets import ENCODERS
    from pyro_vae.objectives import ELBOS
    from pyro_vae.variants import VARIANTS

    choices = {f.name: field_choices(f) for f in config_fields()}
    for name, registry in [("model", VARIANTS), ("likelihood", LIKELIHOODS), ("prior", PRIORS),
                           ("guide", GUIDES), ("net", ENCODERS), ("elbo", ELBOS)]:
        assert choices[name] == tuple(registry.names()), name
    assert choices["dataset"] == tuple(DATASET_NAMES)
    text = build_parser().format_help()
    assert "{vae,cvae,m2}" in text and "{trace,meanfield,iwae}" in text
