"""Why training may end before ``--epochs``: ``--early-stopping`` and ``--max-minutes``. Each
check returns the message that explains the stop, or None to go on."""

from __future__ import annotations

from collections.abc import Sequence

from .records import best_record


def no_recent_improvement(records: Sequence[dict], epoch: int, patience: int | None) -> str | None:
    """--early-stopping N: the validation ELBO has not improved in the last N epochs."""
    if not patience or not records:
        return None
    best = best_record(records)["epoch"]
    if epoch - best < patience:
        return None
    return f"early stopping after epoch {epoch}: the validation ELBO last improved at epoch {best}"


def out_of_time(elapsed: float, epochs_done: int, limit: float | None, epoch: int) -> str | None:
    """--max-minutes: would the next epoch (as long as this invocation's epochs so far, training
    and evaluation) end past the limit? The first epoch of an invocation always runs."""
    if limit is None or epochs_done == 0 or elapsed + elapsed / epochs_done <= 60 * limit:
        return None
    return f"stopping after epoch {epoch}: another epoch would pass --max-minutes {limit:g}"
