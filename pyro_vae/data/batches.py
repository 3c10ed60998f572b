"""Mini-batches of a split drawn by index: no DataLoader, no worker processes.

The split stays as it is stored -- uint8 pixels for 8-bit data, 4x smaller than floats -- and each
batch is converted to float32 intensities (``pixel / 255``) when it is drawn. Where the split
lives:
  - on the CPU: where it already is (a memory-mapped cache stays memory-mapped; nothing is copied);
  - on a GPU, when it fits ``memory_budget`` bytes (default: half the device's free memory): moved
    to the device once, every batch an index into it;
  - on a GPU otherwise: in host memory, each batch gathered into pinned memory and copied to the
    device without blocking (``non_blocking=True``), so the copy overlaps the previous step.
Random draws, and resuming on another device: one seeded CPU ``torch.Generator``, whatever the
compute device, draws each epoch's permutation (on the CPU, then moved: one copy per epoch) and a
seed for that epoch's dynamic binarization, which a generator on the compute device then draws
batch by batch (no per-step copies). The CPU generator's state is all :meth:`DeviceBatches.state_dict`
holds, the same size on every device, so a run checkpointed on one device resumes on another
(CPU -> CUDA and back). On the same kind of device the resumed run repeats the uninterrupted one
exactly; on another kind every later epoch visits the same images in the same batches, but the
binarization noise comes from the other device's generator (CPU and CUDA generators give different
streams for one seed), as do the arithmetic's rounding, so the numbers are not bit-identical.
With several processes (``shard=(rank, world)``), each one draws the same permutation and
binarization of every global batch and keeps its own contiguous slice.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch

from pyro_vae.data.binarize import DYNAMIC, STATIC, binarize_fixed, check_binarization
from pyro_vae.data.types import intensities
from pyro_vae.errors import CheckpointError, ConfigError

DEVICE_MEMORY_SHARE = 0.5  # default budget: this share of the GPU's free memory


class DeviceBatches:
    """Shuffled mini-batches ``(x, y)`` of one split, on ``device``; x as float32 in [0, 1].

    ``images`` are uint8 pixels (N, C, H, W) or float32 values in [0, 1]. ``binarization`` is
    "dynamic" (a fresh Bernoulli draw of every batch, on the device), "static"
    (``binarize_fixed(intensities, seed)``, computed on the images' own device before the move, so it
    equals the one :func:`~pyro_vae.data.binarize.evaluation_images` gives), or "none".
    Iterating once is one epoch. Save :meth:`state_dict` between epochs: the generator state
    taken mid-epoch has already drawn that epoch's permutation.
    """

    def __init__(
        self,
        images: torch.Tensor,
        labels: torch.Tensor,
        batch_size: int,
        *,
        binarization: str,
        seed: int,
        device: str | torch.device,
        shuffle: bool = True,
        drop_last: bool = False,
        memory_budget: int | None = None,
        shard: tuple[int, int] = (0, 1),
    ):
        if batch_size < 1:
            raise ConfigError(f"batch size must be at least 1, got {batch_size}.")
        if images.shape[0] != labels.shape[0]:
            raise ValueError(f"{images.shape[0]} images but {labels.shape[0]} labels")
        if check_binarization(binarization) == STATIC:
            images = binarize_fixed(intensities(images), seed)
        device = torch.device(device)
        self.device = device
        self.on_host = (
            device.type == "cuda" and images.device.type == "cpu" and not _fits(images, device, memory_budget)
        )
        if self.on_host:
            self.images = images  # (N, ...) stays in host memory; batches are copied per step
            self.pin = torch.cuda.is_available()
        else:
            self.images = images.to(device)  # (N, ...) moved once (no copy where it already is)
        self.labels = labels.to(device)  # (N,)
        self.batch_size = batch_size
        self.dynamic = binarization == DYNAMIC
        self.shuffle = shuffle
        self.drop_last = drop_last
        self.rank, self.world = shard  # this process takes the rank-th of world slices of each batch
        if not 0 <= self.rank < self.world:
            raise ValueError(f"shard {shard}: need 0 <= rank < processes")
        self.generator = torch.Generator().manual_seed(seed)  # CPU: its state is the checkpoint's
        self.noise = _generator_on(device)  # the binarization's draws, seeded from self.generator per epoch

    def __len__(self) -> int:
        """Number of batches per epoch."""
        full, rest = divmod(self.images.shape[0], self.batch_size)
        return full + (1 if rest and not self.drop_last else 0)

    def global_rows(self, index: int) -> int:
        """Rows of global batch ``index`` (all processes' slices together)."""
        return min(self.batch_size, self.images.shape[0] - index * self.batch_size)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Batches of this process's shard: each process draws the same seeded permutation and
        binarization of every global batch and keeps its own contiguous slice, so together the
        processes cover each global batch (and the epoch) exactly once, as one process would."""
        size = self.images.shape[0]
        if self.shuffle:
            host_order = torch.randperm(size, generator=self.generator)  # (N,) on the CPU
        else:
            host_order = torch.arange(size)
        # this epoch's binarization seed, below 2^63 (a CPU number: no device read)
        self.noise.manual_seed(int(torch.randint(2**63 - 1, (), generator=self.generator)))
        order = host_order.to(self.device)  # one copy per epoch
        for start in range(0, len(self) * self.batch_size, self.batch_size):
            index = order[start : start + self.batch_size]
            if self.on_host:
                x = self._copied(host_order[start : start + self.batch_size])
            else:
                x = self.images[index]  # (B, ...)
            x = intensities(x)  # uint8 -> float32 pixel / 255, one batch at a time
            if self.dynamic:
                x = torch.bernoulli(x, generator=self.noise)
            y = self.labels[index]
            if self.world > 1:
                x, y = x.tensor_split(self.world)[self.rank], y.tensor_split(self.world)[self.rank]
            yield x, y

    def _copied(self, index: torch.Tensor) -> torch.Tensor:
        """The rows ``index`` gathered into pinned host memory and copied to the device without
        blocking (the caching host allocator keeps a buffer until its copy has finished)."""
        buffer = torch.empty((index.shape[0], *self.images.shape[1:]), dtype=self.images.dtype, pin_memory=self.pin)
        torch.index_select(self.images, 0, index, out=buffer)
        return buffer.to(self.device, non_blocking=True)

    def state_dict(self) -> dict:
        """The CPU generator's state (a uint8 tensor of the same size on every device): restoring
        it makes the next epoch repeat exactly on the same kind of device, and draw the same
        permutation on any other."""
        return {"generator": self.generator.get_state()}

    def load_state_dict(self, state: dict) -> None:
        """Restore a state from :meth:`state_dict`, written on this device or any other (its
        tensor may come back on any device too)."""
        saved = state["generator"].cpu()
        expected = self.generator.get_state().numel()
        if saved.numel() != expected:
            raise CheckpointError(
                f"the batch sampler's state holds {saved.numel()} bytes, not a CPU generator's {expected}: "
                "it was written by an earlier pyro-vae on a GPU, which drew batches with the GPU's own "
                "generator; resume it with that pyro-vae, or train it again with this one"
            )
        self.generator.set_state(saved)


def _generator_on(device: torch.device) -> torch.Generator:
    """A generator for draws on ``device``: its own (CUDA, MPS, ...), or the CPU's for the CPU and
    for the data-free ``meta`` tensors the tests use in place of a GPU (they draw nothing)."""
    if device.type in ("cpu", "meta"):
        return torch.Generator()
    return torch.Generator(device=device)


def _fits(images: torch.Tensor, device: torch.device, budget: int | None) -> bool:
    """Whether the split's bytes fit the device memory budget."""
    need = images.element_size() * images.numel()
    if budget is None:
        free, _ = torch.cuda.mem_get_info(device)
        budget = int(free * DEVICE_MEMORY_SHARE)
    return need <= budget
