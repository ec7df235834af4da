"""`modelramp scorecard`: the rubric's shape, the scoring, evidence really checked, table and JSON through the CLI."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from experiments.cli import main, rubric
from experiments.cli.rubric import (
    AUTOMATED,
    MANUAL,
    NOT_COVERED,
    RUBRIC,
    Claim,
    RubricTest,
    Section,
)
from experiments.cli.scorecard import (
    assess,
    check_reference,
    claim_problems,
    db_state,
    models_state,
    score,
)

REPO = Path(__file__).resolve().parents[3]
PREFIX = {"data": "Data", "model": "Model", "infrastructure": "Infra", "monitoring": "Monitor"}


def test_four_sections_of_seven_tests_with_the_papers_names():
    assert [s.key for s in RUBRIC] == ["data", "model", "infrastructure", "monitoring"]
    for section in RUBRIC:
        assert [t.key for t in section.tests] == [f"{PREFIX[section.key]} {i}" for i in range(1, 8)]
        assert all(t.name and t.description and "\n" not in t.description for t in section.tests)
    names = {t.key: t.name for s in RUBRIC for t in s.tests}
    assert names["Data 1"] == "Feature expectations are captured in a schema"
    assert names["Model 5"] == "A simpler model is not better"
    assert names["Infra 1"] == "Training is reproducible"
    assert names["Monitor 3"] == "Training and serving features compute the same values"
    assert len(set(names.values())) == 28


def test_claims_are_well_formed_and_automated_ones_name_a_test_that_ci_runs():
    for test in (t for s in RUBRIC for t in s.tests):
        assert test.claims or test.gap, f"{test.key}: neither a claim nor a gap"
        for claim in test.claims:
            assert claim.status in (AUTOMATED, MANUAL), test.key
            assert claim.how and claim.where and claim.evidence, test.key
            assert "\n" not in claim.how + claim.where + claim.note, f"{test.key}: one line each"
            if claim.status == AUTOMATED:
                # An automated point needs something that runs repeatedly: a test function in tests/.
                assert any(r.startswith("tests/") and "::test_" in r for r in claim.evidence), test.key


def test_every_evidence_reference_in_the_shipped_rubric_holds():
    """A renamed test, a moved file or a deleted alert fails here, not silently in the score."""
    broken = {f"{t.key} claim {i} ({c.status})": claim_problems(c, REPO)
              for s in RUBRIC for t in s.tests for i, c in enumerate(t.claims, 1) if not c.pending}
    assert {k: v for k, v in broken.items() if v} == {}
    card = score(RUBRIC, REPO)
    assert not [a.test.key for _, assessed in card.sections for a in assessed if "evidence missing" in a.why]


def test_points_follow_the_status_and_the_final_score_is_the_lowest_section():
    card = score(RUBRIC, REPO)
    sums = {}
    for section, assessed in card.sections:
        for a in assessed:
            assert a.points == {AUTOMATED: 1.0, MANUAL: 0.5, NOT_COVERED: 0.0}[a.status]
            assert (a.status == NOT_COVERED) == (not a.how), a.test.key
        sums[section.key] = sum(a.points for a in assessed)
        assert card.total(section) == sums[section.key]
    assert card.final_score == min(sums.values())
    assert [s.key for s in card.weakest] == [k for k, v in sums.items() if v == min(sums.values())]


# --- evidence checking on a checkout built here ------------------------------------------------


@pytest.fixture
def checkout(tmp_path: Path) -> Path:
    (tmp_path / ".ci").mkdir()
    (tmp_path / ".ci" / "run").write_text("make test\n")
    (tmp_path / "Makefile").write_text("test:\n\tpytest\n")
    (tmp_path / "tests").mkdir()
    (tmp_path / "tests" / "test_x.py").write_text(
        "import pytest\n\n\ndef test_real():\n    pass\n\n\n@pytest.mark.skip(reason='later')\ndef test_skipped():\n"
        "    pass\n\n\nclass TestGroup:\n    def test_method(self):\n        pass\n")
    (tmp_path / "rules.yaml").write_text("groups:\n- name: g\n  rules:\n  - alert: SomethingBroke\n    expr: up == 0\n")
    (tmp_path / "guide.md").write_text("# Guide\n\n## Rolling back by hand\n\ntext\n")
    return tmp_path


def one(*claims: Claim, gap: str = "") -> RubricTest:
    return RubricTest("Data 1", "name", "description", claims, gap)


def auto(*evidence: str, pending: bool = False) -> Claim:
    return Claim(AUTOMATED, "runs", "here", evidence, pending=pending)


def test_reference_kinds_are_checked(checkout):
    holds = ["tests/test_x.py", "tests/test_x.py::test_real", "tests/test_x.py::TestGroup::test_method",
             "tests/test_x.py::test_real[param-1]", "rules.yaml::SomethingBroke", "Makefile::test",
             "guide.md::Rolling back by hand", "modelramp gate", "tests"]
    assert {r: check_reference(r, checkout) for r in holds} == {r: None for r in holds}
    fails = ["tests/test_gone.py", "tests/test_x.py::test_gone", "tests/test_x.py::test_method",
             "tests/test_x.py::TestGroup::test_gone", "rules.yaml::NothingBroke", "Makefile::bench",
             "guide.md::Rolling forward", "modelramp no-such-command", "../outside.py", "/etc/passwd"]
    for ref in fails:
        assert check_reference(ref, checkout) == f"evidence missing: {ref}", ref
    assert check_reference("tests/test_x.py::test_skipped", checkout) == (
        "evidence missing: tests/test_x.py::test_skipped (marked skip)")


def test_a_claim_whose_evidence_is_missing_is_not_covered(checkout):
    held = assess(one(auto("tests/test_x.py::test_real")), checkout)
    assert (held.status, held.points, held.evidence) == (AUTOMATED, 1.0, ("tests/test_x.py::test_real",))

    gone = assess(one(auto("tests/test_x.py::test_real", "tests/test_x.py::test_renamed"), gap="the gap"), checkout)
    assert (gone.status, gone.points) == (NOT_COVERED, 0.0)
    assert gone.why == "evidence missing: tests/test_x.py::test_renamed"  # the rot is named, not the gap

    missing_file = assess(one(auto("tests/test_deleted.py::test_real")), checkout)
    assert missing_file.why == "evidence missing: tests/test_deleted.py::test_real"


def test_an_automated_claim_needs_ci(checkout):
    (checkout / ".ci" / "run").unlink()
    a = assess(one(auto("tests/test_x.py::test_real")), checkout)
    assert a.status == NOT_COVERED and a.why == "evidence missing: .ci/run"
    # A manual claim does not rest on CI.
    m = assess(one(Claim(MANUAL, "by hand", "guide", ("guide.md::Rolling back by hand",))), checkout)
    assert (m.status, m.points) == (MANUAL, 0.5)


def test_falls_back_to_the_next_claim_and_pending_claims_are_not_rot(checkout):
    fallback = assess(one(auto("tests/test_x.py::test_gone"),
                          Claim(MANUAL, "by hand", "guide", ("guide.md::Rolling back by hand",))), checkout)
    assert (fallback.status, fallback.points) == (MANUAL, 0.5)
    assert fallback.passed_over == ("automated: evidence missing: tests/test_x.py::test_gone",)

    pending = assess(one(auto("tests/test_future.py::test_x", pending=True), gap="not built yet"), checkout)
    assert (pending.status, pending.why) == (NOT_COVERED, "not built yet")
    assert pending.passed_over == ("automated (pending): evidence missing: tests/test_future.py::test_x",)


def test_final_score_and_weakest_section_of_a_built_rubric(checkout):
    good = auto("tests/test_x.py::test_real")
    bad = auto("tests/test_x.py::test_gone")
    manual = Claim(MANUAL, "by hand", "guide", ("guide.md",))
    sections = (Section("a", "A", (one(good), one(good), one(manual))),   # 2.5
                Section("b", "B", (one(manual), one(bad), one(good))),    # 1.5
                Section("c", "C", (one(good), one(manual), one(bad))))    # 1.5
    card = score(sections, checkout)
    assert [card.total(s) for s in sections] == [2.5, 1.5, 1.5]
    assert card.final_score == 1.5 and [s.key for s in card.weakest] == ["b", "c"]
    doc = card.to_dict()
    assert doc["final_score"] == 1.5 and doc["weakest_section"] == "b" and doc["weakest_sections"] == ["b", "c"]
    assert doc["sections"][1]["tests"][1]["why"] == "evidence missing: tests/test_x.py::test_gone"


# --- the command --------------------------------------------------------------------------------


def run_json(capsys, *args: str) -> dict:
    assert main(["scorecard", "--json", *args]) == 0
    return json.loads(capsys.readouterr().out)


def test_json_output(capsys):
    doc = run_json(capsys)
    assert [s["key"] for s in doc["sections"]] == ["data", "model", "infrastructure", "monitoring"]
    sums = {}
    for section in doc["sections"]:
        assert len(section["tests"]) == section["max_points"] == 7
        for t in section["tests"]:
            assert t["points"] == doc["points_per_status"][t["status"]]
            assert set(t) >= {"key", "name", "description", "status", "points", "how", "where", "why", "evidence"}
        sums[section["key"]] = section["points"]
        assert section["points"] == sum(t["points"] for t in section["tests"])
    assert doc["final_score"] == min(sums.values())
    assert sums[doc["weakest_section"]] == doc["final_score"]
    assert doc["interpretation"] == rubric.interpret(doc["final_score"])
    assert doc["deployment_state"] == []
    assert doc == score(RUBRIC, REPO).to_dict()


def test_table_output(capsys):
    assert main(["scorecard"]) == 0
    out = capsys.readouterr().out
    card = score(RUBRIC, REPO)
    for section, assessed in card.sections:
        assert f"{section.title}: {card.total(section):g} / 7" in out
        for a in assessed:
            assert a.test.key in out
    weakest = card.weakest[0].title
    assert f"final score {card.final_score:g} (the lowest section: {weakest}" in out
    assert f"{weakest} <- lowest" in out
    assert "automated" in out and "not covered" in out


def test_another_checkout_without_the_evidence_scores_zero(capsys, tmp_path):
    assert main(["scorecard", "--json", "--root", str(tmp_path)]) == 0
    out, err = capsys.readouterr()
    doc = json.loads(out)
    assert "no tests/ under" in err and "--root" in err
    assert doc["final_score"] == 0 and doc["root"] == str(tmp_path.resolve())
    claimed = {t.key for s in RUBRIC for t in s.tests if t.claims}
    for t in (t for s in doc["sections"] for t in s["tests"]):
        assert t["status"] == NOT_COVERED
        if t["key"] in claimed:
            assert t["why"].startswith("evidence missing: "), t


def test_deployment_state_is_reported_and_changes_no_points(capsys, tmp_path):
    from experiments.quality import problems
    from experiments.store import Store

    prints = {"train": "sha256:a", "test": "sha256:b"}
    (tmp_path / "models" / "data").mkdir(parents=True)
    (tmp_path / "models" / "data" / "manifest.json").write_text(json.dumps({"fingerprints": prints}))
    for version, commit in ((1, "0123456789abcdef"), (2, None)):
        meta = tmp_path / "models" / "churn" / str(version) / "modelramp"
        meta.mkdir(parents=True)
        (meta.parent / "saved_model.pb").write_bytes(b"")
        (meta / "training.json").write_text(json.dumps({"seed": 0, "code_version": commit, "data": {"fingerprints": prints},
                                                        "trained_at": "2026-01-01T00:00:00Z"}))
    (tmp_path / "models" / "churn" / "1" / "modelramp" / "baseline.json").write_text("{}")
    facts = {(f["test"], f["detail"].split(":")[0]): f["ok"] for f in models_state(tmp_path / "models")
             if f["test"] != "Monitor 4"}
    assert facts == {("Model 1", "churn v1"): True, ("Infra 1", "churn v1"): True, ("Data 1", "churn v1"): True,
                     ("Model 1", "churn v2"): False, ("Infra 1", "churn v2"): True, ("Data 1", "churn v2"): False}
    (age,) = [f for f in models_state(tmp_path / "models") if f["test"] == "Monitor 4"]
    assert age["ok"] is None and age["detail"].startswith("churn v2 trained ")

    db = tmp_path / "audit.db"
    assert db_state(str(db))[0]["ok"] is False and not db.exists()  # reading never creates a database
    store = Store.open(db)
    store.record_gate_run("sha256:b", "churn", 2, {"passed": True}, honest=True)
    problems.add_problem(store, "churn", "intl churners missed", regression=True)
    store.close()
    assert {f["test"]: (f["ok"], f["detail"]) for f in db_state(str(db))} == {
        "Model 6": (True, "1 problems marked --regression"),
        "Infra 4": (True, "1 gate runs (1 passed, 1 honest)"),
        "Infra 7": (None, "0 rollbacks applied in 0 ramp decisions")}

    plain = run_json(capsys)
    doc = run_json(capsys, "--models", str(tmp_path / "models"), "--db", str(db))
    assert len(doc["deployment_state"]) == 10
    assert {k: v for k, v in doc.items() if k != "deployment_state"} == {k: v for k, v in plain.items() if k != "deployment_state"}
    assert main(["scorecard", "--models", str(tmp_path / "models"), "--db", str(db)]) == 0
    out = capsys.readouterr().out
    assert "deployment state (informational" in out and "churn v2: no git commit recorded" in out


def test_importing_the_command_stays_light():
    """`modelramp --help` imports every command module: no rich, SQLAlchemy or numpy at import time."""
    code = ("import sys, experiments.cli.scorecard, experiments.cli.rubric; "
            "print(sorted({m.split('.')[0] for m in sys.modules} & {'rich', 'sqlalchemy', 'numpy', 'yaml', 'tensorflow'}))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, check=True).stdout
    assert out.strip() == "[]"
