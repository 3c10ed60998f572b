"""Resuming a run folder: mending what an interruption between one epoch's writes left behind.

Each epoch writes ``last.pt`` (holding the epoch's record), then ``best.pt``, then
``metrics.jsonl``; a kill between them leaves ``metrics.jsonl`` without ``last.pt``'s epoch or
``best.pt`` one epoch behind. Both are brought up to ``last.pt`` here, so that ``best.pt`` holds
the best validation epoch of ``metrics.jsonl``.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

from ..atomic import atomic_path
from .checkpoint import load_checkpoint
from .records import best_record, read_metrics, write_epoch_records


def records_until(out_dir: Path, epoch: int) -> list[dict]:
    """The records of ``metrics.jsonl`` up to ``epoch`` (a later one belongs to no checkpoint)."""
    return [r for r in read_metrics(out_dir / "metrics.jsonl") if r["epoch"] <= epoch]


def repair_interrupted_epoch(
    out_dir: Path, last: Path, epoch: int, last_record: dict | None, records: list[dict], log: Callable[[str], None]
) -> list[str]:
    """Bring ``metrics.jsonl`` (``records``, appended to in place) and ``best.pt`` up to ``last``,
    the checkpoint of ``epoch`` holding ``last_record``; returns the names of the files mended."""
    repaired = []
    if last_record is not None and (not records or records[-1]["epoch"] < epoch):
        records.append(last_record)
        write_epoch_records(out_dir, records)
        repaired.append("metrics.jsonl")
    if not records:
        return repaired
    best_epoch = best_record(records)["epoch"]
    best = out_dir / "best.pt"
    held = load_checkpoint(best)["epoch"] if best.is_file() else None
    if held == best_epoch:
        return repaired
    if best_epoch == epoch:  # last.pt is the best epoch: the copy did not happen
        with atomic_path(best) as tmp:
            shutil.copyfile(last, tmp)
        repaired.append("best.pt")
    else:
        log(
            f"warning: {best} holds epoch {held}, but metrics.jsonl's best validation epoch is "
            f"{best_epoch}, whose checkpoint is gone; it is replaced when a later epoch does better"
        )
    return repaired
