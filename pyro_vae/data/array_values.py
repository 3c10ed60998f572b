"""The values of an array of images, checked chunk by chunk, and the type they are kept as.

uint8 is kept as it is; bools become 0 / 255 and other integers uint8, once checked to lie in
0..255; floats become float32, once checked to be finite and in [0, 1]. :class:`ValueCheck` sees
every chunk of rows and, at the end, raises one error saying which values are wrong and how many
(the same whether the array came in one chunk or many).
"""

from __future__ import annotations

import numpy as np

from pyro_vae.errors import DataError

PIXEL_MAX = 255
UINT8, BOOL, INTEGER, FLOAT = "uint8", "bool", "integer", "float"


class ValueCheck:
    """Checks of the values of one array (``where`` names it in errors), fed one chunk at a time
    by :meth:`update`; :meth:`finish` raises what they found. ``dtype``: the type kept."""

    def __init__(self, dtype: np.dtype, where: str):
        self.where = where
        if dtype == np.uint8:
            self.kind, self.dtype = UINT8, np.dtype(np.uint8)
        elif dtype == np.bool_:
            self.kind, self.dtype = BOOL, np.dtype(np.uint8)
        elif np.issubdtype(dtype, np.integer):
            self.kind, self.dtype = INTEGER, np.dtype(np.uint8)
        elif np.issubdtype(dtype, np.floating):
            self.kind, self.dtype = FLOAT, np.dtype(np.float32)
        else:
            raise DataError(f"{where}: values of type {dtype}; expected integers 0..255 or floats in [0, 1]")
        self.lo = self.hi = None  # over every value (floats: while all are finite)
        self.nans = self.infinite = self.bad_images = 0
        self.first_bad: int | None = None  # the first image with a NaN or infinite value

    def update(self, first_row: int, chunk: np.ndarray) -> None:
        """Take in the values of rows ``first_row``... (``chunk``)."""
        if self.kind in (UINT8, BOOL) or chunk.size == 0:
            return
        if self.kind == FLOAT:
            finite = np.isfinite(chunk)
            if not finite.all():
                bad = np.flatnonzero(~finite.reshape(chunk.shape[0], -1).all(axis=1))
                nans = int(np.isnan(chunk).sum())
                self.nans += nans
                self.infinite += int((~finite).sum()) - nans
                self.bad_images += bad.size
                self.first_bad = first_row + int(bad[0]) if self.first_bad is None else self.first_bad
                return
        lo, hi = chunk.min(), chunk.max()
        self.lo = lo if self.lo is None else min(self.lo, lo)
        self.hi = hi if self.hi is None else max(self.hi, hi)

    def finish(self) -> None:
        """Raise :class:`DataError` for what the chunks seen held that cannot be used."""
        if self.kind == INTEGER and (int(self.lo) < 0 or int(self.hi) > PIXEL_MAX):
            raise DataError(
                f"{self.where}: integer values in [{int(self.lo)}, {int(self.hi)}]; 8-bit pixels lie in "
                f"0..255. Rescale them, or store floats in [0, 1]"
            )
        if self.kind != FLOAT:
            return
        if self.bad_images:
            raise DataError(
                f"{self.where}: {self.nans:,} NaN and {self.infinite:,} infinite values, in "
                f"{self.bad_images:,} images (the first: image {self.first_bad}). Remove or repair them"
            )
        lo, hi = float(self.lo), float(self.hi)
        if lo < 0 or hi > 1:
            raise DataError(
                f"{self.where}: float values in [{lo:g}, {hi:g}], outside [0, 1]. Rescale them to "
                f"[0, 1] (e.g. divide 8-bit pixels by 255), or store 8-bit pixels as uint8"
            )

    def convert(self, rows: np.ndarray) -> np.ndarray:
        """``rows`` as the type kept."""
        if self.kind == UINT8:
            return rows
        if self.kind == BOOL:
            return rows.astype(np.uint8) * PIXEL_MAX
        return rows.astype(self.dtype)
