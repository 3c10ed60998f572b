"""The training loop on Lightning Fabric: one code path for one process and many.

Each step, on each of the W processes, for its slice of a global batch of B of the N training
images:
    loss = -(N W / B) * sum_i [ log p(x_i|z_i) + beta * (log p(z_i) - log q(z_i|x_i)) ],  z_i ~ q(z|x_i)
so every process's loss estimates minus the whole training set's (beta-)ELBO, and the gradients
that DDP averages over the processes equal one process's on the whole global batch. The loss is
Pyro's ELBO module (``Trace_ELBO()(model, guide)``, built by the run's variant), the optimizer one
``torch.optim.Adam`` over its parameters. No step waits for the device: losses stay on it and are
read (and reduced across processes) once per log interval. Only rank 0 writes files, prints and
shows the progress bar.
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import time
from functools import partial
from pathlib import Path
from typing import Callable

import pyro
import torch
from torch import nn
from tqdm.auto import tqdm

from .. import plots
from ..atomic import atomic_open, atomic_path, write_json
from ..config import FitConfig
from ..data import evaluation_images
from ..data.binarize import EVALUATION_SEED
from ..errors import ConfigError, TrainingDiverged
from ..objectives import beta_at
from ..variants import EvalSet, variant_of
from ..vae import VAE
from ..variants import build_vae, check_data, check_matches_config, checked
from .run_config import check_checkpoint_config
from .checkpoint import (check_resumable, load_checkpoint, restore_networks, restore_optimizer, rng_state,
                         save_checkpoint, set_rng_state)
from .faults import KILL_ENV, kill_point, step_hook
from .fabric import broadcast_buffers, describe, fabric_for, gather_objects, process_seed
from .optim import build_optimizer, build_scheduler, clip_value, current_lr

# torch's argument check of a distribution: "Expected parameter loc (Tensor of shape ...) of
# distribution Normal(...) to satisfy the constraint Real(), but found invalid values"
_INVALID_ARGUMENT = re.compile(r"Expected parameter (?P<name>\w+) .*?of distribution (?P<dist>\w+).*?"
                               r"but found invalid values", re.DOTALL)

# Distribution arguments are validated on a run's first step (bad data is caught there) and not
# after: validation costs about 10% of a small model's step and a host sync per check. The test
# suite (tests/conftest.py) sets PYRO_VAE_VALIDATE_EVERY_STEP=1 to keep it on for every step.
VALIDATE_EVERY_STEP = os.environ.get("PYRO_VAE_VALIDATE_EVERY_STEP") == "1"
LOG_EVERY = 50  # steps between reads of the running loss (one host-device sync each)
TRAIN_EVAL_SIZE = 10_000  # training images on which the per-epoch train ELBO is measured

# Every line the tools print is flushed at once, so progress shows in piped logs too.
say = partial(print, flush=True)


def float32_outputs(module: nn.Module) -> None:
    """Under mixed precision, cast every linear / convolution layer's low-precision output back
    to float32: the next layer is cast down again by autocast, but every distribution (and so
    every log-density the ELBO sums) sees float32 parameters."""
    def to_float32(_module, _inputs, output):
        if isinstance(output, torch.Tensor) and output.dtype in (torch.bfloat16, torch.float16):
            return output.float()
        return output

    for m in module.modules():
        if isinstance(m, (nn.Linear, nn.modules.conv._ConvNd)):
            m.register_forward_hook(to_float32)


class Trainer:
    """Trains a VAE on ``dataset`` as ``config`` says, writing everything to ``out_dir``.

    ``fabric`` is a launched ``lightning.fabric.Fabric`` (the CLI's, possibly many processes);
    without one, the trainer runs in this process on ``device`` (default: ``config.accelerator``).
    ``step_hooks`` are called as ``hook(trainer, loss)`` after every optimizer step.
    """

    def __init__(self, config: FitConfig, dataset, out_dir: str | Path, device=None, *, fabric=None,
                 vae: VAE | None = None, log: Callable[[str], None] = say):
        cfg = self.config = checked(config)  # defaults resolved; a bad combination refused
        self.dataset = dataset
        check_data(cfg, dataset)
        self.out_dir = Path(out_dir)
        self.fabric = fabric if fabric is not None else fabric_for(config, device)
        self.rank, self.world = self.fabric.global_rank, self.fabric.world_size
        self.is_main = self.fabric.is_global_zero
        self.device = self.fabric.device
        self.log = log if self.is_main else (lambda _line: None)
        self.records: list[dict] = []
        self.step_hooks: list[Callable] = [step_hook] if os.environ.get(KILL_ENV) else []  # tests: kill -9
        self.repaired: list[str] = []  # what restore() mended of an interrupted run
        pyro.set_rng_seed(cfg.seed)  # the same initial networks in every process
        train = dataset.train
        if cfg.train_on_validation:  # the standard 60,000 / 10,000 split of MNIST
            train = type(train)(train.name, torch.cat([train.images, dataset.valid.images]),
                                torch.cat([train.labels, dataset.valid.labels]))
        if cfg.train_size is not None:
            train = train.subset(cfg.train_size)
        if vae is not None:  # config.json must describe it, or the run could not be reloaded
            check_matches_config(vae, cfg, dataset.image_shape, dataset.num_classes)
        self.vae = vae if vae is not None else build_vae(cfg, dataset.image_shape, dataset.num_classes)
        self.vae.to(self.device)
        self.vae.model.likelihood.check_data(train.data, cfg.binarize)  # uint8 pixels or floats
        self.eval_sets = self._eval_sets(train)
        self.bits_per_dim = dataset.bits == 8 and cfg.binarize == "none"  # 8-bit pixels scored as they are
        self.variant = variant_of(cfg)(cfg, dataset.num_classes, self.device, shard=(self.rank, self.world))
        self.description = self.variant.setup(train, self.vae, self.log)
        loss = self.variant.loss
        with torch.random.fork_rng(devices=self._cuda()):  # (grad on: TraceEnum_ELBO insists)
            loss(*self.variant.first_batch())  # lazy parameters exist before the optimizer sees them
        if cfg.precision != "32-true":
            float32_outputs(self.vae)
        self.optimizer = build_optimizer(loss.parameters(), cfg.lr, (cfg.adam_beta1, cfg.adam_beta2), cfg.adam_eps)
        self.scheduler = build_scheduler(self.optimizer, cfg)
        self.clip = clip_value(cfg.optimizer)
        self.loss, self.fabric_optimizer = self.fabric.setup(loss, self.optimizer)
        pyro.set_rng_seed(process_seed(cfg.seed, self.rank))  # each process draws its own noise
        self.epoch, self.step = 0, 0
        self.validated = False  # the first step of this run (or of its resumption) was validated
        self.stopped = "epochs"  # why fit() ended: epochs, early-stopping or max-minutes
        self.best_valid = -math.inf
        self.writer = self._tensorboard() if cfg.tensorboard and self.is_main else None

    # -- set-up ------------------------------------------------------------------------------
    def _cuda(self) -> list:
        return [self.device] if self.device.type == "cuda" else []

    def _eval_sets(self, train) -> list[EvalSet]:
        cfg = self.config
        sets = []
        limits = {"train": TRAIN_EVAL_SIZE, "valid": cfg.eval_size, "test": cfg.eval_size}
        for split in (train, self.dataset.valid, self.dataset.test):
            # binarized: the whole split, then the first n (under --binarize static the training-set
            # evaluation sees exactly the images training sees); else only the first n are converted.
            # Seed 0 for every run, except --binarize static's training split: its own binarization
            seed = cfg.seed if cfg.binarize == "static" and split is train else EVALUATION_SEED
            n = min(limits[split.name] or len(split), len(split))
            images, description = evaluation_images(split, cfg.binarize, seed, limit=n)
            self.vae.model.likelihood.check_data(images[:n], "none")
            sets.append(EvalSet(split.name, images[:n].to(self.device), split.labels[:n].to(self.device),
                                description))
        return sets

    def _eval_set(self, name: str) -> EvalSet:
        return next(s for s in self.eval_sets if s.name == name)

    def _tensorboard(self):
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            raise ConfigError("--tensorboard needs the tensorboard package: pip install tensorboard") from None
        return SummaryWriter(str(self.out_dir / "tensorboard"))

    # -- resume --------------------------------------------------------------------------------
    def restore(self, checkpoint_path: Path) -> None:
        """Continue from a checkpoint: networks, optimizer, scheduler, RNGs, sampler, epoch, metrics.
        The checkpoint is read onto the CPU, whatever this run's device (and whichever device
        wrote it); each part moves from there to where it belongs."""
        payload = load_checkpoint(checkpoint_path)
        check_resumable(payload, checkpoint_path, self.world)
        check_checkpoint_config(self.config, payload.get("config"), checkpoint_path)  # the same run
        restore_networks(self.vae, payload, checkpoint_path)
        restore_optimizer(self.optimizer, payload["optimizer"])
        self.scheduler.load_state_dict(payload["scheduler"])
        set_rng_state(payload["rng"][self.rank])
        self.variant.load_sampler_state(payload["sampler"])
        self.epoch, self.step = payload["epoch"], payload["step"]
        self.best_valid = payload["extra"].get("best_valid_elbo", -math.inf)
        if self.is_main:
            self.records = [r for r in read_metrics(self.out_dir / "metrics.jsonl") if r["epoch"] <= self.epoch]
            self._repair(checkpoint_path, payload["extra"].get("record"))

    def _repair(self, last: Path, last_record: dict | None) -> None:
        """Mend what an interruption between the writes of one epoch left behind (rank 0). Each
        epoch writes last.pt, then best.pt, then metrics.jsonl; a kill between them leaves
        metrics.jsonl without last.pt's epoch (its record is inside last.pt) or best.pt one
        epoch behind: both are brought up to last.pt here, so that best.pt holds the best
        validation epoch of metrics.jsonl."""
        if last_record is not None and (not self.records or self.records[-1]["epoch"] < self.epoch):
            self.records.append(last_record)
            write_metrics(self.out_dir / "metrics.jsonl", self.records)
            plots.training_curves(self.records, self.out_dir / "curves.png")
            self.repaired.append("metrics.jsonl")
        if not self.records:
            return
        best_epoch = max(self.records, key=lambda r: r["valid_elbo"])["epoch"]
        best = self.out_dir / "best.pt"
        held = load_checkpoint(best)["epoch"] if best.is_file() else None
        if held == best_epoch:
            return
        if best_epoch == self.epoch:  # last.pt is the best epoch: the copy did not happen
            with atomic_path(best) as tmp:
                shutil.copyfile(last, tmp)
            self.repaired.append("best.pt")
        else:
            self.log(f"warning: {best} holds epoch {held}, but metrics.jsonl's best validation epoch is "
                     f"{best_epoch}, whose checkpoint is gone; it is replaced when a later epoch does better")

    # -- the loop ------------------------------------------------------------------------------
    def fit(self) -> dict:
        cfg = self.config
        if self.is_main:
            self.out_dir.mkdir(parents=True, exist_ok=True)
            write_json(self.out_dir / "config.json", cfg.to_dict())
            for name, content in self.variant.files(self.out_dir).items():
                write_json(self.out_dir / name, content)
        test = self._eval_set("test")
        self.log(f"fit: {cfg.model} on {self.dataset.name}, {self.description} ({cfg.binarize} binarization), "
                 f"{test.description}; {describe(self.fabric)}; epochs {self.epoch + 1}..{cfg.epochs}")
        started = time.perf_counter()
        self.stopped, first_epoch = "epochs", self.epoch + 1
        for epoch in range(first_epoch, cfg.epochs + 1):
            reason = self._stop_before_epoch(time.perf_counter() - started, epoch - first_epoch)
            if reason is not None:
                self.stopped = reason
                break
            try:
                record = self._train_epoch(epoch)
                record.update(self._evaluate())
            except ValueError as e:  # a distribution's argument check on non-finite parameters
                raise self._diverged(epoch, e) from None
            self._check_parameters(epoch)  # never a checkpoint of non-finite parameters
            self.records.append(record)
            self.epoch = epoch
            self._save_epoch(record)
            self.log(self._epoch_line(record))
        summary = {}
        if self.is_main:
            kill_point("pictures", self.epoch)
            pictures = self.write_pictures()
            summary = self._summary(time.perf_counter() - started, pictures)
            kill_point("summary", self.epoch)
            write_json(self.out_dir / "summary.json", summary)
        if self.writer is not None:
            self.writer.close()
        self.fabric.barrier()  # every file is written before any process reads the run (evaluate)
        return summary

    def _stop_before_epoch(self, elapsed: float, epochs_done: int) -> str | None:
        """Whether to end training before the next epoch, and why: ``"early-stopping"`` or
        ``"max-minutes"``. Rank 0 decides (it holds every epoch's record, also after a resume,
        and its clock) and every process follows it."""
        reason = None
        if self.is_main:
            reason = self._no_recent_improvement() or self._out_of_time(elapsed, epochs_done)
        return self.fabric.broadcast(reason, src=0) if self.world > 1 else reason

    def _no_recent_improvement(self) -> str | None:
        """--early-stopping N: the validation ELBO has not improved in the last N epochs."""
        patience = self.config.early_stopping
        if not patience or not self.records:
            return None
        best = max(self.records, key=lambda r: r["valid_elbo"])["epoch"]
        if self.epoch - best < patience:
            return None
        self.log(f"early stopping after epoch {self.epoch}: the validation ELBO last improved at epoch {best}")
        return "early-stopping"

    def _out_of_time(self, elapsed: float, epochs_done: int) -> str | None:
        """--max-minutes: would the next epoch (as long as this invocation's epochs so far, training
        and evaluation) end past the limit? The first epoch of an invocation always runs."""
        limit = self.config.max_minutes
        if limit is None or epochs_done == 0 or elapsed + elapsed / epochs_done <= 60 * limit:
            return None
        self.log(f"stopping after epoch {self.epoch}: another epoch would pass --max-minutes {limit:g}")
        return "max-minutes"

    def train_step(self, args: tuple) -> torch.Tensor:
        """One optimizer step on one batch's loss arguments; returns the detached loss. Pyro's
        validation of distribution arguments is as set globally for the first step, off after."""
        if self.validated and not VALIDATE_EVERY_STEP:
            with pyro.validation_enabled(False):
                return self._step(args)
        self.validated = True
        return self._step(args)

    def _step(self, args: tuple) -> torch.Tensor:
        loss = self.loss(*args)
        self.fabric.backward(loss)
        if self.clip is not None:
            self.fabric.clip_gradients(self.loss, self.fabric_optimizer, clip_val=self.clip)
        self.fabric_optimizer.step()
        self.fabric_optimizer.zero_grad(set_to_none=True)
        return loss.detach()

    def _train_epoch(self, epoch: int) -> dict:
        cfg = self.config
        self.vae.train()
        steps = len(self.variant)
        total = torch.zeros((), dtype=torch.float64, device=self.device)
        pending: list[torch.Tensor] = []
        bar = tqdm(total=steps, desc=f"epoch {epoch}/{cfg.epochs}", unit="batch", leave=False,
                   disable=None if self.is_main else True)
        started = time.perf_counter()
        for i, args in enumerate(self.variant.training_batches()):
            self.variant.latent_scale.beta = beta_at(self.step, steps, cfg.beta, cfg.warmup_epochs)
            loss = self.train_step(args)
            pending.append(loss)
            self.step += 1
            for hook in self.step_hooks:
                hook(self, loss)
            if len(pending) == LOG_EVERY or i == steps - 1:
                total += self._check_finite(pending, epoch, i)
                running = -float(total) / (self.variant.num_train * (i + 1))
                bar.set_postfix_str(f"ELBO {running:.2f} nats/image, beta {self.variant.latent_scale.beta:.2f}")
                pending = []
            bar.update(1)
        bar.close()
        if self.device.type == "cuda":
            torch.cuda.synchronize()
        seconds = time.perf_counter() - started
        broadcast_buffers(self.fabric, self.vae)  # every process evaluates and saves rank 0's statistics
        lr = current_lr(self.optimizer)
        self.scheduler.step()  # learning-rate schedule: one step per epoch
        n = self.variant.num_train
        return {"epoch": epoch, "step": self.step, "beta": self.variant.latent_scale.beta, "lr": lr,
                "train_objective": float(total) / (n * steps), "seconds": seconds, "images_per_s": n / seconds}

    def _check_finite(self, losses: list[torch.Tensor], epoch: int, last_index: int) -> torch.Tensor:
        """The pending losses averaged over the processes (each is already an estimate of the
        whole set's loss) and summed; a clear message, on every process, at the first one that
        is not finite."""
        stacked = self.fabric.all_reduce(torch.stack(losses).double(), reduce_op="mean")
        finite = torch.isfinite(stacked)
        if bool(finite.all()):
            return stacked.sum()
        first = int((~finite).nonzero()[0])
        batch = last_index - len(losses) + 1 + first
        step = self.step - len(losses) + first + 1
        kept = (f"the last good checkpoint, {self.out_dir / 'last.pt'} (epoch {self.epoch}), is kept"
                if self.epoch > 0 else "no checkpoint was written yet")
        error = TrainingDiverged(
            f"the loss became {float(stacked[first])} at epoch {epoch}, step {step} (batch {batch + 1} of "
            f"{len(self.variant)}); training stopped and {kept}. Try a lower --lr (now {self.config.lr:g}), "
            f"--optimizer clipped-adam, or KL warm-up (--warmup-epochs 5)")
        error.on_every_rank = True  # every process raises it: rank 0 alone reports it
        raise error

    def _non_finite_parameters(self) -> list[str]:
        """The names of the parameters holding NaN or infinity (one device sync)."""
        named = list(self.vae.named_parameters())
        finite = torch.stack([torch.isfinite(p).all() for _, p in named]).tolist()
        return [name for (name, _), ok in zip(named, finite) if not ok]

    def _check_parameters(self, epoch: int) -> None:
        """After an epoch, before its checkpoint: every parameter finite, or TrainingDiverged."""
        bad = self._non_finite_parameters()
        if bad:
            raise self._diverged(epoch, None, bad)

    def _diverged(self, epoch: int, error: ValueError | None, bad: list[str] | None = None) -> Exception:
        """TrainingDiverged when the parameters are no longer finite, or when a distribution
        refused the invalid (NaN, infinite) arguments that overflowing networks gave it: torch's
        argument check raises that ValueError inside a step, before any loss can be read. (The
        data were checked before training.) Any other ``error`` is returned as it is."""
        bad = self._non_finite_parameters() if bad is None else bad
        refused = None if error is None else _INVALID_ARGUMENT.search(str(error))
        if bad:
            shown = ", ".join(bad[:3]) + (f" and {len(bad) - 3} more" if len(bad) > 3 else "")
            cause = f"the parameters became NaN or infinite ({shown})"
        elif refused:
            cause = (f"the networks' outputs overflowed: the {refused['name']} of a {refused['dist']} "
                     f"distribution became NaN or infinite")
        else:
            return error
        steps = len(self.variant)
        batch = self.step - (epoch - 1) * steps  # optimizer steps done in this epoch
        where = (f"epoch {epoch}, after step {self.step} (batch {batch} of {steps})" if batch < steps
                 else f"the end of epoch {epoch}")
        kept = (f"the last good checkpoint, {self.out_dir / 'last.pt'} (epoch {self.epoch}), is kept"
                if self.epoch > 0 else "no checkpoint was written yet")
        diverged = TrainingDiverged(
            f"training diverged at {where}: {cause}; training stopped and {kept}. Try a lower --lr (now "
            f"{self.config.lr:g}), --optimizer clipped-adam, or KL warm-up (--warmup-epochs 5)")
        diverged.on_every_rank = True  # the parameters are the same on every process
        return diverged

    def _evaluate(self) -> dict:
        """The variant's per-split metrics, each process scoring its share of the images."""
        out = self.variant.epoch_metrics(self.vae, self.eval_sets,
                                         reduce=lambda t: self.fabric.all_reduce(t, reduce_op="sum"))
        if self.bits_per_dim:  # the ELBO in bits per dimension too
            for s in self.eval_sets:
                out[f"{s.name}_bits_per_dim"] = self.vae.model.likelihood.bits_per_dim(
                    out[f"{s.name}_elbo"], self.dataset.dims)
        return out

    def _epoch_line(self, r: dict) -> str:
        return (f"epoch {r['epoch']:>3}/{self.config.epochs}  train ELBO {r['train_elbo']:8.2f}  "
                f"valid {r['valid_elbo']:8.2f}  test {r['test_elbo']:8.2f} nats/image  "
                f"(recon {r['test_recon']:.2f}, KL {r['test_kl']:.2f})  beta {r['beta']:.2f}  "
                f"lr {r['lr']:.2e}  {r['seconds']:.1f}s, {r['images_per_s']:,.0f} img/s"
                + (f"  test {r['test_bits_per_dim']:.3f} bits/dim" if "test_bits_per_dim" in r else "")
                + self.variant.epoch_line(r))

    # -- outputs -------------------------------------------------------------------------------
    def _save_epoch(self, record: dict) -> None:
        rngs = gather_objects(self.fabric, rng_state())  # every process's RNGs, for an exact resume
        improved = record["valid_elbo"] > self.best_valid
        if improved:
            self.best_valid = record["valid_elbo"]
        if not self.is_main:
            return
        # last.pt (holding the epoch's record), then best.pt, then metrics.jsonl: a kill between
        # them leaves best.pt behind last.pt, or metrics.jsonl without its epoch; --resume mends
        # both from last.pt (restore's _repair), so best.pt holds metrics.jsonl's best epoch
        last = self.out_dir / "last.pt"
        save_checkpoint(last, vae=self.vae, optimizer=self.optimizer, scheduler=self.scheduler, rng=rngs,
                        sampler_state=self.variant.sampler_state(), epoch=self.epoch, step=self.step,
                        config=self.config.to_dict(),
                        extra={"best_valid_elbo": self.best_valid, "record": record,
                               "image_shape": list(self.dataset.image_shape),
                               "num_classes": self.dataset.num_classes, "processes": self.world})
        if improved:
            with atomic_path(self.out_dir / "best.pt") as tmp:
                shutil.copyfile(last, tmp)
                kill_point("best", self.epoch)  # (tests only: an interruption before the rename)
        kill_point("metrics", self.epoch)
        write_metrics(self.out_dir / "metrics.jsonl", self.records)
        plots.training_curves(self.records, self.out_dir / "curves.png")
        if self.writer is not None:
            for key, value in record.items():
                if key != "epoch":
                    self.writer.add_scalar(key.replace("_", "/", 1), value, record["epoch"])
            self.writer.add_images("samples", self.vae.sample(64).cpu(), record["epoch"])

    def write_pictures(self) -> list[Path]:
        """The variant's pictures of the current model (samples, reconstructions, latent maps,
        ...), drawn from the run's seed, and the training curves."""
        self.vae.eval()
        with torch.random.fork_rng(devices=self._cuda()):
            torch.manual_seed(self.config.seed)
            paths = self.variant.pictures(self.vae, self._eval_set("test"), self.out_dir)
        paths.append(self.out_dir / "curves.png")
        return paths

    def _summary(self, seconds: float, pictures: list[Path]) -> dict:
        last = self.records[-1]
        best = max(self.records, key=lambda r: r["valid_elbo"])
        return {
            "model": self.config.model, "epochs": self.epoch, "seconds": seconds,
            "stopped": self.stopped,  # epochs, early-stopping or max-minutes
            "device": describe(self.fabric), "processes": self.world,
            "test_binarization": self._eval_set("test").description,
            "final": {k: last[k] for k in last if k.split("_")[0] in ("train", "valid", "test")},
            "best_epoch": best["epoch"], "best_valid_elbo": best["valid_elbo"],
            "best_test_elbo": best["test_elbo"],
            "files": sorted(p.name for p in self.out_dir.iterdir() if p.is_file() and not p.name.startswith(".")),
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
