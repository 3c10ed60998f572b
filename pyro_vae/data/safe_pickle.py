"""Loading a pickle of NumPy arrays without letting it run code.

Unpickling calls whatever callables the pickle names, so a crafted file can run any command.
:class:`ArrayUnpickler` resolves only the three NumPy names needed to rebuild plain arrays and
refuses every other name before it is imported or called.
"""

from __future__ import annotations

import importlib
import pickle
from typing import IO, Any

import numpy as np

from pyro_vae.errors import DataError

# (module, name) pairs a pickle of NumPy arrays needs; numpy.core became numpy._core in NumPy 2.
ALLOWED_GLOBALS = frozenset(
    {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
    }
)
NUMPY_2 = int(np.__version__.split(".")[0]) >= 2


def _installed_numpy_module(module: str) -> str:
    """Map numpy.core <-> numpy._core to the spelling the installed NumPy provides.

    NumPy 2 still has ``numpy.core`` but warns on its use, so we go to ``numpy._core`` directly.
    """
    old, new = "numpy.core.", "numpy._core."
    if NUMPY_2 and module.startswith(old):
        return new + module[len(old) :]
    if not NUMPY_2 and module.startswith(new):
        return old + module[len(new) :]
    return module


class ArrayUnpickler(pickle.Unpickler):
    """An Unpickler that builds NumPy arrays and nothing else."""

    def __init__(self, file: IO[bytes], origin: str):
        super().__init__(file, encoding="latin1")  # Python 2 pickles store arrays as byte strings
        self.origin = origin

    def find_class(self, module: str, name: str) -> Any:
        """Resolve only the allowed NumPy names; refuse anything else without importing it."""
        if (module, name) not in ALLOWED_GLOBALS:
            raise DataError(
                f"{self.origin}: refused to unpickle {module}.{name}: only NumPy arrays are allowed "
                f"in this file, and this one names other code, so it was not loaded. The file is "
                f"not the expected data; delete it and fetch it again from a trusted source."
            )
        return getattr(importlib.import_module(_installed_numpy_module(module)), name)


def load_arrays(file: IO[bytes], origin: str) -> Any:
    """Unpickle ``file`` (named ``origin`` in messages), allowing only NumPy arrays.

    Raises :class:`DataError` for a refused name or a file that is not a valid pickle.
    """
    try:
        return ArrayUnpickler(file, origin).load()
    except DataError:
        raise
    except Exception as error:  # a damaged pickle fails in many ways: EOFError, UnpicklingError...
        raise DataError(
            f"{origin}: not a readable pickle ({type(error).__name__}: {error}). Delete it and fetch it again."
        ) from error
