"""The legacy mappings at run time: a mapped answer reads as the default one does; one that does not map is a 502 naming its expression."""

from __future__ import annotations

import pytest

from router.backends import ColumnOutputs, PredictCall, failure_reason
from router.backends.base import TRACE_HEADERS, UnmappedAnswer, capture_headers, forwardable, forwarded, forwarding
from router.backends.legacy_mapping import RequestMapping, ResponseMapping, default_outputs
from router.signature import TensorSpec
from serving.tfserving.tensors import DT_FLOAT, DT_INT64, DT_STRING

ROWS = [{"calls": 5.0, "plan": "yes"}, {"calls": 1.0, "plan": "no"}, {"calls": 0.0, "plan": "no"}]
SCORE = {"probability": TensorSpec(DT_FLOAT, (-1,))}
FOREIGN = {"results": [{"churn_score": 1.0, "at_risk": True, "reasons": ["calls"]}, {"churn_score": 0.0, "at_risk": False, "reasons": []},
                       {"churn_score": 0.25, "at_risk": False, "reasons": []}]}


def call(outputs=SCORE, output_filter=()) -> PredictCall:
    return PredictCall(rows=ROWS, outputs=outputs, output_filter=output_filter)


def test_the_request_mapping_shapes_the_body():
    assert RequestMapping("{customers: instances}").body(ROWS) == {"customers": ROWS}
    assert RequestMapping("{ids: instances[*].calls, n: length(instances)}").body(ROWS) == {"ids": [5.0, 1.0, 0.0], "n": 3}


def test_a_mapped_answer_reads_as_the_same_answer_in_modelramps_format():
    mapped = ResponseMapping({"probability": "results[*].churn_score"}).outputs(FOREIGN, call(), 3)
    default = default_outputs({"predictions": [{"probability": r["churn_score"]} for r in FOREIGN["results"]]}, call(), 3)
    assert isinstance(mapped, ColumnOutputs) and isinstance(default, ColumnOutputs)
    assert mapped.columns == default.columns == {"probability": [1.0, 0.0, 0.25]}


def test_outputs_of_other_types_and_the_output_filter():
    outputs = {"probability": TensorSpec(DT_FLOAT, (-1,)), "flag": TensorSpec(DT_INT64, (-1,)), "why": TensorSpec(DT_STRING, (-1, -1))}
    answer = {"results": [{"churn_score": 1.0, "at_risk": 1, "reasons": ["a", "b"]}, {"churn_score": 0.0, "at_risk": 0, "reasons": ["c", "d"]},
                          {"churn_score": 0.5, "at_risk": 0, "reasons": ["e", "f"]}]}
    mapping = ResponseMapping({"probability": "results[*].churn_score", "flag": "results[*].at_risk", "why": "results[*].reasons"})
    got = mapping.outputs(answer, call(outputs), 3)
    assert got["flag"].tolist() == [1, 0, 0] and got["why"].shape == (3, 2)
    only = mapping.outputs({"results": [{"churn_score": 0.5}] * 3}, call(outputs, output_filter=("probability",)), 3)
    assert list(only) == ["probability"], "only the outputs asked for are read"


NOT_MAPPING = [
    ({"probability": "scores"}, FOREIGN, "gave nothing (null)"),
    ({"probability": "results[*].churn_probability"}, FOREIGN, "gave 0 value(s), not a list of 3"),
    ({"probability": "results[:2].churn_score"}, FOREIGN, "gave 2 value(s), not a list of 3"),
    ({"probability": "results[0].churn_score"}, FOREIGN, "gave 1.0, not a list of 3"),
    ({"probability": "results[*].at_risk"}, FOREIGN, "gave True, not a float32 value"),
    ({"probability": "results[*].reasons"}, FOREIGN, "gave ['calls'], not a float32 value"),
    ({"probability": "results[*].churn_score"}, {"results": [{"churn_score": "0.5"}] * 3}, "gave '0.5', not a float32 value"),
    ({"probability": "results[*].churn_score"}, {"results": [{"churn_score": 1e39}] * 3}, "does not fit the model output 'probability'"),
    ({"probability": "results[*].churn_score"}, ["not", "an", "object"], "gave nothing (null)"),
    ({"probability": "sort(results[*].reasons)"}, FOREIGN, "failed: "),  # a JMESPath function given the wrong types, at run time
]


@pytest.mark.parametrize(("mapping", "answer", "words"), NOT_MAPPING)
def test_an_answer_that_does_not_map_is_a_bad_response_naming_the_expression(mapping, answer, words):
    with pytest.raises(UnmappedAnswer) as failed:
        ResponseMapping(mapping).outputs(answer, call(), 3)
    message = str(failed.value)
    assert f"response.probability ({mapping['probability']!r})" in message and words in message, message
    assert failed.value.http_status == 502 and failure_reason(failed.value) == "bad_response"


def test_a_signature_output_the_mapping_does_not_name_is_named_as_the_fields_fault():
    two = {**SCORE, "margin": TensorSpec(DT_FLOAT, (-1,))}
    mapping = ResponseMapping({"probability": "results[*].churn_score"})
    with pytest.raises(UnmappedAnswer, match=r"arms.legacy.backend.response names no expression for the model output\(s\) \['margin'\]"):
        mapping.outputs(FOREIGN, call(two), 3)
    assert isinstance(mapping.outputs(FOREIGN, call(), 3), ColumnOutputs), "the next signature is checked afresh"


def test_a_request_mapping_that_fails_at_run_time_is_a_bad_response():
    with pytest.raises(UnmappedAnswer, match=r"request \('sum\(instances\[\*\].plan\)'\) failed"):
        RequestMapping("sum(instances[*].plan)").body(ROWS)


def test_configured_headers_reach_only_the_backend_that_asked_for_them():
    wanted = capture_headers(["X-Test-Tenant"])
    assert wanted == TRACE_HEADERS | {"x-test-tenant"}
    pairs = (("x-request-id", "r-1"), forwardable("x-test-tenant", "acme"))
    with forwarding(pairs):  # type: ignore[arg-type]
        assert forwarded(wanted) == pairs, "the legacy backend passes on its own headers and the trace headers"
        assert forwarded() == (("x-request-id", "r-1"),), "a model backend never sees the legacy system's headers"
    assert forwarded() == ()
    token = "Bearer " + "a" * 2000  # a JWT is longer than any trace header may be
    assert forwardable("authorization", token) == ("authorization", token)
    assert forwardable("x-request-id", "a" * 2000) is None
