"""The console script's help: every subcommand (and sub-subcommand) renders its --help, and a wrong flag its own usage."""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import pytest

from experiments.cli import build_parser, main


def _parsers(parser: argparse.ArgumentParser, path: tuple[str, ...] = ()):
    yield path, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, child in action.choices.items():
                yield from _parsers(child, (*path, name))


def test_top_level_help_lists_every_subcommand(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    for name in ("train", "serve-model", "legacy", "router", "up", "gate", "analyze", "ramp", "skew", "demo",
                 "problems", "evaluate", "slices", "versions", "scorecard"):
        assert f"    {name} " in out


@pytest.mark.parametrize("path", [p for p, _ in _parsers(build_parser())], ids=lambda p: " ".join(p) or "modelramp")
def test_every_subcommand_help_renders(path, capsys):
    # A bare "%" in a help string only fails when the help is formatted: this renders each one.
    with pytest.raises(SystemExit) as exit_info:
        main([*path, "--help"])
    assert exit_info.value.code == 0
    assert "usage: modelramp" in capsys.readouterr().out


@pytest.mark.parametrize(("command", "required"), [(["analyze"], []), (["demo"], []), (["router"], ["--config", "x.yaml"]),
                                                 (["problems", "list"], []), (["ramp"], [])],
                         ids=lambda v: " ".join(v))
def test_wrong_flag_prints_the_subcommands_usage(command, required):
    # The real console entry point in a fresh interpreter: argparse's hand-back of unknown
    # arguments to the top-level parser only shows when the whole parse runs, not a handler.
    run = subprocess.run([sys.executable, "-m", "experiments.cli", *command, *required, "--bogus-flag"],
                         capture_output=True, text=True, timeout=60, cwd=Path(__file__).parents[1])
    name = " ".join(command)
    assert run.returncode == 2, run.stderr
    assert run.stdout == ""
    assert run.stderr.startswith(f"usage: modelramp {name} "), run.stderr
    assert f"modelramp {name}: error: unrecognized arguments: --bogus-flag" in run.stderr
    assert "COMMAND ..." not in run.stderr


TENSORFLOW_NOISE = ("cudart_stub", "cuda_platform", "cuInit", "absl::InitializeLog", "cpu_feature_guard", "E0000", "oneDNN")


@pytest.mark.tensorflow
def test_tensorflow_starts_without_its_start_up_lines_and_everything_else_is_shown():
    # What the window lets through must still arrive: C++-level writes to fd 2 and Python's stderr alike.
    code = ("import os, sys\n"
            "from experiments.cli.tf_startup import start_tensorflow, without_start_up_noise\n"
            "with without_start_up_noise():\n"
            "    start_tensorflow()\n"
            "    os.write(2, b'E0000 a real error from C++\\n')\n"
            "    print('a Python warning', file=sys.stderr)\n"
            "print('after the window', file=sys.stderr)\n")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=180, cwd=Path(__file__).parents[1])
    assert run.returncode == 0, run.stderr
    assert run.stderr.splitlines() == ["E0000 a real error from C++", "a Python warning", "after the window"]


@pytest.mark.slow
@pytest.mark.tensorflow
def test_modelramp_train_prints_no_tensorflow_start_up_lines(tmp_path):
    run = subprocess.run([sys.executable, "-m", "experiments.cli", "train", "--out", str(tmp_path), "--version", "1"],
                         capture_output=True, text=True, timeout=600, cwd=Path(__file__).parents[1])
    assert run.returncode == 0, run.stderr[-3000:]
    assert "exported" in run.stdout and (tmp_path / "churn" / "1" / "saved_model.pb").exists()
    noisy = [line for line in (run.stdout + run.stderr).splitlines() if any(word in line for word in TENSORFLOW_NOISE)]
    assert noisy == []
