"""Configuration: the flags, the --config file, --resume conflicts and --help."""

import json

import pytest

from pyro_vae.config import FitConfig, config_fields
from pyro_vae.errors import CheckpointError, ConfigError
from pyro_vae.fit import build_parser, main, resolve_config


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
    ({"device": "tpu"}, "--device 'tpu' is not one of: auto, cpu, cuda"),
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
    assert main(["--device", "cuda"]) == 2
    assert "--device cuda was given but PyTorch sees no CUDA GPU" in capsys.readouterr().err
