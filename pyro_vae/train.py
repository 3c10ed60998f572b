"""The training loop: Pyro SVI over device-resident mini-batches, per-epoch evaluation, metrics,
checkpoints (``last.pt`` every epoch, ``best.pt`` at the best validation ELBO) and pictures.

Objective per step, for a mini-batch of B of the N training images:
    loss = -(N / B) * sum_i [ log p(x_i|z_i) + beta * (log p(z_i) - log q(z_i|x_i)) ],  z_i ~ q(z|x_i)
so the loss estimates minus the whole training set's (beta-weighted) ELBO; divided by N it is
nats per image. No step waits for the device: losses stay on it and are read once per log
interval.
"""

from __future__ import annotations

import json
import math
import shutil
import time
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Callable

import pyro
import pyro.optim
import torch
from pyro.optim.clipped_adam import ClippedAdam
from tqdm.auto import tqdm

from . import plots
from .atomic import atomic_open, atomic_path, write_json
from .checkpoint import (load_checkpoint, restore_networks, restore_training_state,
                         save_checkpoint)
from .config import FitConfig
from .data import DeviceBatches, evaluation_images
from .errors import ConfigError, TrainingDiverged
from .evaluation import eval_mode
from .labels import balanced_labelled_subset
from .objectives import (DeviceSVI, ScaleLatents, SemiSupervisedELBO, beta_at, build_elbo, elbo_terms,
                         minibatch_program)
from .schedules import burda_lr_factor
from .vae import VAE, build_vae

LOG_EVERY = 50  # steps between reads of the running loss (one host-device sync each)
TRAIN_EVAL_SIZE = 10_000  # training images on which the per-epoch train ELBO is measured
EVAL_BATCH_SIZE = 1000
EVAL_SEED = 12345  # z-sampling seed for the per-epoch ELBO evaluations (same every epoch)
CLIP_NORM = 10.0  # ClippedAdam's gradient-norm clip
PICTURE_IMAGES = 32  # test images shown in the reconstruction and interpolation pictures
ANALOGY_COLUMNS = 12  # test images whose style the analogies figure carries across the labels


# Every line the tools print is flushed at once, so progress shows in piped logs too.
say = partial(print, flush=True)


def resolve_device(name: str) -> torch.device:
    """``auto`` -> cuda if available else cpu; ``cuda`` without a GPU is an error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("--device cuda was given but PyTorch sees no CUDA GPU here; use --device cpu "
                          "(or auto), or install a CUDA build of PyTorch on a machine with a GPU")
    return torch.device(name)


def build_optimizer(config: FitConfig) -> pyro.optim.PyroLRScheduler:
    """Adam or ClippedAdam from ``pyro.optim`` (betas and eps from the config), its learning rate
    stepped once per epoch: decayed by ``lr_decay``, or Burda et al.'s schedule
    (:func:`pyro_vae.schedules.burda_lr_factor` of the passes done)."""
    args = {"lr": config.lr, "betas": (config.adam_beta1, config.adam_beta2), "eps": config.adam_eps}
    if config.optimizer == "adam":
        optimizer = torch.optim.Adam
    else:
        optimizer, args = ClippedAdam, {**args, "clip_norm": CLIP_NORM}
    if config.lr_schedule == "burda":
        return pyro.optim.LambdaLR({"optimizer": optimizer, "optim_args": args, "lr_lambda": burda_lr_factor})
    return pyro.optim.ExponentialLR({"optimizer": optimizer, "optim_args": args, "gamma": config.lr_decay})


def current_lr(optim: pyro.optim.PyroLRScheduler, default: float) -> float:
    for scheduler in optim.optim_objs.values():
        return float(scheduler.get_last_lr()[0])
    return default


@torch.no_grad()
def mean_elbo_terms(vae: VAE, images: torch.Tensor, labels: torch.Tensor | None = None, *,
                    batch_size: int = EVAL_BATCH_SIZE, seed: int = EVAL_SEED) -> dict[str, float]:
    """Average ELBO, reconstruction and KL in nats per image, with z drawn from a fixed seed
    (the global RNG is left untouched, so evaluation never changes a training run)."""
    devices = [images.device] if images.device.type == "cuda" else []
    with eval_mode(vae), torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        sums = {k: torch.zeros((), dtype=torch.float64, device=images.device) for k in ("elbo", "recon", "kl")}
        for start in range(0, images.shape[0], batch_size):
            x = images[start:start + batch_size]
            y = None if labels is None else labels[start:start + batch_size]
            for k, v in elbo_terms(vae.model, vae.guide, x, y).items():
                sums[k] += v.double().sum()
    return {k: float(v) / images.shape[0] for k, v in sums.items()}


@dataclass
class EvalSet:
    name: str
    images: torch.Tensor
    labels: torch.Tensor
    description: str


@dataclass
class Trainer:
    """Trains ``vae`` on ``dataset`` as ``config`` says, writing everything to ``out_dir``."""

    config: FitConfig
    dataset: object  # pyro_vae.data.Dataset
    out_dir: Path
    device: torch.device
    vae: VAE | None = None
    log: Callable[[str], None] = say
    records: list[dict] = field(default_factory=list)

    def __post_init__(self):
        cfg = self.config
        self.out_dir = Path(self.out_dir)
        pyro.set_rng_seed(cfg.seed)
        train = self.dataset.train
        if cfg.train_on_validation:  # the standard 60,000 / 10,000 split of MNIST
            valid = self.dataset.valid
            train = type(train)(train.name, torch.cat([train.images, valid.images]),
                                torch.cat([train.labels, valid.labels]))
        if cfg.train_size is not None:
            train = train.subset(cfg.train_size)
        if self.vae is None:
            self.vae = build_vae(cfg, self.dataset.image_shape, self.dataset.num_classes)
        self.vae.to(self.device)
        self.vae.model.likelihood.check_data(train.images, cfg.binarize)
        self.eval_sets = self._eval_sets(train)
        self.optim = build_optimizer(cfg)
        self.labelled_batches = None
        if cfg.model == "m2":
            train = self._split_labelled(train)
        self.num_train = len(train)
        self.batches = DeviceBatches(train.images, train.labels, cfg.batch_size, binarization=cfg.binarize,
                                     seed=cfg.seed, device=self.device)
        self.latent_scale = ScaleLatents(beta_at(0, len(self.batches), cfg.beta, cfg.warmup_epochs))
        if cfg.model == "m2":  # -J_alpha: unlabelled batches with y enumerated, plus labelled ones
            objective = SemiSupervisedELBO(self.num_train, self.num_labelled, cfg.alpha, self.latent_scale,
                                           cfg.particles, balanced=cfg.labelled_weight == "balanced")
            self.svi = DeviceSVI(self.vae.model, self.vae.guide, self.optim, objective)
        else:
            self.svi = DeviceSVI(minibatch_program(self.vae.model, self.num_train, self.latent_scale),
                                 minibatch_program(self.vae.guide, self.num_train, self.latent_scale),
                                 self.optim, build_elbo(cfg.elbo, cfg.particles))
        self.epoch, self.step = 0, 0
        self.best_valid = -math.inf
        self.writer = self._tensorboard() if cfg.tensorboard else None

    # -- set-up ------------------------------------------------------------------------------
    def _split_labelled(self, train):
        """M2: a class-balanced seeded subset of ``--labels`` images keeps its labels; the rest of
        the training set is used unlabelled. Returns the unlabelled part."""
        cfg = self.config
        chosen = balanced_labelled_subset(train.labels, cfg.labelled, self.dataset.num_classes, cfg.seed)
        self.labelled_indices = chosen
        keep = torch.ones(len(train), dtype=torch.bool)
        keep[chosen] = False
        labelled = (train.images[chosen], train.labels[chosen])
        self.num_labelled = int(chosen.numel())
        self.labelled_batches = DeviceBatches(*labelled, min(cfg.batch_size, self.num_labelled),
                                              binarization=cfg.binarize, seed=cfg.seed + 1, device=self.device)
        return type(train)(train.name, train.images[keep], train.labels[keep])

    def _eval_sets(self, train) -> list[EvalSet]:
        cfg = self.config
        sets = []
        limits = {"train": TRAIN_EVAL_SIZE, "valid": cfg.eval_size, "test": cfg.eval_size}
        for split in (train, self.dataset.valid, self.dataset.test):
            # binarize the whole split, then take the first n: under --binarize static the
            # training-set evaluation sees exactly the images training sees
            images, description = evaluation_images(split, cfg.binarize, cfg.seed)
            n = min(limits[split.name] or len(split), len(split))
            self.vae.model.likelihood.check_data(images[:n], "none")
            sets.append(EvalSet(split.name, images[:n].to(self.device), split.labels[:n].to(self.device),
                                description))
        return sets

    def _tensorboard(self):
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            raise ConfigError("--tensorboard needs the tensorboard package: pip install tensorboard") from None
        return SummaryWriter(str(self.out_dir / "tensorboard"))

    # -- resume --------------------------------------------------------------------------------
    def restore(self, checkpoint_path: Path) -> None:
        """Continue from a checkpoint: networks, optimizer, RNGs, sampler, epoch, metrics."""
        payload = load_checkpoint(checkpoint_path, map_location=self.device)
        restore_networks(self.vae, payload, checkpoint_path)
        restore_training_state(self.vae, self.optim, payload)
        self._load_sampler_state(payload["sampler"])
        self.epoch, self.step = payload["epoch"], payload["step"]
        self.best_valid = payload["extra"].get("best_valid_elbo", -math.inf)
        self.records = [r for r in read_metrics(self.out_dir / "metrics.jsonl") if r["epoch"] <= self.epoch]

    def _sampler_state(self) -> dict:
        """The batch samplers' state: one stream, or M2's unlabelled and labelled streams."""
        if self.labelled_batches is None:
            return self.batches.state_dict()
        return {"unlabelled": self.batches.state_dict(), "labelled": self.labelled_batches.state_dict()}

    def _load_sampler_state(self, state: dict) -> None:
        if self.labelled_batches is None:
            self.batches.load_state_dict(state)
        else:
            self.batches.load_state_dict(state["unlabelled"])
            self.labelled_batches.load_state_dict(state["labelled"])

    # -- the loop ------------------------------------------------------------------------------
    def fit(self) -> dict:
        cfg = self.config
        self.out_dir.mkdir(parents=True, exist_ok=True)
        write_json(self.out_dir / "config.json", cfg.to_dict())
        test = self._eval_set("test")
        images = f"{self.num_train:,} training images"
        if self.labelled_batches is not None:
            write_json(self.out_dir / "labelled_indices.json",
                       {"labels": cfg.labelled, "seed": cfg.seed,
                        "indices_into_training_set": self.labelled_indices.tolist()})
            images = f"{self.num_train:,} unlabelled + {self.num_labelled} labelled training images"
        self.log(f"fit: {cfg.model} on {cfg.dataset}, {images} ({cfg.binarize} binarization), "
                 f"{test.description}; device {self.device}; epochs {self.epoch + 1}..{cfg.epochs}")
        started = time.perf_counter()
        self.stopped, first_epoch = "epochs", self.epoch + 1
        for epoch in range(first_epoch, cfg.epochs + 1):
            if self._out_of_time(time.perf_counter() - started, epoch - first_epoch):
                break
            record = self._train_epoch(epoch)
            record.update(self._evaluate())
            self.records.append(record)
            self.epoch = epoch
            self._save_epoch(record)
            self.log(self._epoch_line(record))
            if self._no_recent_improvement():
                break
        pictures = self.write_pictures()
        summary = self._summary(time.perf_counter() - started, pictures)
        summary["stopped"] = self.stopped
        write_json(self.out_dir / "summary.json", summary)
        if self.writer is not None:
            self.writer.close()
        return summary

    def _out_of_time(self, elapsed: float, epochs_done: int) -> bool:
        """--max-minutes: would the next epoch (as long as this invocation's epochs so far, training
        and evaluation) end past the limit? The first epoch of an invocation always runs."""
        limit = self.config.max_minutes
        if limit is None or epochs_done == 0:
            return False
        if elapsed + elapsed / epochs_done <= 60 * limit:
            return False
        self.stopped = "max-minutes"
        self.log(f"stopping after epoch {self.epoch}: another epoch would pass --max-minutes {limit:g}")
        return True

    def _no_recent_improvement(self) -> bool:
        """--early-stopping N: the validation ELBO has not improved in the last N epochs."""
        patience = self.config.early_stopping
        if not patience:
            return False
        best = max(self.records, key=lambda r: r["valid_elbo"])["epoch"]
        if self.epoch - best < patience:
            return False
        self.stopped = "early-stopping"
        self.log(f"early stopping at epoch {self.epoch}: the validation ELBO last improved at epoch {best}")
        return True

    def _train_epoch(self, epoch: int) -> dict:
        cfg = self.config
        self.vae.train()
        steps = len(self.batches)
        total = torch.zeros((), device=self.device)
        pending: list[torch.Tensor] = []
        bar = tqdm(total=steps, desc=f"epoch {epoch}/{cfg.epochs}", unit="batch", leave=False, disable=None)
        started = time.perf_counter()
        labelled = self._labelled_stream()
        for i, (x, y) in enumerate(self.batches):
            self.latent_scale.beta = beta_at(self.step, steps, cfg.beta, cfg.warmup_epochs)
            if cfg.model == "m2":  # an unlabelled batch and the next labelled one: -J_alpha
                pending.append(self.svi.step(x, *next(labelled)))
            elif cfg.model == "cvae":  # -ELBO of p(x | y)
                pending.append(self.svi.step(x, y))
            else:  # loss on the device: -(beta-)ELBO of the data set
                pending.append(self.svi.step(x))
            self.step += 1
            if len(pending) == LOG_EVERY or i == steps - 1:
                total += self._check_finite(pending, epoch, i)
                running = -float(total) / (self.num_train * (i + 1))
                bar.set_postfix_str(f"ELBO {running:.2f} nats/image, beta {self.latent_scale.beta:.2f}")
                pending = []
            bar.update(1)
        bar.close()
        if self.device.type == "cuda":
            torch.cuda.synchronize()
        seconds = time.perf_counter() - started
        lr = current_lr(self.optim, cfg.lr)
        self.optim.step()  # learning-rate schedule: one ExponentialLR step per epoch
        return {"epoch": epoch, "step": self.step, "beta": self.latent_scale.beta, "lr": lr,
                "train_objective": float(total) / (self.num_train * steps),
                "seconds": seconds, "images_per_s": self.num_train / seconds}

    def _labelled_stream(self):
        """M2's labelled batches, epoch after epoch of the (small) labelled set, started afresh at
        each unlabelled epoch so that a checkpoint between epochs captures the whole state."""
        while self.labelled_batches is not None:
            yield from self.labelled_batches

    def _check_finite(self, losses: list[torch.Tensor], epoch: int, last_index: int) -> torch.Tensor:
        """Sum the pending losses; stop with a clear message at the first one that is not finite."""
        stacked = torch.stack(losses)
        finite = torch.isfinite(stacked)
        if bool(finite.all()):
            return stacked.sum()
        first = int((~finite).nonzero()[0])
        batch = last_index - len(losses) + 1 + first
        step = self.step - len(losses) + first + 1
        kept = (f"the last good checkpoint, {self.out_dir / 'last.pt'} (epoch {self.epoch}), is kept"
                if self.epoch > 0 else "no checkpoint was written yet")
        raise TrainingDiverged(
            f"the loss became {float(stacked[first])} at epoch {epoch}, step {step} (batch {batch + 1} of "
            f"{len(self.batches)}); training stopped and {kept}. Try a lower --lr (now {self.config.lr:g}), "
            f"--optimizer clipped-adam, or KL warm-up (--warmup-epochs 5)")

    def _eval_set(self, name: str) -> EvalSet:
        return next(s for s in self.eval_sets if s.name == name)

    def _evaluate(self) -> dict:
        """Per-split ELBO terms (CVAE: of p(x | y) with the true labels; M2: of p(x), one draw of
        y ~ q(y|x) and z per image) and, for M2, the classifier's accuracy."""
        out = {}
        for s in self.eval_sets:
            labels = s.labels if self.config.model == "cvae" else None
            for term, value in mean_elbo_terms(self.vae, s.images, labels).items():
                out[f"{s.name}_{term}"] = value
            if self.config.model == "m2":
                out[f"{s.name}_accuracy"] = float((self._predict(s.images) == s.labels).double().mean())
        return out

    @torch.no_grad()
    def _predict(self, images: torch.Tensor) -> torch.Tensor:
        """argmax_y q(y | x) in batches, in eval mode."""
        with eval_mode(self.vae):
            return torch.cat([self.vae.classify(images[i:i + EVAL_BATCH_SIZE]).argmax(-1)
                              for i in range(0, images.shape[0], EVAL_BATCH_SIZE)])

    def _epoch_line(self, r: dict) -> str:
        return (f"epoch {r['epoch']:>3}/{self.config.epochs}  train ELBO {r['train_elbo']:8.2f}  "
                f"valid {r['valid_elbo']:8.2f}  test {r['test_elbo']:8.2f} nats/image  "
                f"(recon {r['test_recon']:.2f}, KL {r['test_kl']:.2f})  beta {r['beta']:.2f}  "
                f"lr {r['lr']:.2e}  {r['seconds']:.1f}s, {r['images_per_s']:,.0f} img/s"
                + (f"  test accuracy {r['test_accuracy']:.2%}" if "test_accuracy" in r else ""))

    # -- outputs -------------------------------------------------------------------------------
    def _save_epoch(self, record: dict) -> None:
        write_metrics(self.out_dir / "metrics.jsonl", self.records)
        improved = record["valid_elbo"] > self.best_valid
        if improved:
            self.best_valid = record["valid_elbo"]
        last = self.out_dir / "last.pt"
        save_checkpoint(last, vae=self.vae, optim=self.optim, sampler_state=self._sampler_state(),
                        epoch=self.epoch, step=self.step, config=self.config.to_dict(),
                        extra={"best_valid_elbo": self.best_valid, "record": record,
                               "image_shape": list(self.dataset.image_shape),
                               "num_classes": self.dataset.num_classes})
        if improved:
            with atomic_path(self.out_dir / "best.pt") as tmp:
                shutil.copyfile(last, tmp)
        plots.training_curves(self.records, self.out_dir / "curves.png")
        if self.writer is not None:
            for key, value in record.items():
                if key != "epoch":
                    self.writer.add_scalar(key.replace("_", "/", 1), value, record["epoch"])
            self.writer.add_images("samples", self.vae.sample(64).cpu(), record["epoch"])

    def write_pictures(self) -> list[Path]:
        """Samples, reconstructions, latent map(s) and interpolations of the current model."""
        self.vae.eval()
        test = self._eval_set("test")
        n = min(PICTURE_IMAGES, test.images.shape[0])
        x = test.images[:n]
        out = self.out_dir
        with torch.random.fork_rng(devices=[self.device] if self.device.type == "cuda" else []):
            torch.manual_seed(self.config.seed)
            if not self.vae.conditional:
                paths = [plots.sample_grid(self.vae, out / "samples.png"),
                         plots.reconstruction_grid(self.vae, x, out / "reconstructions.png")]
                half = n // 2
                if half:
                    paths.append(plots.interpolation_grid(self.vae, x[:min(half, 8)],
                                                          x[half:half + min(half, 8)], out / "interpolation.png"))
                paths += plots.latent_maps(self.vae, test.images[:5000], test.labels[:5000], out)
            else:
                paths = self._conditional_pictures(test, n)
        paths.append(out / "curves.png")
        return paths

    def _conditional_pictures(self, test: EvalSet, n: int) -> list[Path]:
        """CVAE / M2: samples by label, the analogies figure, reconstructions (CVAE given the true
        label, M2 given its classifier's), the latent map, and M2's confusion matrix."""
        out, vae = self.out_dir, self.vae
        given = test.labels if self.config.model == "cvae" else None  # M2 infers the label
        paths = [plots.label_sample_grid(vae, out / "samples.png"),
                 plots.analogy_grid(vae, out / "analogies.png", sources=test.images[:ANALOGY_COLUMNS],
                                    source_labels=None if given is None else given[:ANALOGY_COLUMNS]),
                 plots.reconstruction_grid(vae, test.images[:n], out / "reconstructions.png",
                                           None if given is None else given[:n])]
        paths += plots.latent_maps(vae, test.images[:5000], test.labels[:5000], out,
                                   condition=None if given is None else given[:5000])
        if self.config.model == "m2":
            paths.append(plots.confusion_matrix(test.labels.cpu(), self._predict(test.images).cpu(),
                                                out / "confusion_matrix.png",
                                                title=f"q(y|x) on the {test.description.split(':')[0]}, "
                                                      f"{self.config.labelled} labels"))
        return paths

    def _summary(self, seconds: float, pictures: list[Path]) -> dict:
        last = self.records[-1]
        best = max(self.records, key=lambda r: r["valid_elbo"])
        return {
            "model": self.config.model, "epochs": self.epoch, "seconds": seconds, "device": str(self.device),
            "test_binarization": self._eval_set("test").description,
            "final": {k: last[k] for k in last if k.split("_")[0] in ("train", "valid", "test")},
            "best_epoch": best["epoch"], "best_valid_elbo": best["valid_elbo"],
            "best_test_elbo": best["test_elbo"],
            "files": sorted(p.name for p in self.out_dir.iterdir() if p.is_file()),
            "pictures": [p.name for p in pictures],
        }


def read_metrics(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def write_metrics(path: Path, records: list[dict]) -> None:
    """Rewrite metrics.jsonl atomically with one JSON object per epoch."""
    with atomic_open(path) as f:
        for r in records:
            f.write(json.dumps(r, sort_keys=True) + "\n")
