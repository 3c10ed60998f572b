"""An up-front estimate of a training run's memory, and a refusal when the machine has less.

    check_training_memory(config, dataset, device)   # ConfigError with the estimate and the fix

The estimate adds what the run keeps for its whole length and what one step needs:
  - the parameters, their gradients and Adam's two moments: 4 x 4 bytes per parameter, counted on
    a copy of the model built on the "meta" device (no memory used);
  - the data the trainer places on the device: the training images (once more on a GPU where they
    fit half its free memory, as stored: 1 byte per 8-bit pixel; 4 bytes when binarized statically)
    and the three evaluation sets (float32 copies, up to 10,000 images);
  - one training step's autograd memory: the tensors saved for the backward pass, counted with
    ``torch.autograd.graph.saved_tensors_hooks`` while one ELBO is computed on 1 and on 2 images
    (the difference is the cost of one image; particles and M2's enumeration over the labels
    multiply it), scaled to ``--batch-size``; plus a VampPrior's block of recomputed density
    evaluations (:data:`pyro_vae.models.priors.VAMP_BLOCK_BYTES`).
It leaves out allocator slack and PyTorch's own start-up (about 1 GB of CPU memory), so a run it
lets through can still be tight; a run it refuses would not have fitted.
"""

from __future__ import annotations

import contextlib
import os
import resource
from dataclasses import dataclass

import pyro
import torch

from ..config import FitConfig
from ..data.batches import DEVICE_MEMORY_SHARE
from ..errors import ConfigError
from ..models.priors import PRIORS
from ..objectives import elbo_terms
from ..variants import build_vae, variant_of
from .training_data import TRAIN_EVAL_SIZE  # the trainer's per-epoch training-set evaluation

GB = 2**30
MB = 2**20
PROBE_BATCHES = (2, 4)


@dataclass(frozen=True)
class Estimate:
    parameters: int  # bytes: parameters, gradients, Adam moments
    data: int  # bytes: images placed on the device by the trainer
    step: int  # bytes: one training step's autograd memory
    per_image: int  # bytes of ``step`` per image of the batch

    @property
    def total(self) -> int:
        return self.parameters + self.data + self.step

    def describe(self) -> str:
        return (
            f"about {self.total / GB:.1f} GB: {self.parameters / GB:.2f} GB of parameters, gradients and "
            f"optimizer state, {self.data / GB:.2f} GB of images, {self.step / GB:.2f} GB for one "
            f"training step ({self.per_image / 1024:,.0f} KB per image of the batch)"
        )


def available_memory(device: torch.device) -> tuple[int, str]:
    """Bytes this process can still allocate on ``device``, and where the limit comes from."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return free, f"the GPU {device} has {free / GB:.1f} GB free"
    limits = []
    try:
        with open("/proc/meminfo") as f:
            info = {line.split(":")[0]: int(line.split()[1]) * 1024 for line in f}
        limits.append((info["MemAvailable"], "available memory (MemAvailable)"))
    except (OSError, KeyError, ValueError, IndexError):
        pages = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        limits.append((pages, "physical memory"))
    try:
        with open("/sys/fs/cgroup/memory.max") as f:
            cap = f.read().strip()
        with open("/sys/fs/cgroup/memory.current") as f:
            used = int(f.read().strip())
        if cap != "max":
            limits.append((int(cap) - used, "the container's memory limit (cgroup memory.max)"))
    except (OSError, ValueError):
        pass
    soft, _ = resource.getrlimit(resource.RLIMIT_AS)
    if soft != resource.RLIM_INFINITY:
        with open("/proc/self/statm") as f:
            size = int(f.read().split()[0]) * resource.getpagesize()
        limits.append((soft - size, "the address-space limit (ulimit -v)"))
    free, what = min(limits)
    return max(0, free), f"{what} leaves {max(0, free) / GB:.1f} GB"


@contextlib.contextmanager
def _scratch_params():
    """Remove the param-store entries a probe model registers (training builds its own model)."""
    before = set(pyro.get_param_store().keys())
    try:
        yield
    finally:
        store = pyro.get_param_store()
        for name in set(store.keys()) - before:
            del store[name]


def parameter_count(config: FitConfig, image_shape, num_classes: int) -> int | None:
    """The model's number of parameters, built on the meta device (None if it cannot be)."""
    try:
        with _scratch_params(), torch.device("meta"):
            vae = build_vae(config, tuple(image_shape), num_classes)
    except Exception:  # noqa: BLE001 - some components (Pyro's autoregressive nets) need real tensors
        return None
    return sum(p.numel() for p in vae.parameters())


def step_bytes(config: FitConfig, image_shape, num_classes: int) -> tuple[int, int, int]:
    """(fixed, per image) bytes of autograd memory of one ELBO, from probes on 2 and 4 images (batch
    norm needs two), and the model's number of parameters."""
    saved = []
    with _scratch_params(), torch.random.fork_rng(devices=[]):  # the probe runs on the CPU
        torch.manual_seed(0)
        vae = build_vae(config, tuple(image_shape), num_classes)
        vae.train()
        params = {p.untyped_storage().data_ptr() for p in vae.parameters()}
        for batch in PROBE_BATCHES:
            x = torch.rand(batch, *image_shape)
            if config.binarize != "none" or getattr(getattr(vae.model, "likelihood", None), "needs_binary_data", False):
                x = x.round()
            y = torch.zeros(batch, dtype=torch.long) if variant_of(config).conditions_on_labels else None
            saved.append(_saved_for_backward(vae, x, y, params))
    per_image = max(0, saved[1] - saved[0]) // (PROBE_BATCHES[1] - PROBE_BATCHES[0])
    return max(0, saved[0] - PROBE_BATCHES[0] * per_image), per_image, sum(p.numel() for p in vae.parameters())


def _saved_for_backward(vae, x, y, params: set[int]) -> int:
    """Bytes of the tensors one ELBO on (x, y) saves for the backward pass, parameters left out."""
    storages: dict[int, int] = {}

    def pack(t):
        ptr = t.untyped_storage().data_ptr()
        if ptr not in params:  # a parameter saved for backward costs nothing more
            storages[ptr] = t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        elbo_terms(vae.model, vae.guide, x, y)["elbo"].sum()
    return sum(storages.values())


def estimate_training_memory(config: FitConfig, dataset, device: torch.device) -> Estimate:
    """The estimate described in the module's docstring."""
    image_shape, num_classes = tuple(dataset.image_shape), dataset.num_classes
    values = int(torch.Size(image_shape).numel())
    image_bytes = 4 * values  # float32: evaluation sets and a static binarization
    stored_bytes = dataset.train.data.element_size() * values  # as stored: 1 byte per 8-bit pixel
    train = len(dataset.train) if config.train_size is None else min(config.train_size, len(dataset.train))
    evaluation = min(TRAIN_EVAL_SIZE, train) + 2 * min(config.eval_size or len(dataset.test), len(dataset.test))
    on_device = device.type == "cuda" and (  # as DeviceBatches decides: a split over budget stays on the host
        train * stored_bytes <= DEVICE_MEMORY_SHARE * available_memory(device)[0]
    )
    moved = stored_bytes * int(on_device) + image_bytes * int(config.binarize == "static")
    data = train * moved + image_bytes * evaluation * (1 + int(device.type == "cuda"))
    fixed, per_image, count = step_bytes(config, image_shape, num_classes)
    parameters = 16 * count
    per_image *= config.particles * (num_classes if variant_of(config).sums_over_labels else 1)
    step = fixed + per_image * config.batch_size
    step += getattr(PRIORS.resolve(config.prior), "density_block_bytes", 0)  # e.g. the VampPrior's
    return Estimate(parameters, data, step, per_image)


def check_training_memory(config: FitConfig, dataset, device: torch.device) -> Estimate:
    """Refuse, before any training, a run whose estimated memory exceeds what ``device`` has."""
    image_shape, num_classes = tuple(dataset.image_shape), dataset.num_classes
    available, where = available_memory(device)
    count = parameter_count(config, image_shape, num_classes)
    if count is not None and 16 * count > available:  # refuse before building the model for real
        raise ConfigError(
            f"this run's model has {count:,} parameters: with their gradients and Adam's state "
            f"{16 * count / GB:.1f} GB, more than {where}. Use smaller networks (--hidden, --flow-hidden, "
            f"--latent-dim, --prior-components)"
        )
    estimate = estimate_training_memory(config, dataset, device)
    if estimate.total > available:
        fits = max(
            0, (available - estimate.total + estimate.per_image * config.batch_size) // max(1, estimate.per_image)
        )
        hint = f"--batch-size {fits} or less would fit" if fits >= 1 else "even a batch of one image does not fit"
        raise ConfigError(
            f"this run needs {estimate.describe()}; {where}. Reduce --batch-size ({hint}), --particles, "
            f"--prior-components or the network sizes (--hidden, --flow-hidden), or run it on a machine "
            f"with more memory"
        )
    return estimate
