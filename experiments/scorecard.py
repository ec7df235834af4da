"""`modelramp scorecard`: the ML Test Score rubric (seed 002) for this deployment."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    """Placeholder until the commands land."""
