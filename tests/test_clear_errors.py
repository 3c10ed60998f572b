"""Every input that used to end in a traceback now ends in one clear message: exit status 2,
``error: ...`` on stderr naming the problem and the fix, and no "Traceback"."""

import errno
import json
import os
import pickle
import shutil
from pathlib import Path

import pytest
import torch
from test_train import cli_args

import pyro_vae
from pyro_vae import atomic, run_lock
from pyro_vae.cli.evaluate import main as evaluate_main
from pyro_vae.cli.fit import main as fit_main
from pyro_vae.cli.fit import resolve_config
from pyro_vae.cli.generate import main as generate_main
from pyro_vae.config import FitConfig
from pyro_vae.engine import memory
from pyro_vae.engine.run_config import check_checkpoint_config
from pyro_vae.errors import CheckpointError, ConfigError

RUN_SEED = 7  # not 0: the evaluation binarization must not follow it


@pytest.fixture(scope="module")
def small_run(mnist_dataset, tmp_path_factory):
    out = tmp_path_factory.mktemp("errors") / "run"
    assert fit_main(cli_args(mnist_dataset, out, epochs=1, seed=RUN_SEED)) == 0
    return out


@pytest.fixture
def run_copy(small_run, tmp_path):
    """A copy of the small run that a test may damage."""
    return Path(shutil.copytree(small_run, tmp_path / "copy"))


def refused(status, capsys, *fragments):
    """Exit status 2, one error message holding every fragment, and no traceback."""
    captured = capsys.readouterr()
    assert status == 2, captured.err
    assert captured.err.startswith("error: "), captured.err
    assert "Traceback" not in captured.err + captured.out
    for fragment in fragments:
        assert fragment in captured.err, (fragment, captured.err)
    return captured.err


# -- fit: options ----------------------------------------------------------------------------------
@pytest.mark.parametrize("seed", ["-1", "4294967296", "99999999999999999999"])
def test_seed_outside_0_to_2_32_is_refused(seed, capsys):
    refused(
        fit_main(["--seed", seed]),
        capsys,
        f"--seed must be a whole number from 0 to 4,294,967,295 (2^32 - 1), got {seed}",
    )


def test_largest_seed_is_accepted():
    assert resolve_config({"seed": str(2**32 - 1)}, None, None).seed == 2**32 - 1


@pytest.mark.parametrize(
    "flag, value",
    [("--warmup-epochs", "nan"), ("--beta", "inf"), ("--beta", "nan"), ("--lr", "nan"), ("--gaussian-scale", "-inf")],
)
def test_non_finite_numbers_are_refused(flag, value, capsys):
    refused(fit_main([f"{flag}={value}"]), capsys, f"{flag} must be a finite number, got {float(value)}")


def test_yaml_boolean_for_a_number_is_refused(tmp_path, capsys):
    path = tmp_path / "run.yaml"
    path.write_text("epochs: true\n")
    refused(fit_main(["--config", str(path)]), capsys, "bad value True for epochs: expected a number")


@pytest.mark.parametrize("text, name", [("", "run.yaml"), ("# only a comment\n", "run.yaml"), ("{}", "run.json")])
def test_empty_config_file_is_refused(tmp_path, capsys, text, name):
    path = tmp_path / name
    path.write_text(text)
    refused(fit_main(["--config", str(path)]), capsys, f"--config {path}: the file holds no options")


def test_device_is_checked_for_every_tool(small_run, capsys):
    refused(fit_main(["--device", "nonsense"]), capsys, "--device 'nonsense' is not one of: auto, cpu, cuda")
    refused(
        evaluate_main([str(small_run), "--device", "nonsense", "--no-progress"]),
        capsys,
        "--device 'nonsense' is not one of: auto, cpu, cuda",
    )
    refused(
        evaluate_main([str(small_run), "--accelerator", "gpu", "--no-progress"]),
        capsys,
        "--accelerator 'gpu' is not one of: auto, cpu, cuda",
    )
    refused(
        generate_main([str(small_run), "--device", "gpu"]),
        capsys,
        "--device 'gpu' is not a device; use auto, cpu, cuda, cuda:N",
    )


# -- fit: the output folder ------------------------------------------------------------------------
def test_out_that_is_a_file_or_lies_under_one_is_refused(tmp_path, capsys):
    a_file = tmp_path / "notes.txt"
    a_file.write_text("x")
    refused(fit_main(["--out", str(a_file)]), capsys, f"--out {a_file} is an existing file, not a folder")
    refused(
        fit_main(["--out", str(a_file / "run")]), capsys, f"--out {a_file / 'run'} lies under {a_file}, which is a file"
    )


def test_read_only_out_is_refused(tmp_path, capsys, monkeypatch):
    folder = tmp_path / "read-only"
    folder.mkdir()
    if os.geteuid() == 0:  # root writes anywhere: make the probe file's creation fail as it would

        def denied(*args, **kwargs):
            raise PermissionError(errno.EACCES, "Permission denied", str(folder))

        monkeypatch.setattr(run_lock.tempfile, "mkstemp", denied)
    else:
        folder.chmod(0o555)
    try:
        refused(fit_main(["--out", str(folder)]), capsys, f"--out {folder} cannot be written: Permission denied")
    finally:
        folder.chmod(0o755)


class FullDisk:
    """``open`` for pyro_vae.atomic whose files refuse writes of last.pt with ENOSPC after 1 KB."""

    def __init__(self, real_open):
        self.real_open = real_open

    def __call__(self, path, mode="r", *args, **kwargs):
        f = self.real_open(path, mode, *args, **kwargs)
        if Path(path).name.startswith(".last.pt.") and "w" in mode:
            real_write, written = f.write, [0]

            def write(data):
                written[0] += len(data)
                if written[0] > 1024:
                    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
                return real_write(data)

            f.write = write
        return f


def test_full_disk_keeps_the_last_checkpoint_and_says_so(mnist_dataset, tmp_path, capsys, monkeypatch):
    out = tmp_path / "run"
    assert fit_main(cli_args(mnist_dataset, out, epochs=1)) == 0
    before = (out / "last.pt").read_bytes()
    capsys.readouterr()
    monkeypatch.setattr(atomic, "open", FullDisk(open), raising=False)
    err = refused(
        fit_main(["--resume", str(out), "--epochs", "2"]),
        capsys,
        f"no space left on device while writing {out / 'last.pt'}",
        "is kept unchanged",
        "--resume",
    )
    assert "unexpected pos" not in err
    assert (out / "last.pt").read_bytes() == before  # epoch 1's checkpoint, intact
    assert not [p.name for p in out.iterdir() if p.name.endswith(".tmp")]
    monkeypatch.undo()
    assert fit_main(["--resume", str(out), "--epochs", "2"]) == 0  # space again: the run continues
    assert pyro_vae.load(out, checkpoint="last").config.epochs == 2


# -- fit: memory -----------------------------------------------------------------------------------
def test_model_too_large_for_the_machine_is_refused_before_training(mnist_dataset, tmp_path, capsys):
    refused(
        fit_main(cli_args(mnist_dataset, tmp_path / "run", hidden=(40000, 40000), latent_dim=4)),
        capsys,
        "parameters: with their gradients and Adam's state",
        "Use smaller networks (--hidden",
    )


def test_run_beyond_available_memory_is_refused_with_the_estimate(mnist_dataset, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(memory, "available_memory", lambda device: (60 * 2**20, "the test's limit leaves 0.06 GB"))
    err = refused(
        fit_main(cli_args(mnist_dataset, tmp_path / "run", batch_size=4000, particles=10)),
        capsys,
        "this run needs about",
        "GB for one training step",
        "the test's limit leaves 0.06 GB",
        "Reduce --batch-size (--batch-size",
    )
    assert not (tmp_path / "run" / "config.json").exists()  # refused before anything was written
    fits = int(err.split("Reduce --batch-size (--batch-size ")[1].split()[0])
    assert 1 <= fits < 4000


def test_memory_estimate_grows_with_the_batch(mnist_dataset):
    small = memory.estimate_training_memory(FitConfig(batch_size=10), mnist_dataset, torch.device("cpu"))
    large = memory.estimate_training_memory(FitConfig(batch_size=1010), mnist_dataset, torch.device("cpu"))
    assert large.per_image == small.per_image > 0 and large.parameters == small.parameters
    assert large.step - small.step == 1000 * small.per_image
    # encoder 784 -> 512 -> 512 -> (mean, scale) 2 x 32; decoder 32 -> 512 -> 512 -> 784: 16 bytes each
    encoder = 784 * 512 + 512 + 512 * 512 + 512 + 2 * (512 * 32 + 32)
    decoder = 32 * 512 + 512 + 512 * 512 + 512 + 512 * 784 + 784
    assert small.parameters == 16 * (encoder + decoder)


# -- evaluate, generate, load: the run folder ------------------------------------------------------
@pytest.mark.parametrize(
    "text, what",
    [
        ("{not json", "is corrupt: not valid JSON"),
        ("[1, 2, 3]", "is corrupt: it holds a JSON list"),
        ('{"epochs": "many"}', "bad value 'many' for epochs"),
    ],
)
def test_corrupt_config_json(run_copy, capsys, text, what):
    (run_copy / "config.json").write_text(text)
    refused(evaluate_main([str(run_copy), "--no-progress"]), capsys, f"{run_copy / 'config.json'}", what)
    refused(generate_main([str(run_copy)]), capsys, what)
    with pytest.raises(CheckpointError, match=what.replace("(", r"\(")):
        pyro_vae.load(run_copy)
    refused(fit_main(["--resume", str(run_copy), "--epochs", "2"]), capsys, what)


def test_load_with_an_unknown_device_names_the_device_not_the_checkpoint(small_run):
    with pytest.raises(ConfigError) as info:
        pyro_vae.load(small_run, device="gpu")
    assert "device 'gpu' is not a device" in str(info.value)
    assert "corrupt" not in str(info.value) and "delete" not in str(info.value)


class Payload:
    """A pickle that would create a file when loaded with weights_only=False."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.mark.parametrize("kind", ["random bytes", "malicious pickle", "malicious torch file", "truncated"])
def test_bad_checkpoint_files_never_show_torchs_weights_only_advice(run_copy, tmp_path, capsys, kind):
    marker = tmp_path / "payload-ran"
    best = run_copy / "best.pt"
    if kind == "random bytes":
        best.write_bytes(os.urandom(4096))
    elif kind == "malicious pickle":
        best.write_bytes(pickle.dumps(Payload(marker)))
    elif kind == "malicious torch file":
        torch.save({"format": "pyro-vae-checkpoint/1", "networks": Payload(marker)}, best)
    else:
        best.write_bytes(best.read_bytes()[:2000])
    err = refused(evaluate_main([str(run_copy), "--no-progress"]), capsys, f"checkpoint {best}")
    err += refused(generate_main([str(run_copy)]), capsys, f"checkpoint {best}")
    assert "weights_only" not in err and "Re-running" not in err
    if "malicious" in kind:
        assert "posix.system" in err and "it was not loaded and nothing in it ran" in err
        assert "any other way" not in err and "issue" not in err.lower()
    assert not marker.exists()


def test_checkpoint_of_another_run_is_refused(run_copy, capsys):
    config = json.loads((run_copy / "config.json").read_text())
    config["prior"] = "learned"  # config.json of one run, checkpoints of another
    (run_copy / "config.json").write_text(json.dumps(config))
    refused(
        evaluate_main([str(run_copy), "--no-progress"]),
        capsys,
        f"checkpoint {run_copy / 'best.pt'} belongs to another run than its folder's config.json",
        "prior (config.json: 'learned', checkpoint: 'standard')",
    )


def test_checkpoint_config_check_allows_what_resuming_may_change():
    config = FitConfig(epochs=5, device="cpu", out="a")
    check_checkpoint_config(config, FitConfig(epochs=3, device="auto", out="b").to_dict(), "x.pt")
    with pytest.raises(CheckpointError, match="latent-dim \\(config.json: 32, checkpoint: 8\\)"):
        check_checkpoint_config(config, FitConfig(latent_dim=8).to_dict(), "x.pt")
    with pytest.raises(CheckpointError, match="holds no configuration"):
        check_checkpoint_config(config, None, "x.pt")


# -- generate ---------------------------------------------------------------------------------------
def test_generate_refuses_a_huge_n(small_run, capsys):
    refused(
        generate_main([str(small_run), "--n", "100000000"]), capsys, "--n must be from 1 to 10,000", "got 100,000,000"
    )


def test_generate_out_naming_a_folder_writes_into_it(small_run, tmp_path, capsys):
    folder = tmp_path / "pictures"
    folder.mkdir()
    assert generate_main([str(small_run), "--out", str(folder), "--n", "4"]) == 0
    assert (folder / "generated.png").is_file()
    capsys.readouterr()
    refused(generate_main([str(small_run), "--out", str(tmp_path / "grid.txt")]), capsys, "give a name ending in .png")
    a_file = tmp_path / "a-file"
    a_file.write_text("x")
    refused(
        generate_main([str(small_run), "--out", str(a_file / "grid.png")]), capsys, f"{a_file} is a file, not a folder"
    )


# -- evaluate ---------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "args, message",
    [
        (["--memory-mb", "0"], "--memory-mb must be a positive number of megabytes, got 0"),
        (["--memory-mb", "nan"], "--memory-mb must be a positive number of megabytes, got nan"),
        (["--k-chunk", "0"], "--k-chunk must be at least 1"),
        (["--curve-images", "-1"], "--curve-images must be >= 0"),
        (["--seed", "-3"], "--seed must be a whole number from 0"),
        (["--k", "5000", "--batch-size", "10000", "--memory-mb", "64"], "use --batch-size 1677 or less"),
    ],
)
def test_evaluate_messages_name_flags(small_run, capsys, args, message):
    err = refused(evaluate_main([str(small_run), *args, "--no-progress"]), capsys, message)
    assert "memory_budget_mb" not in err and "batch_size" not in err


def test_evaluation_binarization_is_seed_0_whatever_the_training_seed(small_run, mnist_dataset, capsys):
    """The run trained with --seed 7; it is scored on the one binarization every run uses."""
    assert pyro_vae.load(small_run).config.seed == RUN_SEED
    assert evaluate_main([str(small_run), "--k", "2", "--limit", "5", "--curve-images", "0", "--no-progress"]) == 0
    assert "test set: one fixed Bernoulli binarization, seed 0" in capsys.readouterr().out
    assert (
        json.loads((small_run / "eval.json").read_text())["test"]["binarization"]
        == "test set: one fixed Bernoulli binarization, seed 0"
    )
    assert (
        json.loads((small_run / "summary.json").read_text())["test_binarization"]
        == "test set: one fixed Bernoulli binarization, seed 0"
    )


@pytest.mark.parametrize("binarize", ["dynamic", "static"])
def test_trainer_scores_every_run_on_the_seed_0_binarization(mnist_dataset, tmp_path, binarize):
    from test_train import small_config

    from pyro_vae.data import binarize_fixed, split_seed
    from pyro_vae.engine import Trainer

    sets = {}
    for seed in (0, RUN_SEED):
        trainer = Trainer(
            small_config(mnist_dataset, tmp_path, seed=seed, binarize=binarize),
            mnist_dataset,
            tmp_path,
            torch.device("cpu"),
        )
        sets[seed] = {s.name: s.images for s in trainer.eval_sets}
    for split in ("valid", "test"):
        n = sets[RUN_SEED][split].shape[0]
        expected = binarize_fixed(getattr(mnist_dataset, split).images, split_seed(0, split))[:n]
        assert torch.equal(sets[RUN_SEED][split], expected) and torch.equal(sets[0][split], expected)
    # static: the training-set ELBO is measured on the binarization training used, the run's own
    train = mnist_dataset.train.subset(sets[RUN_SEED]["train"].shape[0]).images
    own = binarize_fixed(train, RUN_SEED if binarize == "static" else 0)
    assert torch.equal(sets[RUN_SEED]["train"], own)
