"""Benchmark: what the skew sketches cost per request and per feature, with 30 features.

    python loadtests/bench_sketches.py [--baseline models/churn/2/modelramp/baseline.json] [--requests 20000] [--json FILE]

The churn baseline's 19 features plus 11 copies (8 numeric, 3 categorical) make 30. Real rows
from the live split are fed one request (one row) at a time, as the router does, measured:

- request path: `SkewSink.observe_rows` (REST rows), `observe` (numpy arrays, gRPC), and
  `observe_outputs` (the model's score): what the core calls after the response is ready;
- fold, off the request path: the background `flush` of N queued requests into the 31 sketches,
  per request and per feature, for rows and for arrays;
- judge: one `compute` round (31 features, chi-square included): a cost per interval, not per request;
- for contrast, updating the sketches immediately per request with numpy (`sketch.add` per feature).

Goal (skew monitors): under 20 us per request with 30 features, request path plus amortised fold. The
judge round runs every `skew.interval_seconds` (15 s) whatever the traffic. Results are printed and
written to `loadtests/results/sketches.json` (or `--json`).
"""

from __future__ import annotations

import argparse
import copy
import platform
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))  # sibling benchmark modules

import numpy as np
from results_file import save

from router.config import SkewSpec
from router.skew.sink import SkewSink, load_baseline

GOAL_US_PER_REQUEST = 20.0
EXTRA_NUMERIC = ("total_day_minutes", "total_eve_minutes", "total_night_minutes", "total_intl_minutes",
                 "total_day_calls", "total_eve_calls", "total_night_calls", "account_length")
EXTRA_CATEGORICAL = ("state", "area_code", "international_plan")


def widen(baseline: dict) -> tuple[dict, dict[str, str]]:
    """The baseline with 11 copied features (30 in all), and copy name -> source feature."""
    wide = copy.deepcopy(baseline)
    copies = {f"{name}_copy": name for name in (*EXTRA_NUMERIC, *EXTRA_CATEGORICAL)}
    for new, old in copies.items():
        wide["features"][new] = copy.deepcopy(baseline["features"][old])
    return wide, copies


def rows_of(data_dir: Path, copies: dict[str, str], n: int) -> list[dict]:
    from serving.training.dataset import read_split, to_instances  # noqa: PLC0415 - pandas only where rows are read

    base = to_instances(read_split(data_dir, "live"))
    rows = []
    for i in range(n):
        row = dict(base[i % len(base)])
        for new, old in copies.items():
            row[new] = row[old]
        rows.append(row)
    return rows


def arrays_of(rows: list[dict], baseline: dict) -> list[dict]:
    out = []
    for row in rows:
        out.append({k: (np.array([v.encode()], dtype=object) if baseline["features"][k]["kind"] == "categorical"
                        else np.array([v], dtype=np.float32)) for k, v in row.items()})
    return out


def per_call_us(fn, items) -> float:
    start = time.perf_counter()
    for item in items:
        fn(item)
    return (time.perf_counter() - start) / len(items) * 1e6


def bench(args: argparse.Namespace) -> dict:
    baseline, copies = widen(load_baseline(args.baseline))
    features = len(baseline["features"])
    settings = SkewSpec(max_pending=3 * args.requests + 10, min_sample=1)
    rows = rows_of(args.data, copies, args.requests)
    arrays = arrays_of(rows, baseline)
    scores = [{"probability": np.array([v], dtype=np.float32)} for v in np.random.default_rng(0).random(args.requests)]
    result: dict = {"features": features, "requests": args.requests, "python": platform.python_version(),
                    "machine": platform.machine(), "goal_us_per_request": GOAL_US_PER_REQUEST}

    best: dict[str, float] = {}
    for _ in range(args.repeat):  # best of a few: the machine is shared
        sink = SkewSink(baseline, settings, "churn")
        t_rows = per_call_us(lambda r, sink=sink: sink.observe_rows("e", "legacy", [r]), rows)
        t0 = time.perf_counter()
        sink.flush()
        fold_rows = (time.perf_counter() - t0) / len(rows) * 1e6
        t_arrays = per_call_us(lambda a, sink=sink: sink.observe("e", "model", a), arrays)
        t_out = per_call_us(lambda o, sink=sink: sink.observe_outputs("e", o), scores)
        t0 = time.perf_counter()
        sink.flush()
        fold_arrays = (time.perf_counter() - t0) / len(arrays) * 1e6
        t0 = time.perf_counter()
        sink.compute()
        judge_ms = (time.perf_counter() - t0) * 1e3
        immediate_sink = SkewSink(baseline, settings, "churn")
        sketches = [immediate_sink.sketches[name] for name in immediate_sink.features]
        immediate = per_call_us(lambda a, sketches=sketches: [s.add(a[s.name]) for s in sketches], arrays[: min(len(arrays), 3000)])
        for key, value in (("observe_rows_us", t_rows), ("observe_arrays_us", t_arrays), ("observe_outputs_us", t_out),
                           ("fold_rows_us_per_request", fold_rows), ("fold_arrays_us_per_request", fold_arrays),
                           ("judge_ms_per_round", judge_ms), ("immediate_numpy_us_per_request", immediate)):
            best[key] = min(best.get(key, float("inf")), value)
    result.update({k: round(v, 3) for k, v in best.items()})
    result["total_rows_us_per_request"] = round(best["observe_rows_us"] + best["fold_rows_us_per_request"], 3)
    result["total_arrays_us_per_request"] = round(best["observe_arrays_us"] + best["fold_arrays_us_per_request"], 3)
    result["fold_rows_us_per_feature"] = round(best["fold_rows_us_per_request"] / features, 3)
    result["fold_arrays_us_per_feature"] = round(best["fold_arrays_us_per_request"] / features, 3)
    result["meets_goal"] = max(result["total_rows_us_per_request"], result["total_arrays_us_per_request"]) < GOAL_US_PER_REQUEST
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--baseline", type=Path, default=Path("models/churn/2/modelramp/baseline.json"))
    parser.add_argument("--data", type=Path, default=Path("models/data"), help="folder of the data splits (rows from 'live')")
    parser.add_argument("--requests", type=int, default=20_000, help="requests (one row each) per measurement")
    parser.add_argument("--repeat", type=int, default=3, help="measurements; the best is kept")
    parser.add_argument("--json", type=Path, default=Path(__file__).with_name("results") / "sketches.json")
    args = parser.parse_args()
    result = bench(args)
    width = max(len(k) for k in result)
    for key, value in result.items():
        print(f"{key:<{width}}  {value}")
    save(args.json, result)
    return 0 if result["meets_goal"] else 1


if __name__ == "__main__":
    sys.exit(main())
