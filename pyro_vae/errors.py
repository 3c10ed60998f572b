"""The one exception type that pyro-vae shows to a user as a plain message (no traceback).

Anything raised as :class:`PyroVAEError` names the problem and the fix. The command-line
entry points catch it, print ``error: <message>`` to stderr and exit with status 2.
"""


class PyroVAEError(Exception):
    """A problem with the user's input or environment, with a message that says how to fix it."""


class DataError(PyroVAEError):
    """A data set could not be found, fetched, verified or read."""


class ConfigError(PyroVAEError):
    """An option value is unknown, out of range, or conflicts with another."""


class CheckpointError(PyroVAEError):
    """A checkpoint is missing, corrupt, or does not match the requested configuration."""


class TrainingDiverged(PyroVAEError):
    """The loss became NaN or infinite; the last good checkpoint is kept."""


def user_error(error: BaseException) -> PyroVAEError | None:
    """What to show the user for ``error``: a :class:`PyroVAEError` as it is; an ``OSError`` of a
    full disk (from a write outside :mod:`pyro_vae.atomic`) as :class:`DiskFull`; otherwise None
    (a bug: let its traceback show)."""
    import errno

    if isinstance(error, PyroVAEError):
        return error
    if isinstance(error, OSError) and error.errno in (errno.ENOSPC, errno.EDQUOT):
        where = f" while writing {error.filename}" if error.filename else ""
        return DiskFull(
            f"no space left on device{where}; files written before are kept. Free some space "
            f"and run the command again (a training run continues from its last checkpoint "
            f"with --resume)"
        )
    return None


class OutputError(PyroVAEError):
    """A file or folder could not be written: no space, no permission, or a file in the way."""


class DiskFull(OutputError):
    """The disk filled up while writing; the file's previous version is kept."""


class InputError(PyroVAEError, ValueError):
    """Tensors handed to a model's methods have the wrong shape, type or range."""


class ProcessLost(PyroVAEError):
    """Another process of a job of several ended during the run; its last checkpoint is intact.
    Rank 0 reports it (``on_every_rank``); the other processes end without a word."""

    on_every_rank = True
