"""The console script's help: every subcommand (and sub-subcommand) renders its --help."""

from __future__ import annotations

import argparse

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
