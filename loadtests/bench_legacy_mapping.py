"""Benchmark: the CPU the legacy backend spends on one request, in modelramp's format and through JMESPath mappings.

    python loadtests/bench_legacy_mapping.py [--requests 20000] [--rows 1] [--before REV] [--json FILE]

Times `LegacyHttpBackend.predict` on one request (REST rows in, the model's outputs out) with the
HTTP exchange replaced by a canned answer, so what is measured is the backend's own work: the
body written, headers, the answer read and turned into outputs. Variants, interleaved in rounds
within one run so that they share the machine's state:

- before: the backend as it was at git revision `--before` (default: the last commit before the
  mappings; skipped when git or that revision is not at hand), answering modelramp's format;
- default: today's backend, no mapping configured (modelramp's format);
- mapped: today's backend with `request: '{customers: instances}'` and
  `response: {probability: 'results[*].churn_score'}`, answering the foreign API's format.

Goals (legacy mappings): default no dearer than before; mapped at most 30 us more than default.
Results are printed and written to `loadtests/results/legacy_mapping.json` (or `--json`).
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import json
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))  # sibling benchmark modules

from results_file import save

from router.backends import PredictCall
from router.backends.legacy_http import LegacyHttpBackend
from router.config import LegacyHttpSpec
from router.signature import TensorSpec
from serving.tfserving.tensors import DT_FLOAT

REPO = Path(__file__).resolve().parents[1]
BEFORE = "ce4ab59"  # the last commit before the legacy mappings
MAPPED_EXTRA_GOAL_US = 30.0
ROW = {"state": "KS", "area_code": "area_code_415", "international_plan": "no", "voice_mail_plan": "yes",
       "account_length": 128.0, "number_vmail_messages": 25.0, "total_day_minutes": 265.1, "total_day_calls": 110.0,
       "total_day_charge": 45.07, "total_eve_minutes": 197.4, "total_eve_calls": 99.0, "total_eve_charge": 16.78,
       "total_night_minutes": 244.7, "total_night_calls": 91.0, "total_night_charge": 11.01, "total_intl_minutes": 10.0,
       "total_intl_calls": 3.0, "total_intl_charge": 2.7, "number_customer_service_calls": 1.0}
REASONS = ["265.1 day minutes (> 265)"]


def _before_class(rev: str) -> type | None:
    """LegacyHttpBackend as it was at `rev`, loaded from git into a module of its own; None if not at hand."""
    try:
        source = subprocess.run(["git", "show", f"{rev}:router/backends/legacy_http.py"], cwd=REPO, capture_output=True,
                                text=True, check=True, timeout=30).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    path = Path(tempfile.mkdtemp()) / "legacy_http_before.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location("legacy_http_before", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.LegacyHttpBackend  # type: ignore[no-any-return]


def _canned(backend, payload: bytes):
    """The backend with its HTTP exchange replaced by `payload` (status 200), checking what it would send."""
    async def exchange(method: str, path: str, body: bytes, timeout: float, headers: bytes = b"") -> tuple[int, bytes]:
        return 200, payload

    backend._call = exchange
    return backend


def variants(rows: int, before_rev: str) -> dict[str, object]:
    default_answer = json.dumps({"predictions": [{"churn": True, "probability": 1.0, "reasons": REASONS}] * rows}).encode()
    foreign_answer = json.dumps({"results": [{"churn_score": 1.0, "at_risk": True, "reasons": REASONS}] * rows,
                                 "rule": "retention-rule-of-thumb"}).encode()
    found: dict[str, object] = {}
    before = _before_class(before_rev)
    if before is not None:
        found["before"] = _canned(before(LegacyHttpSpec()), default_answer)
    found["default"] = _canned(LegacyHttpBackend(LegacyHttpSpec()), default_answer)
    mapped = LegacyHttpSpec(url="http://127.0.0.1:8443", path="/api/v2/score", request="{customers: instances}",
                            response={"probability": "results[*].churn_score"})
    found["mapped"] = _canned(LegacyHttpBackend(mapped), foreign_answer)
    return found


async def _time(backend, calls: list[PredictCall]) -> float:
    """Microseconds of CPU per request over `calls` (one process, one thread: process time is this loop's)."""
    start = time.process_time()
    for call in calls:
        await backend.predict(call, 1.0)
    return (time.process_time() - start) / len(calls) * 1e6


async def measure(requests: int, rows: int, before_rev: str, rounds: int = 21) -> dict[str, list[float]]:
    found = variants(rows, before_rev)
    outputs = {"probability": TensorSpec(DT_FLOAT, (-1,))}
    calls = [PredictCall(rows=[dict(ROW) for _ in range(rows)], outputs=outputs) for _ in range(requests // rounds)]
    first = {name: (await backend.predict(calls[0], 1.0)).outputs for name, backend in found.items()}  # type: ignore[attr-defined]
    assert all(list(o["probability"]) == list(first["default"]["probability"]) for o in first.values()), "every variant reads the same answer"
    per_round: dict[str, list[float]] = {name: [] for name in found}
    for _ in range(rounds):
        for name, backend in found.items():
            per_round[name].append(await _time(backend, calls))
    return per_round


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--requests", type=int, default=42000, help="requests per variant, over 21 rounds (default: 42000)")
    p.add_argument("--rows", type=int, default=1, help="rows per request (default: 1)")
    p.add_argument("--before", default=BEFORE, help=f"git revision of the 'before' variant (default: {BEFORE})")
    p.add_argument("--json", type=Path, default=REPO / "loadtests" / "results" / "legacy_mapping.json")
    args = p.parse_args()
    per_round = asyncio.run(measure(args.requests, args.rows, args.before))
    # The least disturbed round is the cost (a shared machine only ever adds time); the median shows the spread.
    best = {name: min(values) for name, values in per_round.items()}
    median = {name: statistics.median(values) for name, values in per_round.items()}
    for name, values in per_round.items():
        print(f"{name:>8}: {best[name]:6.1f} us CPU per request (best of {len(values)} rounds; median {median[name]:.1f}, max {max(values):.1f})")
    extra = best["mapped"] - best["default"]
    print(f"mapped - default: {extra:+.1f} us (median {median['mapped'] - median['default']:+.1f}; goal: <= {MAPPED_EXTRA_GOAL_US:.0f})")
    if "before" in best:
        print(f"default - before: {best['default'] - best['before']:+.1f} us (median {median['default'] - median['before']:+.1f}; "
              "goal: <= 0 within the noise)")
    save(args.json, {"python": platform.python_version(), "machine": platform.machine(), "rows": args.rows, "requests": args.requests,
                     "us_per_request_best": best, "us_per_request_median": median, "rounds_us": per_round, "mapped_extra_us": extra,
                     "goal_mapped_extra_us": MAPPED_EXTRA_GOAL_US})
    return 0 if extra <= MAPPED_EXTRA_GOAL_US else 1


if __name__ == "__main__":
    sys.exit(main())
