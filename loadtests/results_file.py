"""Where a benchmark's figures go: one JSON file (loadtests/results/ by default, kept out of git)."""

from __future__ import annotations

import json
from pathlib import Path


def save(path: Path, results: dict) -> None:
    """Write `results` as indented JSON to `path` (folders made as needed) and say where."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results, indent=2) + "\n")
    print(f"saved {path}")
