"""The history format: parsing, validation messages, round trip."""

from __future__ import annotations

import copy
import json
from datetime import datetime, timezone

import pytest

from experiments.live.history import (
    ArmCounts,
    CounterResetError,
    History,
    HistoryError,
    Look,
    dump_history,
    load_history,
    parse_history,
)

DOC = {
    "experiment": "clf-v2-vs-legacy",
    "looks": [
        {
            "time": "2026-11-23T10:00:00Z",
            "weights": {"legacy": 0.99, "model": 0.01},
            "arms": {"legacy": {"exposures": 9901, "successes": 8712}, "model": {"exposures": 99, "successes": 91}},
        },
        {
            "time": "2026-11-23T11:00:00Z",
            "weights": {"legacy": 0.95, "model": 0.05},
            "arms": {
                "legacy": {"exposures": 19400, "successes": 17000, "failures": 2100},
                "model": {"exposures": 600, "successes": 520, "failures": 60, "errors": 3, "fallbacks": 2,
                          "p99_latency_seconds": 0.12},
            },
        },
    ],
}


def doc() -> dict:
    return copy.deepcopy(DOC)


def test_parses_the_architecture_example() -> None:
    h = parse_history(doc())
    assert h.experiment == "clf-v2-vs-legacy"
    assert h.looks[0].time == datetime(2026, 11, 23, 10, tzinfo=timezone.utc)
    assert h.looks[0].arms["model"] == ArmCounts(exposures=99, successes=91)
    assert h.looks[1].arms["model"].p99_latency_seconds == 0.12


def test_success_rate_over_reported_outcomes_when_failures_given() -> None:
    assert ArmCounts(exposures=100, successes=45).success_rate == pytest.approx(0.45)
    # 20 outcomes never arrived: they are not failures.
    assert ArmCounts(exposures=100, successes=60, failures=20).success_rate == pytest.approx(0.75)
    assert ArmCounts(exposures=0, successes=0).success_rate is None


def test_round_trip() -> None:
    h = parse_history(doc())
    assert parse_history(dump_history(h)) == h
    assert json.loads(json.dumps(dump_history(h))) == dump_history(h)


def test_load_history_from_file(tmp_path) -> None:
    path = tmp_path / "h.json"
    path.write_text(json.dumps(doc()))
    assert load_history(path) == parse_history(doc())


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda d: d["looks"][1]["arms"]["model"].update(successes=-1), "looks[1].arms.model.successes: negative"),
        (lambda d: d["looks"][0]["arms"]["legacy"].update(exposures=1.5), "looks[0].arms.legacy.exposures: must be an integer"),
        (lambda d: d["looks"][0]["arms"]["model"].update(successes=100), "looks[0].arms.model.successes: 100 outcomes exceed 99"),
        (lambda d: d["looks"][1].update(time="2026-11-23T09:00:00Z"), "looks[1].time"),
        (lambda d: d["looks"][1].update(weights={"legacy": 0.9, "model": 0.05}), "looks[1].weights: must sum to 1"),
        (lambda d: d["looks"][0]["arms"].update(shadow={"exposures": 1, "successes": 1}), "looks[0].arms: unknown arm 'shadow'"),
        (lambda d: d["looks"][0]["weights"].pop("model"), "looks[0].weights: arm 'model' is missing"),
        (lambda d: d["looks"][0]["arms"]["model"].pop("successes"), "looks[0].arms.model.successes: missing"),
        (lambda d: d["looks"][0].update(time="yesterday"), "looks[0].time: not an ISO 8601"),
        (lambda d: d.pop("looks"), "looks: missing"),
    ],
)
def test_validation_names_look_and_field(mutate, message) -> None:
    d = doc()
    mutate(d)
    with pytest.raises(HistoryError, match=None) as info:
        parse_history(d)
    assert message in str(info.value)


def test_counter_reset_is_its_own_error_and_can_be_allowed() -> None:
    d = doc()
    d["looks"][1]["arms"]["model"]["exposures"] = 50
    d["looks"][1]["arms"]["model"].update(successes=40, failures=5)
    with pytest.raises(CounterResetError, match=r"looks\[1\]\.arms\.model\.exposures: counter went down from 99 to 50"):
        parse_history(d)
    h = parse_history(d, allow_resets=True)
    with pytest.raises(CounterResetError):
        h.check_counters()


def test_bad_file_messages(tmp_path) -> None:
    with pytest.raises(HistoryError, match="cannot read history"):
        load_history(tmp_path / "absent.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(HistoryError, match="not valid JSON"):
        load_history(bad)


def test_naive_times_are_utc_and_upto() -> None:
    look = Look(datetime(2026, 1, 1), {"legacy": 1.0, "model": 0.0},
                {"legacy": ArmCounts(1, 1), "model": ArmCounts(0, 0)})
    assert look.time.tzinfo is timezone.utc
    h = History("x", (look,))
    assert h.upto(0).looks == ()


def bucketed() -> dict:
    """Two looks whose arms carry 4 analysis buckets each."""
    return {"experiment": "e", "looks": [
        {"time": "2026-11-23T10:00:00Z", "weights": {"legacy": 0.5, "model": 0.5},
         "arms": {"legacy": {"exposures": 10, "successes": 6, "failures": 2,
                             "buckets": {"exposures": [1, 2, 3, 4], "successes": [1, 1, 2, 2], "failures": [0, 1, 0, 1]}},
                  "model": {"exposures": 8, "successes": 5, "failures": 1,
                            "buckets": {"exposures": [2, 2, 2, 2], "successes": [1, 2, 1, 1], "failures": [1, 0, 0, 0]}}}},
        {"time": "2026-11-23T11:00:00Z", "weights": {"legacy": 0.5, "model": 0.5},
         "arms": {"legacy": {"exposures": 12, "successes": 7, "failures": 2,
                             "buckets": {"exposures": [2, 2, 4, 4], "successes": [1, 1, 3, 2], "failures": [0, 1, 0, 1]}},
                  "model": {"exposures": 9, "successes": 5, "failures": 1,
                            "buckets": {"exposures": [2, 3, 2, 2], "successes": [1, 2, 1, 1], "failures": [1, 0, 0, 0]}}}}]}


def test_buckets_round_trip_and_give_b() -> None:
    h = parse_history(bucketed())
    assert h.buckets == 4 and h.looks[0].buckets == 4
    assert h.looks[1].arms["model"].buckets.exposures == (2, 3, 2, 2)
    assert dump_history(h) == bucketed()
    assert parse_history(doc()).buckets is None  # request-level


@pytest.mark.parametrize(("change", "message"), [
    (lambda d: d["looks"][0]["arms"]["model"]["buckets"]["exposures"].__setitem__(0, 3),
     "looks[0].arms.model.buckets.exposures: the buckets sum to 9, the arm's exposures is 8"),
    (lambda d: d["looks"][0]["arms"]["model"]["buckets"]["failures"].pop(),
     "looks[0].arms.model.buckets: exposures, successes and failures must be lists of the same length"),
    (lambda d: d["looks"][0]["arms"]["model"]["buckets"]["successes"].__setitem__(1, -1),
     "looks[0].arms.model.buckets.successes[1]: must be a non-negative integer count"),
    (lambda d: d["looks"][0]["arms"]["model"].pop("buckets"), "looks[0].arms: both arms need buckets of the same B"),
    (lambda d: d["looks"][0]["arms"]["model"].pop("failures"), "looks[0].arms.model.buckets: buckets need the arm's failures"),
    (lambda d: d["looks"][0]["arms"]["model"]["buckets"].pop("failures"), "needs exactly the lists"),
    (lambda d: [d["looks"][1]["arms"][a]["buckets"][f].append(0) for a in ("legacy", "model")
                for f in ("exposures", "successes", "failures")], "every look must have the same B"),
])
def test_bucket_errors_name_the_field(change, message) -> None:
    data = bucketed()
    change(data)
    with pytest.raises(HistoryError) as err:
        parse_history(data)
    assert message in str(err.value)


def test_a_bucket_going_down_is_a_counter_reset() -> None:
    data = bucketed()
    legacy = data["looks"][1]["arms"]["legacy"]["buckets"]
    legacy["exposures"] = [3, 1, 4, 4]  # same total, one bucket went down
    with pytest.raises(CounterResetError, match=r"looks\[1\].arms.legacy.buckets.exposures\[1\]"):
        parse_history(data)
    assert parse_history(data, allow_resets=True).looks[1].buckets == 4


def test_looks_without_buckets_make_the_history_request_level() -> None:
    data = bucketed()
    for arm in data["looks"][0]["arms"].values():
        arm.pop("buckets")
    h = parse_history(data)
    assert h.looks[1].buckets == 4 and h.buckets is None
