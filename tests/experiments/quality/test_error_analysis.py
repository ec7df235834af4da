"""Sliced error analysis: hand-computed per-slice metrics and ranking, then `modelramp slices` on the real model server."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from experiments.cli import main
from experiments.cli.slices import check_split, parse_versions
from experiments.config import EXAMPLE_CONFIG, SliceSpec, load_config
from experiments.quality.slices import Priority, analyse, rank
from experiments.quality.slicing import slice_mask
from serving.legacy import rule as legacy_rule
from serving.training import dataset
from tests.support.processes import free_port

# Ten customers: four with an international plan, three churners (rows 0, 1, 4).
FRAME = pd.DataFrame({"international_plan": ["yes"] * 4 + ["no"] * 6, "churn": [1, 1, 0, 0, 1, 0, 0, 0, 0, 0]})
BASELINE = np.array([1, 1, 0, 0, 0, 0, 0, 0, 0, 0], dtype=float)                       # 9/10 right, misses row 4
SCORES = {1: np.array([0.9, 0.2, 0.1, 0.6, 0.8, 0.1, 0.1, 0.1, 0.1, 0.1]),           # wrong on rows 1 and 3
          2: np.array([0.9, 0.9, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.7])}           # wrong on rows 4 and 9
SLICES = [SliceSpec(name="intl", feature="international_plan", values=["yes"]),
          SliceSpec(name="domestic", feature="international_plan", values=["no"]),
          SliceSpec(name="churners", label=1)]


def test_per_slice_reports_by_hand() -> None:
    result = analyse(FRAME, BASELINE, SCORES, SLICES)
    assert result.overall.n == 10
    assert [result.overall.baseline["correct"], result.overall.versions[1]["correct"],
            result.overall.versions[2]["correct"]] == [9, 8, 8]
    intl, domestic, churners = result.slices
    assert (intl.n, intl.share, domestic.n, churners.n, churners.share) == (4, 0.4, 6, 3, 0.3)
    assert intl.baseline["accuracy"] == 1.0 and intl.versions[2]["accuracy"] == 1.0
    # Version 1 on the international plan: row 0 TP, row 1 FN, row 2 TN, row 3 FP.
    v1 = intl.versions[1]
    assert v1["confusion"] == {"tp": 1, "fp": 1, "tn": 1, "fn": 1}
    assert (v1["accuracy"], v1["precision"], v1["recall"], v1["f1"]) == (0.5, 0.5, 0.5, 0.5)
    # Version 2 at home: row 4 FN, row 9 FP, nothing right among the positives.
    v2 = domestic.versions[2]
    assert v2["confusion"] == {"tp": 0, "fp": 1, "tn": 4, "fn": 1}
    assert v2["accuracy"] == pytest.approx(4 / 6) and (v2["precision"], v2["recall"], v2["f1"]) == (0.0, 0.0, 0.0)
    # On the rare class accuracy is recall: two of three churners found by every system.
    assert all(r["accuracy"] == pytest.approx(2 / 3) for r in (churners.baseline, *churners.versions.values()))


def test_priorities_rank_by_gap_times_share() -> None:
    rows = analyse(FRAME, BASELINE, SCORES, SLICES).priorities
    table = [(p.version, p.rank, p.slice) for p in rows]
    # v1: intl gap 0.5 x 0.4 = 0.2; churners gap 0; domestic gap -1/6 x 0.6 = -0.1.
    # v2: domestic gap 1/6 x 0.6 = 0.1; intl and churners gap 0 (the larger share first).
    assert table == [(1, 1, "intl"), (1, 2, "churners"), (1, 3, "domestic"),
                     (2, 1, "domestic"), (2, 2, "intl"), (2, 3, "churners")]
    by = {(p.version, p.slice): p for p in rows}
    assert by[(1, "intl")].gap == pytest.approx(0.5) and by[(1, "intl")].potential_gain == pytest.approx(0.2)
    assert by[(1, "domestic")].potential_gain == pytest.approx(-0.1)
    assert by[(2, "domestic")].potential_gain == pytest.approx(0.1)
    # Share of the version's errors: both of v1's errors are international, one of them a churner.
    assert (by[(1, "intl")].error_share, by[(1, "churners")].error_share, by[(1, "domestic")].error_share) == (1.0, 0.5, 0.0)


def test_seed_004_table() -> None:
    # Seed 004's speech example: gap to human-level performance and share of data.
    rows = [Priority(slice=name, version=1, n=0, share=share, model_accuracy=acc, baseline_accuracy=hlp,
                     gap=hlp - acc, potential_gain=(hlp - acc) * share, error_share=None)
            for name, acc, hlp, share in (("clear speech", 0.94, 0.95, 0.60), ("car noise", 0.89, 0.93, 0.04),
                                          ("people noise", 0.87, 0.89, 0.30), ("low bandwidth", 0.70, 0.70, 0.06))]
    ranked = rank(rows)
    # 0.6% for clear speech and people noise alike (the larger gap first), then 0.16%, then 0.
    assert [p.slice for p in ranked] == ["people noise", "clear speech", "car noise", "low bandwidth"]
    assert [p.rank for p in ranked] == [1, 2, 3, 4]
    assert ranked[2].potential_gain == pytest.approx(0.0016)


def test_an_empty_slice_ranks_last_and_scores_are_checked() -> None:
    nobody = SliceSpec(name="nobody", feature="international_plan", values=["maybe"])
    rows = analyse(FRAME, BASELINE, SCORES, [*SLICES, nobody]).priorities
    empty = [p for p in rows if p.slice == "nobody"]
    assert all(p.gap is None and p.potential_gain == 0.0 and p.share == 0.0 and p.rank == 4 for p in empty)
    with pytest.raises(ValueError, match="version 2 has 9 scores for 10 rows"):
        analyse(FRAME, BASELINE, {1: SCORES[1], 2: SCORES[2][:9]}, SLICES)


def test_the_test_split_is_refused_and_versions_parsed() -> None:
    with pytest.raises(ValueError, match="pristine test split belongs to the launch gate"):
        check_split("test")
    with pytest.raises(ValueError, match="unknown split 'holdout'"):
        check_split("holdout")
    assert check_split("live") == "live"
    assert parse_versions("2,1, 2") == [1, 2] and parse_versions(None) is None
    with pytest.raises(ValueError, match="version numbers"):
        parse_versions("two")


# --- the command against the real model server ---------------------------------------------------


@pytest.fixture
def slices_cli(capsys, models_dir, model_server):
    def run(*args: str, target: str | None = None) -> tuple[int, str, str]:
        code = main(["slices", "--models", str(models_dir), "--target", target or model_server.grpc_target, *args])
        out, err = capsys.readouterr()
        return code, out, err

    return run


def test_every_served_version_beside_legacy_matches_training_records(slices_cli, models_dir, tmp_path) -> None:
    plot = tmp_path / "slices.png"
    code, out, err = slices_cli("--json", "--plot", str(plot))
    assert code == 0, err
    doc = json.loads(out)
    assert doc["versions"] == [1, 2] and doc["split"] == "validation"  # found by GetModelStatus
    frame = dataset.read_split(models_dir / "data", "validation")
    assert doc["rows"] == len(frame) and doc["data_fingerprint"] == dataset.fingerprint(frame)
    # All rows: the same numbers `modelramp train` recorded for each version on the validation split.
    for v in (1, 2):
        recorded = json.loads((models_dir / "churn" / str(v) / "modelramp" / "metrics.json").read_text())["validation"]
        assert doc["overall"]["versions"][str(v)]["confusion"] == recorded["confusion"]
    legacy = np.array([legacy_rule.predict(r)["churn"] for r in dataset.to_instances(frame)], dtype=int)
    labels = frame[dataset.LABEL].to_numpy()
    assert doc["overall"]["baseline"]["accuracy"] == pytest.approx(float((legacy == labels).mean()))
    # Every configured slice, sized as its mask says, with the baseline checked directly.
    slices = load_config(EXAMPLE_CONFIG).gate.slices
    assert [s["name"] for s in doc["slices"]] == [s.name for s in slices]
    for s, spec in zip(doc["slices"], slices, strict=True):
        mask = slice_mask(frame, spec)
        assert s["n"] == int(mask.sum()) and s["share"] == pytest.approx(mask.mean())
        assert s["baseline"]["correct"] == int((legacy[mask] == labels[mask]).sum())
    # The two versions differ where it matters: v1 (logistic) loses to the legacy rule on some slice.
    differ = [s["name"] for s in doc["slices"] if s["versions"]["1"]["accuracy"] != s["versions"]["2"]["accuracy"]]
    assert differ
    prio = doc["priorities"]
    for v in (1, 2):
        gains = [p["potential_gain"] for p in prio if p["version"] == v]
        assert gains == sorted(gains, reverse=True) and len(gains) == len(slices)
    top_v1 = next(p for p in prio if p["version"] == 1)
    assert top_v1["rank"] == 1 and top_v1["gap"] > 0 and top_v1["potential_gain"] == pytest.approx(top_v1["gap"] * top_v1["share"])
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and plot.stat().st_size > 10_000


def test_table_one_version_and_the_live_split(slices_cli, models_dir) -> None:
    code, out, err = slices_cli("--versions", "2", "--split", "live")
    assert code == 0, err
    assert "prioritising what to work on" in out and "frequent-callers" in out and "churners: churn = 1" in out
    assert f"live split ({len(dataset.read_split(models_dir / 'data', 'live'))} rows)" in out
    assert " v2 " in out and " v1 " not in out


def test_refusals_are_one_line(slices_cli, tmp_path) -> None:
    nobody = f"127.0.0.1:{free_port()}"
    code, out, err = slices_cli("--split", "test", target=nobody)  # refused before any server is asked
    assert code == 2 and out == "" and "launch gate" in err and len(err.strip().splitlines()) == 1
    code, _, err = slices_cli("--versions", "1,7")
    assert code == 2 and "serves churn versions [1, 2]; not [7]" in err
    code, _, err = slices_cli(target=nobody)
    assert code == 2 and "no model server answers" in err
    data = yaml.safe_load(EXAMPLE_CONFIG.read_text())
    data["gate"]["slices"] = [{"name": "typo", "feature": "day_minutes", "min": 200}]
    bad = tmp_path / "experiment.yaml"
    bad.write_text(yaml.safe_dump(data))
    code, _, err = slices_cli("--config", str(bad), target=nobody)
    assert code == 2 and "slice 'typo': unknown feature 'day_minutes'" in err


def test_start_server(capsys, models_dir) -> None:
    code = main(["slices", "--models", str(models_dir), "--start-server", "--versions", "1", "--json"])
    out, err = capsys.readouterr()
    assert code == 0, err
    doc = json.loads(out)
    assert doc["versions"] == [1] and list(doc["overall"]["versions"]) == ["1"]
    assert Path(doc["config"]) == EXAMPLE_CONFIG
