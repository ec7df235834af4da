"""`modelramp problems` and `modelramp evaluate`: the problem patterns database (seed 003)."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    """Placeholder until the commands land."""
