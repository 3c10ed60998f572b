"""The Python API speaks Python (issue 26 point 2): errors raised from ``pyro_vae.fit`` name
keyword arguments, not flags; unknown keys come with the closest known one; ``fit(resume=...)``
continues a run; ``VAE.sample`` takes a seed; ``log_px`` on 0/1 integers says to pass floats."""

import pytest
import torch
from test_train import SMALL, data_dir_of

import pyro_vae
from pyro_vae.cli.fit import main as fit_main
from pyro_vae.errors import ConfigError, InputError


def test_unknown_keyword_is_named_as_python_spells_it_with_the_closest_match():
    with pytest.raises(ConfigError) as caught:
        pyro_vae.fit(epoch=1, batch_sise=10)
    message = str(caught.value)
    assert "'epoch'" in message and "epoch: did you mean epochs?" in message
    assert "batch_sise: did you mean batch_size?" in message
    assert "batch_size" in message and "batch-size" not in message and "--" not in message


def test_unknown_config_file_key_gets_the_closest_flag(tmp_path, capsys):
    (tmp_path / "options.yaml").write_text("epoch: 1\n")
    assert fit_main(["--config", str(tmp_path / "options.yaml"), "--out", str(tmp_path / "run")]) == 2
    assert "did you mean epochs?" in capsys.readouterr().err


def test_a_used_folder_is_refused_in_python_words(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    (out / "metrics.jsonl").write_text("")  # a run's marker
    with pytest.raises(ConfigError) as caught:
        pyro_vae.fit(out=str(out), epochs=1)
    message = str(caught.value)
    assert "overwrite=True" in message and f"resume={str(out)!r}" in message, message
    assert "--overwrite" not in message and "--resume" not in message and "--out" not in message, message


@pytest.fixture(scope="module")
def one_epoch(mnist_dataset, tmp_path_factory):
    out = tmp_path_factory.mktemp("python-words") / "run"
    return pyro_vae.fit(**SMALL, data_dir=data_dir_of(mnist_dataset), out=str(out), epochs=1)


def test_fit_resume_continues_the_run(one_epoch):
    run = pyro_vae.fit(resume=one_epoch.out, epochs=2)
    assert [r["epoch"] for r in run.metrics] == [1, 2] and run.summary["epochs"] == 2
    with pytest.raises(ConfigError) as caught:
        pyro_vae.fit(resume=one_epoch.out, epochs=2, latent_dim=3)
    message = str(caught.value)
    assert "latent_dim" in message and "--" not in message, message


def test_sample_takes_a_seed_and_leaves_the_global_generator_alone(one_epoch):
    vae = one_epoch.vae
    before = torch.random.get_rng_state()
    a, b, c = vae.sample(8, seed=3), vae.sample(8, seed=3), vae.sample(8, seed=4)
    assert torch.equal(torch.random.get_rng_state(), before)
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_log_px_on_binary_integers_says_to_pass_floats(one_epoch):
    x = (torch.rand(4, 1, 28, 28) > 0.5).long()
    with pytest.raises(InputError) as caught:
        one_epoch.vae.log_px(x, k=2)
    message = str(caught.value)
    assert "x.float()" in message and "255" not in message, message


def test_a_global_batch_that_does_not_divide_is_refused_in_python_words(tmp_path):
    with pytest.raises(ConfigError) as caught:
        pyro_vae.fit(accelerator="cpu", devices=3, batch_size=128, out=str(tmp_path / "run"))
    message = str(caught.value)
    assert "batch_size=128 (the global batch) is split evenly across 3 processes" in message, message
    assert "e.g. batch_size=126" in message and "--" not in message, message


def test_a_chosen_label_on_a_plain_vae_is_refused_in_python_words(one_epoch):
    with pytest.raises(ConfigError) as caught:
        one_epoch.vae.sample(4, label=3)
    message = str(caught.value)
    assert "label=3 asks for a chosen class" in message and "model='vae'" in message, message
    assert "--" not in message, message


# A cross-field refusal: the options as pyro_vae.fit takes them, the same as flags, and what the
# message says in each (Python's words, the flags' words).
CROSS_FIELD_REFUSALS = {
    "m2 with a reparameterized bound": (
        dict(model="m2", elbo="iwae"),
        ["--model", "m2", "--elbo", "iwae"],
        ["elbo='iwae' differentiates", "use elbo='trace'"],
        ["--elbo iwae differentiates", "use --elbo trace"],
    ),
    "the VampPrior with m2": (
        dict(model="m2", prior="vamp", elbo="meanfield"),
        ["--model", "m2", "--prior", "vamp", "--elbo", "meanfield"],
        ["model='m2' takes prior='standard' or ", "use elbo='trace', not 'meanfield'"],
        ["--model m2 takes --prior standard or ", "use --elbo trace, not meanfield"],
    ),
    "an activation for a net that has its own": (
        dict(net="conv", activation="tanh"),
        ["--net", "conv", "--activation", "tanh"],
        ["activation applies to net='mlp'", "net='conv' has its own", "(drop activation='tanh')"],
        ["--activation applies to --net mlp", "--net conv has its own", "(drop --activation tanh)"],
    ),
    "piwae without its number of bounds": (
        dict(elbo="piwae", particles=8),
        ["--elbo", "piwae", "--particles", "8"],
        ["elbo='piwae' averages", "give M with iw_bounds", "particles=64, iw_bounds=8"],
        ["--elbo piwae averages", "give M with --iw-bounds", "--particles 64 --iw-bounds 8"],
    ),
    "missing pixels with m2": (
        dict(model="m2", missing_rate=0.5),
        ["--model", "m2", "--missing-rate", "0.5"],
        ["missing_rate=0.5: missing pixels are supported by model='vae'", "model='m2' has no masked"],
        ["--missing-rate 0.5: missing pixels are supported by --model vae", "--model m2 has no masked"],
    ),
}


@pytest.mark.parametrize("case", list(CROSS_FIELD_REFUSALS))
def test_a_cross_field_refusal_from_python_names_keywords(case, tmp_path):
    options, _, python_words, _ = CROSS_FIELD_REFUSALS[case]
    with pytest.raises(ConfigError) as caught:
        pyro_vae.fit(**options, out=str(tmp_path / "run"))
    message = str(caught.value)
    assert all(words in message for words in python_words), message
    assert "--" not in message, message


@pytest.mark.parametrize("case", list(CROSS_FIELD_REFUSALS))
def test_the_same_cross_field_refusal_from_the_command_line_names_flags(case, tmp_path, capsys):
    _, flags, _, flag_words = CROSS_FIELD_REFUSALS[case]
    assert fit_main([*flags, "--out", str(tmp_path / "run")]) == 2
    message = capsys.readouterr().err
    assert all(words in message for words in flag_words), message


def test_a_cross_field_refusal_on_resume_names_keywords(one_epoch):
    with pytest.raises(ConfigError) as caught:
        pyro_vae.fit(resume=one_epoch.out, epochs=2, ciwae_beta=0.2)
    message = str(caught.value)
    assert "ciwae_beta applies to elbo='ciwae', not 'trace' (drop it)" in message, message
    assert "--" not in message, message
