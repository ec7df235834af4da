"""Subcommands owned by the router package: `router` and `up`."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    """Add this package's subcommands to the `modelramp` parser."""
