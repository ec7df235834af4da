"""The problem patterns database without a model server: import checks, storage, results, flips, CLI."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from experiments.cli import main
from experiments.quality import problems as db
from experiments.quality.problem_eval import problem_metrics
from experiments.quality.problem_import import read_patterns
from experiments.store import Store
from serving.training import dataset

ROW = {"state": "KS", "area_code": "area_code_415", "international_plan": "yes", "voice_mail_plan": "no",
       **{name: 1.0 for name in dataset.NUMERIC}}


def row(**changes) -> dict:
    return {**ROW, **changes}


def write_jsonl(path: Path, lines: list) -> Path:
    path.write_text("".join((line if isinstance(line, str) else json.dumps(line)) + "\n" for line in lines))
    return path


def test_problem_metrics_count_positive_and_negative_patterns_apart():
    m = problem_metrics(np.array([1, 1, 0, 0, 0]), np.array([0.9, 0.2, 0.1, 0.7, 0.4]))
    assert (m["patterns"], m["correct"], m["accuracy"]) == (5, 3, 0.6)
    assert (m["positives"], m["positives_correct"], m["negatives"], m["negatives_correct"]) == (2, 1, 3, 2)
    assert m["mean_score"] == pytest.approx(0.46)


def test_jsonl_and_csv_import_the_same_patterns(tmp_path):
    jsonl = write_jsonl(tmp_path / "p.jsonl", [
        {"problem": "intl", "instance": row(), "expected": 1, "source": "production", "note": "from a complaint"},
        {"instance": row(total_day_minutes=300.0), "expected": "no"}])
    parsed = read_patterns(jsonl, problem="fallback")
    assert [name for name, _ in parsed] == ["intl", "fallback"]
    assert parsed[0][1].expected == 1 and parsed[0][1].source == "production" and parsed[1][1].expected == 0
    csv_path = tmp_path / "p.csv"
    header = [*dataset.FEATURES, "churn", "problem"]
    values = [str(ROW[f]) for f in dataset.FEATURES]
    csv_path.write_text(",".join(header) + "\n" + ",".join([*values, "1", "intl"]) + "\n")
    (name, pattern), = read_patterns(csv_path)
    assert name == "intl" and pattern.instance == parsed[0][1].instance and pattern.expected == 1


@pytest.mark.parametrize("line, message", [
    ({"problem": "x", "instance": {**ROW, "colour": "red"}, "expected": 1}, "unknown feature(s) colour"),
    ({"problem": "x", "instance": {k: v for k, v in ROW.items() if k != "state"}, "expected": 1}, "missing feature(s) state"),
    ({"problem": "x", "instance": row(total_day_minutes="lots"), "expected": 1}, "total_day_minutes must be a number"),
    ({"problem": "x", "instance": row(total_day_minutes=float("nan")), "expected": 1}, "finite number"),
    ({"problem": "x", "instance": row(), "expected": 2}, "must be 0 or 1"),
    ({"problem": "x", "instance": row(), "expected": 1, "source": "rumour"}, "source must be one of"),
    ({"instance": row(), "expected": 1}, "no problem named"),
    ("{not json", "not JSON"),
])
def test_a_bad_line_refuses_the_whole_file_and_names_the_line(tmp_path, capsys, line, message):
    good = {"problem": "x", "instance": row(), "expected": 0}
    path = write_jsonl(tmp_path / "bad.jsonl", [good, line])
    code = main(["problems", "import", str(path), "--db", str(tmp_path / "p.db")])
    err = capsys.readouterr().err
    assert code == 2 and "bad.jsonl:2" in err and message in err
    s = Store.open(tmp_path / "p.db")
    try:
        assert db.list_problems(s, "churn") == []  # the good first line was not stored either
    finally:
        s.close()


def test_store_keeps_patterns_once_and_answers_latest_results_and_flips(store):
    problem = db.add_problem(store, "churn", "intl churners", "missed churners", regression=True, min_accuracy=0.5)
    with pytest.raises(db.ProblemError, match="already exists"):
        db.add_problem(store, "churn", "intl churners")
    new = [db.NewPattern(row(total_day_minutes=float(i)), i % 2, "handmade", f"p{i}") for i in range(4)]
    assert db.add_patterns(store, problem, new) == (4, 0)
    assert db.add_patterns(store, problem, new[:2]) == (0, 2)  # importing twice adds nothing
    pats = db.problem_patterns(store, problem)
    assert [p.expected for p in pats] == [0, 1, 0, 1] and pats[1].instance["total_day_minutes"] == 1.0
    advice = db.pattern_advice(pats)
    assert advice is not None and "4 patterns; 10 to 15 are recommended" in advice
    # Version 1 gets pattern 0 right and 1 wrong; version 2 the other way round; a later
    # evaluation of version 2 supersedes the first.
    first = {1: {pats[0].id: (0.1, 0, True), pats[1].id: (0.2, 0, False)},
             2: {pats[0].id: (0.1, 0, True), pats[1].id: (0.3, 0, False)}}
    metrics = {v: {problem.id: {"accuracy": 0.5}} for v in (1, 2)}
    db.record_evaluation(store, "churn", 2, "here", "evaluate", first, metrics)
    second = {2: {pats[0].id: (0.8, 1, False), pats[1].id: (0.9, 1, True)}}
    db.record_evaluation(store, "churn", 2, "here", "evaluate", second, {2: {problem.id: {"accuracy": 0.75}}})
    assert db.latest_problem_metrics(store, "churn") == {(problem.id, 1): {"accuracy": 0.5}, (problem.id, 2): {"accuracy": 0.75}}
    changed = {f["pattern_id"]: f["change"] for f in db.flips(store, problem, 1, 2)}
    assert changed == {pats[0].id: "broken", pats[1].id: "fixed"}
    assert db.flips(store, problem, 2, 2) == []


def test_cli_add_list_show(tmp_path, capsys):
    database = str(tmp_path / "p.db")
    assert main(["problems", "add", "heavy callers", "--description", "4+ service calls", "--regression",
                 "--db", database]) == 0
    assert main(["problems", "add", "heavy callers", "--pattern", json.dumps(row()), "--expected", "1",
                 "--note", "ticket 12", "--db", database]) == 0
    assert main(["problems", "add", "heavy callers", "--db", database]) == 2  # exists, nothing to add
    capsys.readouterr()
    assert main(["problems", "list", "--json", "--db", database]) == 0
    listed = json.loads(capsys.readouterr().out)
    (p,) = listed["problems"]
    assert (p["name"], p["regression"], p["patterns"], p["positives"]) == ("heavy callers", True, 1, 1)
    assert main(["problems", "show", "heavy callers", "--json", "--db", database]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["pattern_rows"][0]["note"] == "ticket 12" and shown["pattern_rows"][0]["instance"]["state"] == "KS"
    assert main(["problems", "show", "nothing like it", "--db", database]) == 2
    assert "no problem 'nothing like it'" in capsys.readouterr().err
    assert main(["problems", "show", "heavy callers", "--flips", "1", "2", "--db", database]) == 2
    assert "no results for version 1" in capsys.readouterr().err


def test_the_shipped_example_problems_follow_seed_003():
    parsed = read_patterns(Path(db.__file__).with_name("example_problems.jsonl"))
    by_problem: dict[str, list] = {}
    for name, pattern in parsed:
        by_problem.setdefault(name, []).append(pattern)
    assert len(by_problem) == 3
    for name, pats in by_problem.items():
        assert 10 <= len(pats) <= 15 and {p.expected for p in pats} == {0, 1}, name
        assert len({p.key for p in pats}) == len(pats), name
