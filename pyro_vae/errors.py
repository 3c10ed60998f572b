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


def exit_status(work) -> int:
    """Run a command-line tool's ``work()``: exit status 0, or 2 after printing a
    :class:`PyroVAEError` as ``error: <message>`` on stderr (no traceback)."""
    import sys

    try:
        work()
    except PyroVAEError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


class InputError(PyroVAEError, ValueError):
    """Tensors handed to a model's methods have the wrong shape, type or range."""
