"""Learning-rate schedules as pure functions of the number of passes (epochs) already done.

Burda, Grosse & Salakhutdinov (2015, section 5.1): "The training proceeded for 3^i passes over the
data with learning rate of 0.001 * 10^(-i/7) for i = 0 ... 7 (for a total of sum_i 3^i = 3280
passes over the data)." Stage i covers passes sum_{j<i} 3^j + 1 .. sum_{j<=i} 3^j; after the last
stage the rate stays at the last stage's.
"""

from __future__ import annotations

BURDA_STAGES = 8  # i = 0 .. 7
BURDA_BASE_LR = 1e-3


def burda_stage_ends() -> list[int]:
    """The pass (1-based, cumulative) at which each stage i ends: 1, 4, 13, 40, 121, 364, 1093, 3280."""
    ends, total = [], 0
    for i in range(BURDA_STAGES):
        total += 3**i
        ends.append(total)
    return ends


BURDA_TOTAL_PASSES = burda_stage_ends()[-1]  # 3,280


def burda_stage(passes_done: int) -> int:
    """The stage i of the next pass, after ``passes_done`` completed passes (0-based count)."""
    if passes_done < 0:
        raise ValueError(f"passes_done must be >= 0, got {passes_done}")
    for i, end in enumerate(burda_stage_ends()):
        if passes_done < end:
            return i
    return BURDA_STAGES - 1


def burda_lr_factor(passes_done: int) -> float:
    """Multiplier of the base learning rate (0.001) for the next pass: 10^(-i/7).

    A module-level function, so ``torch.optim.lr_scheduler.LambdaLR`` saves no state for it and a
    checkpoint loads with ``weights_only=True``."""
    return 10.0 ** (-burda_stage(passes_done) / 7)
