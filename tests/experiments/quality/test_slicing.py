"""Slice definitions: config validation, schema checks, masks by range, category and rare class."""

from __future__ import annotations

import pandas as pd
import pytest
import yaml

from experiments.config import EXAMPLE_CONFIG, SliceSpec, load_config, parse_config
from experiments.quality.slicing import SliceError, check_slices, slice_mask, slice_rule
from router.config import ConfigError

FRAME = pd.DataFrame({
    "international_plan": ["yes", "no", "yes", "no", "no", "yes"],
    "number_customer_service_calls": [0.0, 4.0, 5.0, 1.0, 4.0, 3.0],
    "total_day_minutes": [100.0, 250.0, 300.0, 249.9, 180.0, 260.0],
    "churn": [0, 1, 1, 0, 0, 1],
})


def config_with(slices: list[dict]) -> dict:
    data = yaml.safe_load(EXAMPLE_CONFIG.read_text())
    data["gate"]["slices"] = slices
    return data


def test_category_range_and_rare_class_masks() -> None:
    intl = SliceSpec(name="intl", feature="international_plan", values=["yes"])
    calls = SliceSpec(name="calls", feature="number_customer_service_calls", min=4)
    day = SliceSpec(name="day", feature="total_day_minutes", min=250, max=300)
    churners = SliceSpec(name="churners", label=1)
    intl_churners = SliceSpec(name="intl-churners", feature="international_plan", values=["yes"], label=1)
    exact = SliceSpec(name="calls-3-or-4", feature="number_customer_service_calls", values=[3, 4])
    assert slice_mask(FRAME, intl).tolist() == [True, False, True, False, False, True]
    assert slice_mask(FRAME, calls).tolist() == [False, True, True, False, True, False]
    # min inclusive, max exclusive: 250 is in, 300 and 249.9 are out.
    assert slice_mask(FRAME, day).tolist() == [False, True, False, False, False, True]
    assert slice_mask(FRAME, churners).tolist() == [False, True, True, False, False, True]
    assert slice_mask(FRAME, intl_churners).tolist() == [False, False, True, False, False, True]
    assert slice_mask(FRAME, exact).tolist() == [False, True, False, False, True, True]
    assert slice_rule(day) == "total_day_minutes >= 250 and total_day_minutes < 300"
    assert slice_rule(intl_churners) == "international_plan in {yes} and churn = 1"
    assert slice_rule(churners) == "churn = 1"


def test_label_slice_needs_labels() -> None:
    with pytest.raises(SliceError, match="no 'churn' column"):
        slice_mask(FRAME.drop(columns="churn"), SliceSpec(name="churners", label=1))


@pytest.mark.parametrize(("slice_", "message"), [
    ({"name": "x"}, "slice 'x' is empty"),
    ({"name": "x", "feature": "total_day_minutes"}, "needs values, min or max"),
    ({"name": "x", "min": 3}, "need a feature"),
    ({"name": "x", "feature": "total_day_minutes", "min": 300, "max": 200}, "must be below max"),
    ({"name": "x", "feature": "international_plan", "values": []}, "at least 1 item"),
    ({"name": "x", "label": 2}, "label"),
])
def test_bad_definitions_fail_at_load_with_the_slice_named(slice_, message) -> None:
    with pytest.raises(ConfigError, match=message) as info:
        parse_config(config_with([slice_]))
    assert "gate.slices.0" in str(info.value)


def test_repeated_slice_names_are_refused() -> None:
    slices = [{"name": "a", "label": 1}, {"name": "a", "label": 0}]
    with pytest.raises(ConfigError, match="unique, repeated: a"):
        parse_config(config_with(slices))


@pytest.mark.parametrize(("slice_", "message"), [
    (SliceSpec(name="typo", feature="day_minutes", min=1), "slice 'typo': unknown feature 'day_minutes'"),
    (SliceSpec(name="cat", feature="international_plan", min=1), "international_plan is categorical; give values, not min/max"),
    (SliceSpec(name="num", feature="total_day_minutes", values=["high"]), "total_day_minutes is numeric"),
])
def test_schema_errors_name_the_slice(slice_, message) -> None:
    with pytest.raises(SliceError, match=message):
        check_slices([SliceSpec(name="fine", label=1), slice_])
    with pytest.raises(SliceError, match=message):
        slice_mask(FRAME, slice_)


def test_example_config_slices_fit_the_schema() -> None:
    slices = load_config(EXAMPLE_CONFIG).gate.slices
    check_slices(slices)
    names = {s.name for s in slices}
    assert {"international-plan", "frequent-callers", "heavy-day-users", "churners"} <= names
    assert any(s.label == 1 and s.feature is None for s in slices)  # the rare class on its own
