"""The command-line tools as one family: the same device flags generated from FitConfig's fields,
the same `error: ...` and exit status 2, and the `pyro-vae` dispatcher over them."""

import importlib
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from pyro_vae.cli import TOOLS
from pyro_vae.cli.common import DEVICE_FLAGS, device_options
from pyro_vae.config import config_fields

ROOT = Path(__file__).resolve().parents[1]
CLI = {name: importlib.import_module(f"pyro_vae.cli.{name}") for name in TOOLS}
# what each tool needs before its options; "runs/absent" is never read in these tests
POSITIONAL = {"fit": [], "evaluate": ["runs/absent"], "generate": ["runs/absent"], "reproduce": ["burda2015-vae-k1"]}
CLASH = "--device is the old name of --accelerator; give only --accelerator (got --device cpu and --accelerator mps)"


def device_actions(parser):
    return {
        a.option_strings[0]: a
        for a in parser._actions
        if a.option_strings and a.option_strings[0].lstrip("-").replace("-", "_") in (*DEVICE_FLAGS, "device")
    }


@pytest.mark.parametrize("tool", TOOLS)
def test_every_tool_takes_device_and_accelerator_from_the_config_fields(tool):
    actions = device_actions(CLI[tool].build_parser())
    assert {"--accelerator", "--device"} <= set(actions)
    fields = {f.name: f for f in config_fields()}
    for flag, action in actions.items():
        f = fields[flag[2:].replace("-", "_")]
        assert f.metadata["group"] == "devices"
        assert f.metadata["help"] in action.help  # generated from the field, as fit's flags are
    fit_actions = device_actions(CLI["fit"].build_parser())
    assert all(actions[flag].help == fit_actions[flag].help for flag in actions)


@pytest.mark.parametrize("tool", ["evaluate", "generate", "reproduce"])
@pytest.mark.parametrize(
    "flags", [["--device", "cpu"], ["--accelerator", "cpu"], ["--device", "cpu", "--accelerator", "cpu"]]
)
def test_device_is_the_old_name_of_accelerator_in_every_tool(tool, flags):
    args = CLI[tool].build_parser().parse_args(POSITIONAL[tool] + flags)
    options = device_options(args)
    assert options["accelerator"] == "cpu" and "device" not in options
    assert not hasattr(args, "device") and not hasattr(args, "accelerator")


def test_fit_moves_device_onto_accelerator():
    config = CLI["fit"].resolve_config({"device": "cpu"}, None, None)
    assert config.accelerator == "cpu" and config.device is None


@pytest.mark.parametrize("tool", TOOLS)
def test_device_and_a_different_accelerator_are_refused_by_every_tool(tool, capsys):
    assert CLI[tool].main(POSITIONAL[tool] + ["--device", "cpu", "--accelerator", "mps"]) == 2
    err = capsys.readouterr().err
    assert err == f"error: {CLASH}\n"


@pytest.mark.parametrize(
    "tool, args, message",
    [
        ("fit", ["--likelihood", "poisson"], "--likelihood 'poisson' is not one of: bernoulli"),
        ("evaluate", ["runs/absent", "--k", "0"], "--k must be at least 1, got 0"),
        ("generate", ["runs/absent", "--n", "0"], "--n must be from 1 to 10,000"),
        ("reproduce", ["no-such-paper"], "unknown setting 'no-such-paper'"),
    ],
)
def test_a_config_error_is_exit_status_2_and_one_line_on_stderr(tool, args, message, capsys):
    assert CLI[tool].main(args) == 2
    captured = capsys.readouterr()
    assert captured.err.startswith("error: ") and message in captured.err
    assert "Traceback" not in captured.err and captured.err.count("\n") == 1


@pytest.mark.parametrize("tool", TOOLS)
def test_the_dispatcher_runs_each_tools_help(tool, capsys):
    from pyro_vae.cli import main

    with pytest.raises(SystemExit) as info:
        main([tool, "--help"])
    assert info.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith(f"usage: pyro-vae {tool} ")
    assert "--accelerator" in out and "--device" in out


def test_the_console_script_is_the_dispatcher(capsys):
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    module, name = scripts["pyro-vae"].split(":")
    main = getattr(importlib.import_module(module), name)
    with pytest.raises(SystemExit) as info:
        main(["--help"])
    assert info.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: pyro-vae ")
    assert all(tool in out for tool in TOOLS)
    assert main(["reproduce", "--list"]) == 0
    assert "burda2015-vae-k1" in capsys.readouterr().out


def test_python_m_pyro_vae_cli_lists_the_tools():
    done = subprocess.run(
        [sys.executable, "-m", "pyro_vae.cli", "--help"], capture_output=True, text=True, cwd=ROOT, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert all(f"    {tool}" in done.stdout for tool in TOOLS)


def test_pyro_vae_fit_stays_the_function_after_the_cli_modules_are_imported():
    import pyro_vae.api

    for name in TOOLS:
        importlib.import_module(f"pyro_vae.cli.{name}")
    assert pyro_vae.fit is pyro_vae.api.fit and pyro_vae.load is pyro_vae.api.load
    done = subprocess.run(
        [sys.executable, "-c", "import pyro_vae.cli.fit, pyro_vae, inspect; print(inspect.isfunction(pyro_vae.fit))"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
    )
    assert done.stdout.strip() == "True", done.stderr


def test_the_installed_command_can_start_more_processes(monkeypatch):
    """Fabric starts the other processes by running the command again; the `pyro-vae` script (no
    module spec, no .py suffix) can be."""
    import __main__
    from pyro_vae.engine.fabric import _relaunchable

    monkeypatch.setattr(__main__, "__spec__", None)
    monkeypatch.setattr(sys, "argv", ["/venv/bin/pyro-vae", "fit", "--devices", "2"])
    assert _relaunchable()
    monkeypatch.setattr(sys, "argv", ["/venv/bin/ipython"])
    assert not _relaunchable()
