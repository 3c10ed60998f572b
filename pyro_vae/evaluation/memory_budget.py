"""Memory for the importance-weighted estimator: how many particles a chunk may hold within a
budget, giving freed memory back to the system, and telling an out-of-memory error apart.

The chunk size is measured, not modelled: one item (one particle of a batch) is scored while
every tensor a torch function returns in new memory is counted, and a chunk of n items is taken
to need n times that. Counting allocations, not the peak, overestimates, so the budget errs on
the safe side.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import mmap
from collections.abc import Callable, Iterator

import torch
import torch.overrides

from ..errors import PyroVAEError

DEFAULT_MEMORY_BUDGET_MB = 256.0


def bytes_allocated_by(fn: Callable[[], object]) -> int:
    """The bytes of the tensors that ``fn()`` allocates (views and in-place results excluded;
    tensors without data, on the ``meta`` device, counted in full)."""
    counter = AllocationCounter()
    with counter:
        fn()
    return counter.nbytes


def items_within_budget(per_item_bytes: int, most: int, memory_budget_mb: float, device: torch.device) -> int:
    """The number of items, between 1 and ``most``, whose ``per_item_bytes`` each fit in
    ``memory_budget_mb``; on a CUDA device also in half the memory ``torch.cuda.mem_get_info``
    reports free."""
    if not memory_budget_mb > 0:
        raise PyroVAEError(f"memory_budget_mb must be > 0, got {memory_budget_mb}")
    budget = memory_budget_mb * 2**20
    if device.type == "cuda":  # no more than half of what the GPU has free now
        free, _total = torch.cuda.mem_get_info(device)
        budget = min(budget, free // 2)
    return int(max(1, min(most, budget // max(per_item_bytes, 1))))


class AllocationCounter(torch.overrides.TorchFunctionMode):
    """Sums the bytes of the tensors that torch functions return in new memory (not views or
    in-place results of their inputs) while the mode is active."""

    def __init__(self):
        super().__init__()
        self.nbytes = 0

    def __torch_function__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        inputs = {_address(t) for t in _tensors((args, kwargs))} - {None}
        for t in _tensors(out):
            address = _address(t)
            if address is None or address not in inputs:  # data-free: counted, on the safe side
                self.nbytes += t.numel() * t.element_size()
        return out


def _address(t: torch.Tensor) -> int | None:
    """Where ``t``'s memory starts, or None for a tensor without data: its storage is on the
    ``meta`` device (meta tensors, and the fake CUDA tensors of the tests), all at address 0."""
    storage = t.untyped_storage()
    return None if storage.device.type == "meta" else storage.data_ptr()


def _tensors(tree) -> Iterator[torch.Tensor]:
    """The tensors in nested tuples, lists and dicts."""
    if isinstance(tree, torch.Tensor):
        yield tree
    elif isinstance(tree, (tuple, list)):
        for item in tree:
            yield from _tensors(item)
    elif isinstance(tree, dict):
        for item in tree.values():
            yield from _tensors(item)


def _glibc_malloc_trim() -> Callable[[int], int] | None:
    """glibc's ``malloc_trim``, or None where the C library has none (macOS, Windows, musl)."""
    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or None).malloc_trim
    except (OSError, AttributeError):
        return None


_MALLOC_TRIM = _glibc_malloc_trim()


def resident_bytes() -> int | None:
    """The process's resident memory in bytes (Linux's ``/proc/self/statm``), None elsewhere."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * mmap.PAGESIZE
    except (OSError, ValueError, IndexError):
        return None


_resident_mark: list[int] = []  # the resident bytes after the last return (process-wide), once known


def return_freed_memory(slack_bytes: int) -> bool:
    """Give the memory freed by chunks back to the system once the process's resident memory has
    grown by more than ``slack_bytes`` since the last time (or since the first call); returns
    whether it did. On the CPU, glibc keeps freed blocks in its heap, and chunks whose tensors
    differ in size fragment it: the VampPrior's (k_chunk, B, 500, D) log-densities grew a
    500-image evaluation by about 15 MB per chunk, to an out-of-memory kill. ``malloc_trim(0)``
    releases the free pages, which the next chunk then faults in again (about a tenth of an
    evaluation's time when done once per batch of the default model, whose heap does not grow):
    so only growth is returned. A no-op where there is no glibc or no ``/proc``. The estimator
    calls it after every chunk on the CPU, with the memory budget as the slack."""
    if _MALLOC_TRIM is None:
        return False
    now = resident_bytes()
    if now is None:
        return False
    if not _resident_mark:
        _resident_mark.append(now)
    if now <= _resident_mark[0] + slack_bytes:
        return False
    _MALLOC_TRIM(0)
    _resident_mark[0] = resident_bytes() or now
    return True


def is_out_of_memory(err: BaseException) -> bool:
    """Whether ``err`` is torch's (or numpy's) way of saying an allocation failed."""
    if isinstance(err, (MemoryError, torch.OutOfMemoryError)):
        return True
    text = str(err).lower()
    return any(s in text for s in ("not enough memory", "out of memory", "can't allocate memory"))
