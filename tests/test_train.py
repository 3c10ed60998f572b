"""Training on small real MNIST: learning, checkpoints, resume, the CLI's outputs, bad input."""

import json
import math
from pathlib import Path

import pytest
import torch
from PIL import Image

import pyro_vae
from pyro_vae.cli.fit import main
from pyro_vae.config import FitConfig
from pyro_vae.data import evaluation_images
from pyro_vae.engine import Trainer, load_checkpoint, mean_elbo_terms
from pyro_vae.errors import CheckpointError, TrainingDiverged
from pyro_vae.plots import ROW_LABELS, label_width

# A few hundred real images and a small network: seconds per run on a 2-core CPU.
SMALL = dict(train_size=400, eval_size=200, latent_dim=4, hidden=(64,), batch_size=50)


def data_dir_of(dataset) -> str:
    return str(Path(dataset.root).parent.parent)  # root is <data dir>/MNIST/raw


def small_config(dataset, out, **overrides) -> FitConfig:
    return FitConfig(**{**SMALL, "data_dir": data_dir_of(dataset), "out": str(out), "epochs": 2, **overrides})


def cli_args(dataset, out, **overrides):
    values = {**SMALL, "data_dir": data_dir_of(dataset), "out": str(out), "epochs": 2, **overrides}
    args = []
    for key, value in values.items():
        if isinstance(value, tuple):
            value = ",".join(map(str, value))
        args += ["--" + key.replace("_", "-"), str(value)]
    return args


def train(dataset, out, **overrides) -> Trainer:
    config = small_config(dataset, out, **overrides)
    trainer = Trainer(config, dataset, Path(out), torch.device("cpu"), log=lambda _: None)
    trainer.fit()
    return trainer


def test_short_training_improves_held_out_elbo(mnist_dataset, tmp_path):
    config = small_config(mnist_dataset, tmp_path, epochs=6)
    trainer = Trainer(config, mnist_dataset, tmp_path, torch.device("cpu"), log=lambda _: None)
    test = next(s for s in trainer.eval_sets if s.name == "test")
    before = mean_elbo_terms(trainer.vae, test.images)["elbo"]
    trainer.fit()
    after = mean_elbo_terms(trainer.vae, test.images)["elbo"]
    # An untrained decoder outputs logits near 0: about -784 log 2 = -543 nats per image. Six
    # epochs on 400 images reach about -200; we ask for a 150-nat gain on held-out images.
    assert before < -450
    assert after > before + 150, (before, after)
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in records] == list(range(1, 7))
    assert records[-1]["test_elbo"] == pytest.approx(after, abs=1e-6)  # same seeded evaluation


def test_checkpoint_round_trip_through_load(mnist_dataset, tmp_path):
    trainer = train(mnist_dataset, tmp_path)
    loaded = pyro_vae.load(tmp_path, checkpoint="last")
    original = trainer.vae.state_dict()
    for key, value in loaded.state_dict().items():
        assert torch.equal(value, original[key]), key
    images, _ = evaluation_images(mnist_dataset.test.subset(100), "dynamic", 0)
    assert mean_elbo_terms(loaded, images) == mean_elbo_terms(trainer.vae, images)
    assert loaded.config == trainer.config and not loaded.training
    assert loaded.sample(4).shape == (4, 1, 28, 28)


def test_resume_gives_the_same_parameters_as_an_uninterrupted_run(mnist_dataset, tmp_path):
    straight = train(mnist_dataset, tmp_path / "straight", epochs=3, warmup_epochs=2.0)
    assert main(cli_args(mnist_dataset, tmp_path / "resumed", epochs=1, warmup_epochs=2.0)) == 0
    assert main(["--resume", str(tmp_path / "resumed"), "--epochs", "3"]) == 0
    resumed = torch.load(tmp_path / "resumed" / "last.pt", weights_only=True)
    assert resumed["epoch"] == 3 and resumed["step"] == straight.step
    for key, value in straight.vae.state_dict().items():
        assert torch.equal(resumed["networks"][key], value), key
    metrics = (tmp_path / "resumed" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(m)["epoch"] for m in metrics] == [1, 2, 3]


EXPECTED_PICTURES = {  # name: (width, height) in pixels, for 28x28 images
    "samples.png": (8 * 30 + 2, 8 * 30 + 2),
    "reconstructions.png": (16 * 30 + 2 + label_width(ROW_LABELS), 4 * 30 + 2),  # rows labelled on the left
    "interpolation.png": (10 * 30 + 2, 8 * 30 + 2),
}


def test_cli_writes_every_output(mnist_dataset, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(cli_args(mnist_dataset, out, latent_dim=2)) == 0
    stdout = capsys.readouterr().out
    assert f"everything is in {out}/" in stdout and "test set: one fixed Bernoulli binarization" in stdout
    for name in [
        "config.json",
        "metrics.jsonl",
        "last.pt",
        "best.pt",
        "summary.json",
        "curves.png",
        "latent_map.png",
        "latent_grid.png",
        "latent_posterior_grid.png",
        *EXPECTED_PICTURES,
    ]:
        assert (out / name).is_file(), name
    for name, size in EXPECTED_PICTURES.items():
        with Image.open(out / name) as image:
            assert image.format == "PNG" and image.size == size, name
    with Image.open(out / "latent_grid.png") as image:
        assert image.size == (20 * 30 + 2, 20 * 30 + 2)
    config = json.loads((out / "config.json").read_text())
    assert FitConfig.from_dict(config).latent_dim == 2
    for line in (out / "metrics.jsonl").read_text().splitlines():
        record = json.loads(line)
        for key in ("train_elbo", "test_elbo", "test_recon", "test_kl", "beta", "lr", "seconds", "images_per_s"):
            assert math.isfinite(record[key]), key
        assert record["test_elbo"] == pytest.approx(record["test_recon"] - record["test_kl"])
    assert not list(out.glob(".*.tmp"))  # atomic writes leave no temporary files


def test_higher_dimensional_latent_map_is_a_pca(mnist_dataset, tmp_path):
    out = tmp_path / "run"
    assert main(cli_args(mnist_dataset, out, epochs=1, latent_dim=5)) == 0
    assert (out / "latent_map.png").is_file() and not (out / "latent_grid.png").exists()


def test_grey_scale_data_with_bernoulli_likelihood_is_refused(mnist_dataset, tmp_path, capsys):
    assert main(cli_args(mnist_dataset, tmp_path / "run", binarize="none")) == 2
    err = capsys.readouterr().err
    assert "bernoulli likelihood needs binary pixels" in err and "Traceback" not in err


def test_nan_loss_stops_and_keeps_last_good_checkpoint(mnist_dataset, tmp_path, monkeypatch):
    trainer = Trainer(
        small_config(mnist_dataset, tmp_path, epochs=3),
        mnist_dataset,
        tmp_path,
        torch.device("cpu"),
        log=lambda _: None,
    )
    real_step = trainer.train_step
    steps_per_epoch = len(trainer.variant)

    def step_that_diverges_in_epoch_2(args):
        loss = real_step(args)
        return loss * math.nan if trainer.step == steps_per_epoch + 2 else loss  # 3rd step of epoch 2

    monkeypatch.setattr(trainer, "train_step", step_that_diverges_in_epoch_2)
    with pytest.raises(TrainingDiverged) as info:
        trainer.fit()
    message = str(info.value)
    assert f"at epoch 2, step {steps_per_epoch + 3} (batch 3 of {steps_per_epoch})" in message
    assert "last.pt (epoch 1), is kept" in message and "lower --lr" in message
    assert load_checkpoint(tmp_path / "last.pt")["epoch"] == 1


def test_missing_and_corrupt_checkpoints(mnist_dataset, tmp_path, capsys):
    with pytest.raises(CheckpointError, match="no checkpoint at .*best.pt; train first"):
        (tmp_path / "config.json").write_text(json.dumps(FitConfig().to_dict()))
        pyro_vae.load(tmp_path)
    out = tmp_path / "run"
    assert main(cli_args(mnist_dataset, out, epochs=1)) == 0
    (out / "last.pt").write_bytes((out / "last.pt").read_bytes()[:1000])  # truncated
    assert main(["--resume", str(out), "--epochs", "2"]) == 2
    assert "last.pt is corrupt or truncated" in capsys.readouterr().err
    (out / "last.pt").unlink()
    assert main(["--resume", str(out), "--epochs", "2"]) == 2
    assert "no checkpoint at" in capsys.readouterr().err


def test_resume_past_the_last_epoch_asks_for_more(mnist_dataset, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(cli_args(mnist_dataset, out, epochs=1)) == 0
    assert main(["--resume", str(out)]) == 2
    assert "already has 1 epochs and is complete; ask for more with --epochs N" in capsys.readouterr().err


def test_iwae_training_from_the_cli_improves_the_elbo(mnist_dataset, tmp_path):
    out = tmp_path / "run"
    assert main(cli_args(mnist_dataset, out, epochs=3, elbo="iwae", particles=5)) == 0
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert records[-1]["test_elbo"] > records[0]["test_elbo"] > -543


def test_tensorboard_writes_scalars_and_images(mnist_dataset, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out = tmp_path / "run"
    assert main(cli_args(mnist_dataset, out, epochs=2) + ["--tensorboard"]) == 0
    events = EventAccumulator(str(out / "tensorboard"))
    events.Reload()
    tags = events.Tags()
    assert {"test/elbo", "train/elbo", "valid/kl"} <= set(tags["scalars"])
    assert [e.step for e in events.Scalars("test/elbo")] == [1, 2]
    assert "samples" in tags["images"]
