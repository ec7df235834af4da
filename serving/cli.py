"""Subcommands owned by the serving package: `train`, `serve-model`, `legacy`."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    """Add this package's subcommands to the `modelramp` parser."""
