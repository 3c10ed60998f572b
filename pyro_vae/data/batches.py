"""Mini-batches of a split drawn by index: no DataLoader, no worker processes.

The split stays as it is stored -- uint8 pixels for 8-bit data, 4x smaller than floats -- and each
batch is converted to float32 intensities (``pixel / 255``) when it is drawn. Where the split
lives:
  - on the CPU: where it already is (a memory-mapped cache stays memory-mapped; nothing is copied);
  - on a GPU, when it fits ``memory_budget`` bytes (default: half the device's free memory): moved
    to the device once, every batch an index into it;
  - on a GPU otherwise: in host memory, each batch gathered into pinned memory and copied to the
    device without blocking (``non_blocking=True``), so the copy overlaps the previous step.
One seeded ``torch.Generator`` on the compute device draws each epoch's permutation and the
dynamic binarization; its state is all :meth:`DeviceBatches.state_dict` needs for a resumed run to
continue identically. With several processes (``shard=(rank, world)``), each one draws the same
permutation and binarization of every global batch and keeps its own contiguous slice.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch

from pyro_vae.data.binarize import DYNAMIC, STATIC, binarize_fixed, check_binarization
from pyro_vae.data.datasets import intensities
from pyro_vae.errors import ConfigError

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
        self.on_host = device.type == "cuda" and images.device.type == "cpu" and not _fits(
            images, device, memory_budget)
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
        self.generator = torch.Generator(device=device)
        self.generator.manual_seed(seed)

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
            order = torch.randperm(size, generator=self.generator, device=self.device)
        else:
            order = torch.arange(size, device=self.device)
        host_order = order.cpu() if self.on_host else None  # one sync per epoch
        for start in range(0, len(self) * self.batch_size, self.batch_size):
            index = order[start : start + self.batch_size]
            if self.on_host:
                x = self._copied(host_order[start : start + self.batch_size])
            else:
                x = self.images[index]  # (B, ...)
            x = intensities(x)  # uint8 -> float32 pixel / 255, one batch at a time
            if self.dynamic:
                x = torch.bernoulli(x, generator=self.generator)
            y = self.labels[index]
            if self.world > 1:
                x, y = x.tensor_split(self.world)[self.rank], y.tensor_split(self.world)[self.rank]
            yield x, y

    def _copied(self, index: torch.Tensor) -> torch.Tensor:
        """The rows ``index`` gathered into pinned host memory and copied to the device without
        blocking (the caching host allocator keeps a buffer until its copy has finished)."""
        buffer = torch.empty((index.shape[0], *self.images.shape[1:]), dtype=self.images.dtype,
                             pin_memory=self.pin)
        torch.index_select(self.images, 0, index, out=buffer)
        return buffer.to(self.device, non_blocking=True)

    def state_dict(self) -> dict:
        """The generator state: restoring it makes the next epoch repeat exactly."""
        return {"generator": self.generator.get_state()}

    def load_state_dict(self, state: dict) -> None:
        """Restore a state from :meth:`state_dict` (its tensor may come back on any device)."""
        self.generator.set_state(state["generator"].cpu())


def _fits(images: torch.Tensor, device: torch.device, budget: int | None) -> bool:
    """Whether the split's bytes fit the device memory budget."""
    need = images.element_size() * images.numel()
    if budget is None:
        free, _ = torch.cuda.mem_get_info(device)
        budget = int(free * DEVICE_MEMORY_SHARE)
    return need <= budget
