"""Subcommands owned by the experiments package: gate, analyze, ramp, skew, demo."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    """Add this package's subcommands to the `modelramp` parser."""
