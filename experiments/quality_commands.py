"""`modelramp slices` and `modelramp versions`: sliced error analysis and experiment tracking."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    """Placeholder until the commands land."""
