"""The README lists every way the demo's experiment differs from the example; this keeps the list true."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from experiments.cli.local import STAGE_SAMPLES_DEFAULT, _stage_samples
from experiments.config import load_config
from experiments.local.demo import DEMO_STAGE_SAMPLES, DemoSettings, demo_config
from experiments.local.stack import Ports

REPO = Path(__file__).resolve().parents[3]

# Each changed setting, by its path in the experiment document, and what README.md says of it.
DOCUMENTED = {
    "ramp.stages.*.min_duration_seconds": "`min_duration_seconds` is 10 s",
    "ramp.stages.*.min_samples": "`min_samples`\n  is 600 at 1%, 1,500 at 5%, 2,400 at 20%, 200 at 50% and 100%",
    "arms.legacy.backend.timeout_ms": "legacy `timeout_ms` 2,000",
    "arms.model.backend.timeout_ms": "model `timeout_ms` 1,500 (200)",
    "router.request_timeout_ms": "`router.request_timeout_ms` 4,000",
    "guardrails.max_p99_latency_ms": "`max_p99_latency_ms` at their scale, 2,000 (250)",
    "router.feature_sample_share": "`router.feature_sample_share` 1.0",
    "router.outcome_ttl_seconds": "`router.outcome_ttl_seconds` 3,600",
    "name": "`churn-v<candidate>-demo`",
    "salt": "`demo-<candidate>-<seed>`",
    "arms.legacy.backend.url": "the ports",
    "arms.model.backend.target": "the ports",
    "arms.model.backend.rest_port": "the ports",
}


def _changed(base: object, demo: object, prefix: str = "") -> set[str]:
    if isinstance(base, dict) and isinstance(demo, dict):
        return {p for key in base.keys() | demo.keys() for p in _changed(base.get(key), demo.get(key), f"{prefix}{key}.")}
    if isinstance(base, list) and isinstance(demo, list) and len(base) == len(demo):
        return {p for a, b in zip(base, demo, strict=True) for p in _changed(a, b, f"{prefix}*.")}
    return set() if base == demo else {prefix.rstrip(".")}


def test_every_setting_the_demo_changes_is_in_the_readme():
    base = load_config(REPO / "experiments" / "example_experiment.yaml")
    demo = demo_config(base, DemoSettings(models=REPO / "models", out=REPO / "reports"),
                       Ports(*(19000 + i for i in range(6))), "127.0.0.1")
    changed = _changed(base.model_dump(mode="json"), demo.model_dump(mode="json"))
    assert changed == set(DOCUMENTED), f"changed but not listed: {changed - set(DOCUMENTED)}; listed but unchanged: {set(DOCUMENTED) - changed}"
    readme = (REPO / "README.md").read_text()
    for path, phrase in DOCUMENTED.items():
        assert phrase in readme, f"README.md does not say how the demo sets {path} ({phrase!r})"


def test_the_command_line_default_is_the_demo_default():
    assert _stage_samples(STAGE_SAMPLES_DEFAULT) == DEMO_STAGE_SAMPLES == DemoSettings(models=REPO, out=REPO).stage_samples


def test_stage_samples_that_are_not_five_positive_numbers_are_refused_with_the_reason():
    for text, reason in (("600,1500", "five positive"), ("600,x,1,1,1", "whole numbers"), ("0,1,1,1,1", "five positive")):
        with pytest.raises(argparse.ArgumentTypeError, match=reason):
            _stage_samples(text)
