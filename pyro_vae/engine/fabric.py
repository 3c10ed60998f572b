"""Lightning Fabric, set up from a run's options: where the processes run (``--accelerator``,
``--devices``, ``--num-nodes``), how they share the work (``--strategy``) and in what precision
(``--precision``). Fabric starts the processes itself (``--devices 2``), or takes them from
``torchrun`` or SLURM when launched under them; the training loop stays ours.
"""

from __future__ import annotations

import logging
import os
import socket
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from ..devices import ACCELERATORS, check_accelerator, resolve_device  # noqa: F401 - the one device check
from ..errors import ConfigError

STRATEGIES = ("auto", "ddp", "ddp_find_unused_parameters_true")
PRECISIONS = ("32-true", "bf16-mixed", "16-mixed")
LAUNCHER_PID = "PYRO_VAE_LAUNCHER_PID"  # set for the processes that Fabric starts from ours
# DistributedDataParallel as the training loop uses it (docs/performance.md, "Several CPU
# processes"): the gradients' all-reduce starts bucket by bucket while the backward pass still
# runs (buckets of BUCKET_CAP_MB; the gradients are views of the buckets); the
# graph is the same at every step (static_graph: no per-step search for unused parameters); and
# the buffers are not broadcast before every forward (a collective per step): in training mode no
# forward reads another process's buffers (batch norm normalizes by the batch's own statistics),
# and the loop copies rank 0's buffers to every process once per epoch (broadcast_buffers below).
BUCKET_CAP_MB = 25
DDP_OPTIONS = {"gradient_as_bucket_view": True, "forward_sync_buffers": False, "bucket_cap_mb": BUCKET_CAP_MB}


def _devices(value: str | int) -> int | str:
    return "auto" if str(value) == "auto" else int(value)


def build_fabric(
    accelerator: str = "auto",
    devices: str | int = 1,
    num_nodes: int = 1,
    strategy: str = "auto",
    precision: str = "32-true",
):
    """A ``lightning.fabric.Fabric`` for these options (not launched yet), or a clear error."""
    from lightning.fabric import Fabric
    from lightning.fabric.strategies import DDPStrategy

    check_accelerator(accelerator)
    if strategy not in STRATEGIES:
        raise ConfigError(f"--strategy {strategy!r} is not one of: {', '.join(STRATEGIES)}")
    if precision not in PRECISIONS:
        raise ConfigError(f"--precision {precision!r} is not one of: {', '.join(PRECISIONS)}")
    if precision == "16-mixed" and resolve_device(accelerator).type == "cpu":
        raise ConfigError(
            "--precision 16-mixed (float16 with loss scaling) needs a GPU; on a CPU use --precision bf16-mixed"
        )
    options = dict(accelerator=accelerator, devices=_devices(devices), num_nodes=num_nodes, precision=precision)
    try:
        fabric = Fabric(strategy=strategy, **options)
        if type(fabric.strategy) is DDPStrategy:  # several processes: DDP with the loop's options
            fabric = Fabric(strategy=ddp_strategy(strategy), **options)
        return fabric
    except (ValueError, RuntimeError, TypeError) as e:  # Lightning's MisconfigurationException too
        raise ConfigError(
            f"Lightning Fabric refused --accelerator {accelerator} --devices {devices} "
            f"--num-nodes {num_nodes} --strategy {strategy} --precision {precision}: {e}"
        ) from None


def ddp_strategy(strategy: str = "ddp"):
    """Lightning's ``DDPStrategy`` (processes started by re-running the command) with
    :data:`DDP_OPTIONS`; ``ddp_find_unused_parameters_true`` lets the parameters a step leaves
    unused change from step to step, which a static graph does not allow."""
    from lightning.fabric.strategies import DDPStrategy

    if strategy == "ddp_find_unused_parameters_true":
        return DDPStrategy(start_method="popen", find_unused_parameters=True, **DDP_OPTIONS)
    return DDPStrategy(start_method="popen", static_graph=True, **DDP_OPTIONS)


def fabric_for(config, device: str | torch.device | None = None):
    """The Fabric of a run's config; ``device`` (a torch device or accelerator name) overrides
    the accelerator and means one process on it (in-process use: tests, notebooks)."""
    if device is None:
        return build_fabric(config.accelerator, config.devices, config.num_nodes, config.strategy, config.precision)
    device = torch.device(device) if not isinstance(device, torch.device) else device
    return build_fabric(device.type, 1, 1, "auto", config.precision)


def launch(fabric, log: Callable[[str], object] | None = None) -> list[tuple[str, int]]:
    """Start (or join) the processes; returns every process's (host, pid), in rank order.
    Processes that Fabric starts from this one get a watchdog: if this process (rank 0) ends,
    they end too instead of waiting in a collective. Lightning's banner of several lines is
    replaced by one line of ours, which rank 0 says to ``log``."""
    if fabric.world_size > 1 and "LOCAL_RANK" not in os.environ:
        if not _relaunchable():
            raise ConfigError(
                f"{fabric.world_size} processes are started by running this program's command again, which "
                "works for `python -m pyro_vae.fit` / `pyro_vae.evaluate`, `pyro-vae fit` / `evaluate` and for "
                "Python scripts, not from "
                "here (a notebook, pytest, an interactive session); run the command line, or use torchrun"
            )
        os.environ[LAUNCHER_PID] = str(os.getpid())  # inherited by the children Fabric starts
    quiet_banner()
    fabric.launch()
    if fabric.local_rank > 0 and os.environ.get(LAUNCHER_PID):
        _watch_parent(int(os.environ[LAUNCHER_PID]), fabric.global_rank)
    processes = job_processes(fabric)
    if log is not None and fabric.is_global_zero and fabric.world_size > 1:
        log(processes_line(processes))
    return processes


class _DropBanner(logging.Filter):
    """Drops the lines of Lightning's banner when the processes connect."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not any(words in message for words in BANNER_WORDS)


BANNER_WORDS = ("Initializing distributed: GLOBAL_RANK", "All distributed processes registered")
# the loggers that write it: Lightning's rank-zero helpers log through the last of these that was imported
BANNER_LOGGERS = (
    "lightning.fabric.utilities.distributed",
    "lightning.fabric.utilities.rank_zero",
    "lightning.pytorch.utilities.rank_zero",
    "pytorch_lightning.utilities.rank_zero",
    "lightning_utilities.core.rank_zero",
)
_DROP_BANNER = _DropBanner()


def quiet_banner() -> None:
    """Filter Lightning's banner out of the loggers that write it (other messages pass)."""
    for name in BANNER_LOGGERS:
        logging.getLogger(name).addFilter(_DROP_BANNER)  # once: a filter already there is not added again


def job_processes(fabric) -> list[tuple[str, int]]:
    """(host name, process id) of every process, in rank order (a collective: every rank calls it)."""
    return gather_objects(fabric, (socket.gethostname(), os.getpid()))


def processes_line(processes: list[tuple[str, int]]) -> str:
    """'2 processes connected (gloo): rank 0 pid 4241, rank 1 pid 4242', hosts named when several."""
    import torch.distributed as dist

    several_hosts = len({host for host, _ in processes}) > 1
    ranks = ", ".join(
        f"rank {r} pid {pid}" + (f" on {host}" if several_hosts else "") for r, (host, pid) in enumerate(processes)
    )
    backend = dist.get_backend() if dist.is_available() and dist.is_initialized() else "?"
    return f"{len(processes)} processes connected ({backend}): {ranks}"


def _relaunchable() -> bool:
    """Whether Fabric's launcher can start more processes by re-running this command line."""
    import __main__

    spec = getattr(__main__, "__spec__", None)
    if spec is not None:
        return spec.name.startswith("pyro_vae.")
    # a Python script, or the installed `pyro-vae` command (a Python script without the suffix)
    return bool(sys.argv and (sys.argv[0].endswith(".py") or os.path.basename(sys.argv[0]) == "pyro-vae"))


def _watch_parent(pid: int, rank: int) -> None:
    def watch():
        while True:
            time.sleep(0.5)
            if os.getppid() != pid:
                print(
                    f"rank {rank}: the launching process (rank 0) has ended; stopping too", file=sys.stderr, flush=True
                )
                os._exit(1)

    threading.Thread(target=watch, daemon=True, name="pyro-vae-parent-watchdog").start()


def process_seed(seed: int, rank: int) -> int:
    """The torch seed of process ``rank``: each process draws its own z noise."""
    return int(np.random.SeedSequence(seed, spawn_key=(rank,)).generate_state(1, np.uint32)[0])


def gather_objects(fabric, obj: Any) -> list[Any]:
    """``obj`` of every process, in rank order (a list of one without distribution)."""
    if fabric.world_size == 1:
        return [obj]
    import io

    import torch.distributed as dist

    buffer = io.BytesIO()
    torch.save(obj, buffer)  # tensors travel as torch's own bytes: all_gather_object's own pickling
    out: list[Any] = [None] * fabric.world_size  # of CPU tensors fails in this torch version
    dist.all_gather_object(out, buffer.getvalue())
    # bytes from this job's own processes (not a file): numpy arrays and the like allowed
    return [torch.load(io.BytesIO(b), weights_only=False) for b in out]


def all_reduce(fabric, tensor: torch.Tensor, reduce_op: str = "sum") -> torch.Tensor:
    """``tensor`` summed over the processes (``reduce_op="mean"``: averaged), in place, in one
    collective: ``fabric.all_reduce`` waits in a barrier, a second collective, before each
    reduction. The mean is the sum divided by the number of processes, as Fabric takes it on gloo."""
    if reduce_op not in ("sum", "mean"):
        raise ValueError(f"reduce_op must be 'sum' or 'mean', not {reduce_op!r}")
    if fabric.world_size == 1:
        return tensor
    import torch.distributed as dist

    dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor.div_(fabric.world_size) if reduce_op == "mean" else tensor


def broadcast_buffers(fabric, module: torch.nn.Module) -> None:
    """Copy rank 0's buffers (batch-norm statistics) to every process: DDP's own broadcast
    happens before each forward, so after an epoch each process holds its last batch's."""
    if fabric.world_size == 1:
        return
    import torch.distributed as dist

    for buffer in module.buffers():
        dist.broadcast(buffer.data, src=0)


def float32_outputs(module: torch.nn.Module) -> None:
    """Under mixed precision, cast every linear / convolution layer's low-precision output back
    to float32: the next layer is cast down again by autocast, but every distribution (and so
    every log-density the ELBO sums) sees float32 parameters."""

    def to_float32(_module, _inputs, output):
        if isinstance(output, torch.Tensor) and output.dtype in (torch.bfloat16, torch.float16):
            return output.float()
        return output

    for m in module.modules():
        if isinstance(m, (torch.nn.Linear, torch.nn.modules.conv._ConvNd)):
            m.register_forward_hook(to_float32)


def describe(fabric) -> str:
    """'cpu', or '2 processes x cpu (ddp, 32-true)'-like words for the logs and the summary."""
    device = fabric.device.type
    if fabric.device.type == "cuda":
        device = torch.cuda.get_device_name(fabric.device)
    precision = getattr(fabric.strategy.precision, "precision", "")
    if fabric.world_size == 1:
        return f"{device}" + (f", {precision}" if precision and precision != "32-true" else "")
    return f"{fabric.world_size} processes x {device} ({type(fabric.strategy).__name__}, {precision})"


def rank_and_world() -> tuple[int, int]:
    """This process's global rank and the number of processes (0, 1 outside a job)."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return (int(os.environ.get("RANK", os.environ.get("LOCAL_RANK", 0))), int(os.environ.get("WORLD_SIZE", 1)))
