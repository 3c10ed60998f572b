"""Mini-batches of a split kept whole on the device: no DataLoader, no worker processes.

MNIST is small (50,000 x 784 floats, 157 MB), so the split is moved to the device once and every
batch is an index into it. One seeded ``torch.Generator`` on the device draws each epoch's
permutation and the dynamic binarization; its state is all :meth:`DeviceBatches.state_dict`
needs for a resumed run to continue identically.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch

from pyro_vae.data.binarize import DYNAMIC, STATIC, binarize_fixed, check_binarization
from pyro_vae.errors import ConfigError


class DeviceBatches:
    """Shuffled mini-batches ``(x, y)`` of one split, on ``device``.

    ``binarization`` is "dynamic" (a fresh Bernoulli draw of every batch, on the device), "static"
    (``binarize_fixed(images, seed)``, computed on the images' own device before the move, so it
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
        shard: tuple[int, int] = (0, 1),
    ):
        if batch_size < 1:
            raise ConfigError(f"batch size must be at least 1, got {batch_size}.")
        if images.shape[0] != labels.shape[0]:
            raise ValueError(f"{images.shape[0]} images but {labels.shape[0]} labels")
        if check_binarization(binarization) == STATIC:
            images = binarize_fixed(images, seed)
        self.images = images.to(device)  # (N, ...) moved once
        self.labels = labels.to(device)  # (N,)
        self.batch_size = batch_size
        self.dynamic = binarization == DYNAMIC
        self.shuffle = shuffle
        self.drop_last = drop_last
        self.rank, self.world = shard  # this process takes the rank-th of world slices of each batch
        if not 0 <= self.rank < self.world:
            raise ValueError(f"shard {shard}: need 0 <= rank < processes")
        self.generator = torch.Generator(device=self.images.device)
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
        device = self.images.device
        size = self.images.shape[0]
        if self.shuffle:
            order = torch.randperm(size, generator=self.generator, device=device)
        else:
            order = torch.arange(size, device=device)
        for start in range(0, len(self) * self.batch_size, self.batch_size):
            index = order[start : start + self.batch_size]
            x = self.images[index]  # (B, ...)
            if self.dynamic:
                x = torch.bernoulli(x, generator=self.generator)
            y = self.labels[index]
            if self.world > 1:
                x, y = x.tensor_split(self.world)[self.rank], y.tensor_split(self.world)[self.rank]
            yield x, y

    def state_dict(self) -> dict:
        """The generator state: restoring it makes the next epoch repeat exactly."""
        return {"generator": self.generator.get_state()}

    def load_state_dict(self, state: dict) -> None:
        """Restore a state from :meth:`state_dict` (its tensor may come back on any device)."""
        self.generator.set_state(state["generator"].cpu())
