"""QA override: unit ids pinned to an arm, answered normally but counted apart from the experiment.

A tester (or a synthetic probe) needs to see a given arm now, whatever the weights say, and must
not bias the experiment while doing so. The experiment file lists such unit ids with their arm:

    qa:
      units: {qa-model-probe: model, qa-legacy-probe: legacy}

A request with one of these `X-Unit-Id`s (gRPC `x-unit-id`) goes to that arm, with the model
arm's fallback and circuit breaker as usual, and is answered like any other. Everything it
records carries the experiment label `<name>:qa` (`qa_label`) instead of `<name>`: requests,
exposures, fallbacks, backend errors, and its signed outcome id, so its outcome is recorded in
the ledger and counted under that label too. The analyzer, the ramp controller and the alerts
select the experiment's own label, so QA traffic never enters exposures, outcomes or buckets;
it is visible on its own series. QA requests feed neither the skew sketches nor shadow calls.
Experiment names are DNS labels, so `:qa` never names a real experiment.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

QA_SUFFIX = ":qa"
MAX_QA_UNITS = 1000  # a list for testers and probes, not a way to take traffic out of the experiment


class QaSpec(BaseModel):
    """The QA override (`qa:` in the experiment file): unit ids pinned to an arm, counted apart."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    units: dict[str, Literal["legacy", "model"]] = Field(
        default_factory=dict, description="Unit id -> the arm it is always sent to; its requests are counted under `<experiment>:qa`.")

    @field_validator("units")
    @classmethod
    def _few_and_named(cls, units: dict[str, str]) -> dict[str, str]:
        if len(units) > MAX_QA_UNITS:
            raise ValueError(f"at most {MAX_QA_UNITS} QA units, got {len(units)}")
        for unit in units:
            if not unit or len(unit) > 256:
                raise ValueError(f"a QA unit id must be 1 to 256 characters, got {unit!r}")
        return units


def pinned_units(spec: QaSpec) -> Mapping[str, str] | None:
    """The unit -> arm table a router state keeps; None without QA units, so a request checks one attribute only."""
    return dict(spec.units) if spec.units else None


def qa_label(experiment: str) -> str:
    """The experiment label of QA traffic: apart from the experiment's own."""
    return experiment + QA_SUFFIX


def is_qa_label(experiment: str) -> bool:
    return experiment.endswith(QA_SUFFIX)
