"""What the command-line tools share: flags generated from :class:`~pyro_vae.config.FitConfig`'s
fields (every tool's device flags among them), ``--config FILE`` loading, and the one way an error
becomes an exit status.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from ..config import config_fields
from ..config_values import coerce, field_choices
from ..devices import accelerator_alias
from ..engine.fabric import rank_and_world
from ..errors import ConfigError, ProcessLost, PyroVAEError, user_error

# the devices group of FitConfig's fields, in the order of the flags; "device" is an alias of
# "accelerator" and follows the flags a tool takes
DEVICE_FLAGS = ("accelerator", "devices", "num_nodes", "strategy", "precision")
DEVICE_ALIAS = "device"


# -- flags from the configuration's fields ---------------------------------------------------------


def flag_of(name: str) -> str:
    """The command-line flag of a field: ``num_nodes`` -> ``--num-nodes``."""
    return "--" + name.replace("_", "-")


def add_field_flag(group, f: dataclasses.Field, *, with_default: bool = False) -> None:
    """Add the flag of field ``f`` to a parser (or argument group): its help from the field's
    ``help`` metadata, its choices (``choices``) in front, its default behind. Without
    ``with_default`` a flag not given is absent from the parsed arguments, so that a config file or a
    resumed run's config supplies it; with it, the field's default is filled in."""
    default = f.default
    if isinstance(default, tuple):
        default = ",".join(map(str, default))
    help_text = f.metadata["help"]
    if "default:" not in help_text:  # some fields describe their default themselves
        help_text += f" (default: {default})"
    choices = field_choices(f)
    if choices:
        help_text = f"{{{','.join(choices)}}} " + help_text
    value = default if with_default else argparse.SUPPRESS
    if f.type == "bool":
        group.add_argument(flag_of(f.name), action=argparse.BooleanOptionalAction, default=value, help=help_text)
    else:
        group.add_argument(flag_of(f.name), default=value, metavar=f.name.upper(), help=help_text)


def fields_named(names: Iterable[str]) -> list[dataclasses.Field]:
    by_name = {f.name: f for f in config_fields()}
    return [by_name[name] for name in names]


def add_device_flags(parser: argparse.ArgumentParser, names: Iterable[str] = DEVICE_FLAGS) -> None:
    """The device flags ``names`` (a part of :data:`DEVICE_FLAGS`: what the tool supports) and
    ``--device``, an alias of ``--accelerator``, in a "devices options" section, with the fields'
    defaults filled in; :func:`device_options` reads them back."""
    group = parser.add_argument_group("devices options", "where the work runs")
    for f in fields_named([*names, DEVICE_ALIAS]):
        add_field_flag(group, f, with_default=f.name != DEVICE_ALIAS)


def resolve_accelerator(options: dict[str, Any], check: Callable[[str, str], Any] | None = None) -> dict[str, Any]:
    """``options`` (field names as keys) with ``device``, an alias of ``accelerator``, moved
    there; ``check(value, flag)`` checks the accelerator asked for, naming the flag that asked, and
    what it returns is the value kept."""
    options = dict(options)
    value, flag = accelerator_alias(options.get("accelerator"), options.pop(DEVICE_ALIAS, None))
    if value is not None:
        options["accelerator"] = check(value, flag) if check is not None else value
    return options


def device_options(args: argparse.Namespace, check: Callable[[str, str], Any] | None = None) -> dict[str, Any]:
    """The device flags of a tool's parsed arguments (:func:`add_device_flags`), as the fields' types,
    with ``--device`` resolved (:func:`resolve_accelerator`); the flags are taken out of ``args``."""
    given = vars(args)
    options = {}
    for f in fields_named([*DEVICE_FLAGS, DEVICE_ALIAS]):
        if f.name in given:
            options[f.name] = coerce(f, given.pop(f.name), "the command line")
    return resolve_accelerator(options, check)


# -- --config FILE ---------------------------------------------------------------------------------


def load_config_file(path: str | Path) -> dict[str, Any]:
    """Read a YAML or JSON file of option keys (dashes or underscores)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"--config {path}: no such file")
    text = path.read_text()
    try:
        if path.suffix.lower() == ".json":
            data = json.loads(text)
        else:
            import yaml

            data = yaml.safe_load(text)
    except Exception as e:  # noqa: BLE001 - any parse failure is the user's file
        language = "JSON" if path.suffix == ".json" else "YAML"
        raise ConfigError(f"--config {path}: cannot parse it as {language}: {e}") from None
    if data is None or data == {}:
        raise ConfigError(
            f"--config {path}: the file holds no options; write one option per line "
            f'(YAML `epochs: 5`, or JSON {{"epochs": 5}}), or drop --config to run the defaults'
        )
    if not isinstance(data, dict):
        raise ConfigError(f"--config {path}: expected a mapping of option names to values, got {type(data).__name__}")
    return data


# -- errors -> exit statuses -----------------------------------------------------------------------


def exit_status(work: Callable[[], Any], interrupted: str | None = None) -> int:
    """Run a tool's ``work()``: exit status 0; 2 after ``error: <message>`` on stderr for a
    :class:`~pyro_vae.errors.PyroVAEError` (or a full disk), without a traceback; with
    ``interrupted``, 130 after that message for Ctrl-C or a scheduler's stop. Any other error is a
    bug and shows its traceback.

    In a job of several processes, an error that every process meets alike (a bad option, a
    divergence) is reported by rank 0; any other (a file missing on one machine) by each rank that
    hit it, its rank named."""
    try:
        work()
    except (PyroVAEError, OSError) as e:
        shown = user_error(e)
        if shown is None:
            raise
        same_everywhere = isinstance(shown, ConfigError) or getattr(shown, "on_every_rank", False)
        named = not isinstance(shown, ProcessLost)  # its message names the processes itself
        return report(f"error: {shown}", 2, every_rank=not same_everywhere, name_rank=named)
    except KeyboardInterrupt:
        if interrupted is None:
            raise
        return report(interrupted, 130, every_rank=False)
    return 0


def report(message: str, status: int, every_rank: bool = True, name_rank: bool = True) -> int:
    """Print ``message`` on stderr (rank 0, or every rank, its rank named unless not ``name_rank``)
    and return ``status``;
    in a job of several processes, end this process at once with it: its peers are ended by the
    launcher (a child that fails) or by their watchdog (when rank 0 ends), never left waiting."""
    rank, world = rank_and_world()
    if rank == 0 or every_rank:
        named = world > 1 and name_rank
        print(f"{message} (rank {rank} of {world})" if named else message, file=sys.stderr, flush=True)
    if world > 1:
        sys.stdout.flush()
        os._exit(status)
    return status
