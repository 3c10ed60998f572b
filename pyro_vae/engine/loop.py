"""The training loop on Lightning Fabric: one code path for one process and many.

Each step, on each of the W processes, for its slice of a global batch of B of the N training
images:
    loss = -(N W / B) * sum_i [ log p(x_i|z_i) + beta * (log p(z_i) - log q(z_i|x_i)) ],  z_i ~ q(z|x_i)
so every process's loss estimates minus the whole training set's (beta-)ELBO, and the gradients
that DDP averages over the processes equal one process's on the whole global batch. The loss is
Pyro's ELBO module (``Trace_ELBO()(model, guide)``, built by the run's variant, which also gives
each batch's scales N W / B and beta as arguments), the optimizer one ``torch.optim.Adam`` over
its parameters. No step waits for the device: losses stay on it and are read (and reduced across
processes) once per log interval. Only rank 0 writes files, prints and shows the progress bar.

The loop's helpers, one job each: :mod:`.training_data` (the images), :mod:`.divergence` (a clear
error when training diverges), :mod:`.records` (metrics.jsonl, TensorBoard, pictures, summary),
:mod:`.checkpoint` and :mod:`.resume` (saving, restoring, mending an interrupted epoch) and
:mod:`.stopping` (early stopping, the time limit).
"""

from __future__ import annotations

import math
import os
import shutil
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

import pyro
import torch
from tqdm.auto import tqdm

from ..atomic import atomic_path, write_json
from ..config import FitConfig
from ..vae import VAE
from ..variants import EvalSet, build_vae, check_data, check_matches_config, checked, variant_of
from . import divergence, stopping
from . import records as run_records
from .checkpoint import (
    check_resumable,
    load_checkpoint,
    restore_networks,
    restore_optimizer,
    rng_state,
    save_checkpoint,
    set_rng_state,
)
from .fabric import all_reduce, broadcast_buffers, describe, fabric_for, float32_outputs, gather_objects, process_seed
from .faults import KILL_ENV, kill_point, step_hook
from .optim import build_optimizer, build_scheduler, clip_value, current_lr
from .peers import lost_peer
from .resume import records_until, repair_interrupted_epoch
from .run_config import check_checkpoint_config
from .training_data import evaluation_sets, training_split

# Distribution arguments are validated on a run's first step (bad data is caught there) and not
# after: each check reads a value on the host (docs/performance.md gives the cost). The test
# suite (tests/conftest.py) sets PYRO_VAE_VALIDATE_EVERY_STEP=1 to keep it on for every step.
VALIDATE_EVERY_STEP = os.environ.get("PYRO_VAE_VALIDATE_EVERY_STEP") == "1"
LOG_EVERY = 50  # steps between reads of the running loss (one host-device sync each)

# Every line the tools print is flushed at once, so progress shows in piped logs too.
say = partial(print, flush=True)


class Trainer:
    """Trains a VAE on ``dataset`` as ``config`` says, writing everything to ``out_dir``.

    ``fabric`` is a launched ``lightning.fabric.Fabric`` (the CLI's, possibly many processes);
    without one, the trainer runs in this process on ``device`` (default: ``config.accelerator``).
    ``step_hooks`` are called as ``hook(trainer, loss)`` after every optimizer step.
    """

    def __init__(
        self,
        config: FitConfig,
        dataset,
        out_dir: str | Path,
        device=None,
        *,
        fabric=None,
        vae: VAE | None = None,
        log: Callable[[str], None] = say,
    ):
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
        train = training_split(dataset, cfg)
        if vae is not None:  # config.json must describe it, or the run could not be reloaded
            check_matches_config(vae, cfg, dataset.image_shape, dataset.num_classes)
        self.vae = vae if vae is not None else build_vae(cfg, dataset.image_shape, dataset.num_classes)
        self.vae.to(self.device)
        likelihood = getattr(self.vae.model, "likelihood", None)  # a model of one's own may have none
        if likelihood is not None:
            likelihood.check_data(train.data, cfg.binarize)  # uint8 pixels or floats
        self.eval_sets = evaluation_sets(cfg, dataset, train, likelihood, self.device)
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
        self.lost_peer = False  # rank 0: another process ended after the run was complete
        self.best_valid = -math.inf
        self.tensorboard = run_records.TensorBoard(self.out_dir) if cfg.tensorboard and self.is_main else None

    def _cuda(self) -> list:
        return [self.device] if self.device.type == "cuda" else []

    def _eval_set(self, name: str) -> EvalSet:
        return next(s for s in self.eval_sets if s.name == name)

    def restore(self, checkpoint_path: Path) -> None:
        """Continue from a checkpoint: networks, optimizer, scheduler, RNGs, sampler, epoch, metrics.
        The checkpoint is read onto the CPU, whatever this run's device (and whichever device
        wrote it); each part moves from there to where it belongs. Rank 0 mends what an
        interruption between the writes of one epoch left behind (:mod:`.resume`)."""
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
            self.records = records_until(self.out_dir, self.epoch)
            self.repaired += repair_interrupted_epoch(
                self.out_dir, checkpoint_path, self.epoch, payload["extra"].get("record"), self.records, self.log
            )

    # -- the loop ------------------------------------------------------------------------------
    def fit(self) -> dict:
        cfg = self.config
        if self.is_main:
            self.out_dir.mkdir(parents=True, exist_ok=True)
            write_json(self.out_dir / "config.json", cfg.to_dict())
            for name, content in self.variant.files(self.out_dir).items():
                write_json(self.out_dir / name, content)
        self.log(
            f"fit: {cfg.model} on {self.dataset.name}, {self.description} ({cfg.binarize} binarization), "
            f"{self._eval_set('test').description}; {describe(self.fabric)}; "
            f"epochs {self.epoch + 1}..{cfg.epochs}"
        )
        started = time.perf_counter()
        self.stopped, first_epoch = "epochs", self.epoch + 1
        for epoch in range(first_epoch, cfg.epochs + 1):
            reason = self._stop_before_epoch(time.perf_counter() - started, epoch - first_epoch)
            if reason is not None:
                self.stopped = reason
                break
            try:
                record = self._train_epoch(epoch)
                record.update(self.evaluate())
            except ValueError as e:  # a distribution's argument check on non-finite parameters
                raise divergence.diverged(self, epoch, e) from None
            divergence.check_parameters(self, epoch)  # never a checkpoint of non-finite parameters
            self.records.append(record)
            self.epoch = epoch
            self._save_epoch(record)
            self.log(run_records.epoch_line(record, cfg.epochs, self.variant.epoch_line(record)))
        summary = self._finish(time.perf_counter() - started) if self.is_main else {}
        kill_point("complete", self.epoch, after=self.out_dir / "summary.json")  # (tests only)
        self._wait_for_every_process()
        return summary

    def _wait_for_every_process(self) -> None:
        """The barrier after training: every file is written before any process reads the run
        (evaluate). Rank 0 has written every file by then: if another process ended meanwhile, the
        run is complete all the same (``lost_peer`` says so), not failed."""
        try:
            self.fabric.barrier()
        except Exception as e:
            if not (self.is_main and lost_peer(e)):
                raise
            self.lost_peer = True

    def _stop_before_epoch(self, elapsed: float, epochs_done: int) -> str | None:
        """Whether to end training before the next epoch, and why: ``"early-stopping"`` or
        ``"max-minutes"``. Rank 0 decides (it holds every epoch's record, also after a resume,
        and its clock) and every process follows it."""
        reason = None
        if self.is_main:
            for name, message in (
                (
                    "early-stopping",
                    stopping.no_recent_improvement(self.records, self.epoch, self.config.early_stopping),
                ),
                ("max-minutes", stopping.out_of_time(elapsed, epochs_done, self.config.max_minutes, self.epoch)),
            ):
                if message is not None:
                    self.log(message)
                    reason = name
                    break
        return self.fabric.broadcast(reason, src=0) if self.world > 1 else reason

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
        self.vae.train()
        steps, n = len(self.variant), self.variant.num_train
        total = torch.zeros((), dtype=torch.float64, device=self.device)
        pending: list[torch.Tensor] = []
        bar = tqdm(
            total=steps,
            desc=f"epoch {epoch}/{self.config.epochs}",
            unit="batch",
            leave=False,
            disable=None if self.is_main else True,
        )
        started = time.perf_counter()
        for i, args in enumerate(self.variant.training_batches(self.step)):  # (..., data scale, beta)
            loss = self.train_step(args)
            pending.append(loss)
            self.step += 1
            for hook in self.step_hooks:
                hook(self, loss)
            if len(pending) == LOG_EVERY or i == steps - 1:
                total += divergence.summed_finite_losses(self, pending, epoch, i)
                running = -float(total) / (n * (i + 1))
                bar.set_postfix_str(f"ELBO {running:.2f} nats/image, beta {self.variant.beta(self.step - 1):.2f}")
                pending = []
            bar.update(1)
        bar.close()
        if self.device.type == "cuda":
            torch.cuda.synchronize()
        seconds = time.perf_counter() - started
        broadcast_buffers(self.fabric, self.vae)  # every process evaluates and saves rank 0's statistics
        lr = current_lr(self.optimizer)
        self.scheduler.step()  # learning-rate schedule: one step per epoch
        return {
            "epoch": epoch,
            "step": self.step,
            "beta": self.variant.beta(self.step - 1),
            "lr": lr,
            "train_objective": float(total) / (n * steps),
            "seconds": seconds,
            "images_per_s": n / seconds,
        }

    def evaluate(self) -> dict:
        """The variant's per-split metrics, each process scoring its share of the images."""
        out = self.variant.epoch_metrics(
            self.vae, self.eval_sets, reduce=lambda t: all_reduce(self.fabric, t, reduce_op="sum")
        )
        if self.bits_per_dim:  # the ELBO in bits per dimension too
            for s in self.eval_sets:
                out[f"{s.name}_bits_per_dim"] = self.vae.model.likelihood.bits_per_dim(
                    out[f"{s.name}_elbo"], self.dataset.dims
                )
        return out

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
        # both from last.pt (.resume), so best.pt holds metrics.jsonl's best epoch
        last = self.out_dir / "last.pt"
        save_checkpoint(
            last,
            vae=self.vae,
            optimizer=self.optimizer,
            scheduler=self.scheduler,
            rng=rngs,
            sampler_state=self.variant.sampler_state(),
            epoch=self.epoch,
            step=self.step,
            config=self.config.to_dict(),
            extra={
                "best_valid_elbo": self.best_valid,
                "record": record,
                "image_shape": list(self.dataset.image_shape),
                "num_classes": self.dataset.num_classes,
                "processes": self.world,
            },
        )
        if improved:
            with atomic_path(self.out_dir / "best.pt") as tmp:
                shutil.copyfile(last, tmp)
                kill_point("best", self.epoch)  # (tests only: an interruption before the rename)
        kill_point("metrics", self.epoch)
        run_records.write_epoch_records(self.out_dir, self.records)
        if self.tensorboard is not None:
            self.tensorboard.add(record, self.vae)

    def write_pictures(self) -> list[Path]:
        """The variant's pictures of the current model, drawn from the run's seed, and the curves."""
        return run_records.write_pictures(
            self.vae, self.variant, self._eval_set("test"), self.out_dir, self.config.seed, self.device, self.records
        )

    def _finish(self, seconds: float) -> dict:
        """Rank 0, after the last epoch: the pictures, then summary.json (returned)."""
        kill_point("pictures", self.epoch)
        pictures = self.write_pictures()
        summary = run_records.run_summary(
            self.records,
            model=self.config.model,
            epochs=self.epoch,
            seconds=seconds,
            stopped=self.stopped,
            device=describe(self.fabric),
            processes=self.world,
            test_description=self._eval_set("test").description,
            out_dir=self.out_dir,
            pictures=pictures,
        )
        kill_point("summary", self.epoch)
        write_json(self.out_dir / "summary.json", summary)
        if self.tensorboard is not None:
            self.tensorboard.close()
        return summary
