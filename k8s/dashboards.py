"""Grafana dashboards (experiment, serving health, skew) built in code from the named PromQL queries.

Every panel that shows something the analyzer also asks for takes its expression from
`experiments.live.promql`, so a dashboard and a decision never disagree about what "exposures" or
"error rate" means. Dashboards are built with grafana-foundation-sdk (the Grafana 11.6 build) and
written as JSON to `k8s/dashboards/` (kustomize) and `helm/modelramp/dashboards/` (the chart):

    python -m k8s.dashboards          # rewrite both folders
    python -m k8s.dashboards --check  # exit 1 if the committed JSON is stale
    python -m k8s.dashboards --values my-values.yaml --out build/  # the JSON for other values

Limits drawn on the panels (the experiment's guardrails, the SRM threshold, the stale-decision and
anomaly alert thresholds) are hidden Grafana constant variables (`LIMITS`), drawn as `vector($name)`
series, never numbers baked into thresholds. The committed JSON holds the chart's default values
(helm/modelramp/values.yaml); the chart's dashboards ConfigMaps set each constant from the release's
values when it renders (templates/dashboards-configmaps.yaml), so the lines follow the same values
as the alerts. For kustomize, `--values` writes the JSON for another values file.

Router metrics are filtered by the `$namespace` variable (All: any namespace, or none); the ramp
decision's gauges are not, because the Pushgateway they come through gives them its own namespace.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import yaml
from grafana_foundation_sdk.builders import common as common_b
from grafana_foundation_sdk.builders import dashboard as dash
from grafana_foundation_sdk.builders import prometheus, stat, timeseries
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models import common
from grafana_foundation_sdk.models.dashboard import (
    DataSourceRef,
    DynamicConfigValue,
    GridPos,
    Threshold,
    ThresholdsMode,
    ValueMap,
    ValueMappingResult,
    VariableOption,
    VariableRefresh,
    VariableSort,
)

from experiments.live.analysis import DECISIONS
from experiments.live.promql import PREDICTION_FEATURE, QUERIES

REPO = Path(__file__).resolve().parents[1]
OUTPUT_DIRS = (REPO / "k8s" / "dashboards", REPO / "helm" / "modelramp" / "dashboards")
CHART_VALUES = REPO / "helm" / "modelramp" / "values.yaml"
DATASOURCE = DataSourceRef(type_val="prometheus", uid="${datasource}")
# The counts of one look of the analyzer, shown as restart-safe totals over the dashboard's range.
LOOK_COUNTS = ("exposures", "successes", "failures", "backend_errors", "fallbacks")
RANGE = "$__range"
# The constant variables of the limits drawn on panels: name -> the chart value it comes from.
LIMITS = {
    "max_error_rate": "experiment.guardrails.maxErrorRate",
    "max_fallback_rate": "experiment.guardrails.maxFallbackRate",
    "max_p99_latency_seconds": "experiment.guardrails.maxP99LatencyMs / 1000",
    "srm_p_value": "experiment.criteria.srmPValue",
    "decision_stale_seconds": "monitoring.prometheusRule.decisionStaleSeconds",
    "anomaly_share_limit": "monitoring.prometheusRule.anomalyRateThreshold",
}
LIMIT_LEGEND = "limit"  # the legend of every limit series (drawn red and dashed)
# How each decision shows on the "Current decision" stat (Grafana colour names).
DECISION_COLORS = {"hold": "blue", "ramp": "green", "ship": "dark-green", "rollback": "red", "blocked": "orange"}
DECISION_STATS_HEIGHT = 4
DIFFERENCE_TITLE = "Difference model - legacy: confidence sequence (always-valid), harm and non-inferiority bounds"
COVERAGE_TITLE = "Outcomes per exposure per arm"
RELOADS_TITLE = "Rejected config reloads"
REJECTED_OUTCOMES_TITLE = "Rejected outcome reports by reason"
# Reason codes that stop or reverse a ramp (experiments.live.analysis.REASON_CODES), drawn red.
ALARMING_CODES = ("guardrail", "harm", "rolled_back", "sample_ratio_mismatch", "outcome_rate_mismatch", "counter_reset", "missing_outcomes")


def _number(value: float | int) -> str:
    """A limit as Helm's `toString` writes it (Go's %v): 0.05, 0.25, 1800, 1e-05."""
    value = float(value)
    return str(int(value)) if value.is_integer() else repr(value)


def limits(values: dict | None = None) -> dict[str, str]:
    """The limits' constants from chart values (default: helm/modelramp/values.yaml), as the chart renders them."""
    values = values if values is not None else yaml.safe_load(CHART_VALUES.read_text())
    guardrails, criteria = values["experiment"]["guardrails"], values["experiment"]["criteria"]
    rule = values["monitoring"]["prometheusRule"]
    return {"max_error_rate": _number(guardrails["maxErrorRate"]), "max_fallback_rate": _number(guardrails["maxFallbackRate"]),
            "max_p99_latency_seconds": _number(guardrails["maxP99LatencyMs"] / 1000),
            "srm_p_value": _number(criteria["srmPValue"]),
            "decision_stale_seconds": _number(int(rule["decisionStaleSeconds"])),
            "anomaly_share_limit": _number(rule["anomalyRateThreshold"])}


_ROUTER_SELECTOR = re.compile(r"\b(modelramp_(?!decision)\w+)(\{([^}]*)\})?")
NAMESPACE_MATCHER = 'namespace=~"$namespace"'


def scoped(expr: str) -> str:
    """`expr` with every router metric's selector narrowed to the `$namespace` variable (decision gauges left alone)."""
    def narrow(m: re.Match[str]) -> str:
        inner: str | None = m.group(3)
        if inner and "namespace" in inner:
            return str(m.group(0))
        return f"{m.group(1)}{{{NAMESPACE_MATCHER}{', ' + inner if inner else ''}}}"
    return _ROUTER_SELECTOR.sub(narrow, expr)


def q(name: str, window: str = "$__rate_interval") -> str:
    """A named query from experiments.live.promql in Grafana's variables (`$__rate_interval` windows unless told), narrowed to `$namespace`."""
    return scoped(QUERIES[name].render(experiment="$experiment", model="$model", window=window))


def limit(name: str) -> str:
    """The PromQL of a limit: its constant variable as a series (one line across the panel)."""
    assert name in LIMITS, name
    return f"vector(${name})"


def _target(expr: str, legend: str, ref: str, instant: bool = False) -> prometheus.Dataquery:
    t = prometheus.Dataquery().expr(scoped(expr)).legend_format(legend).ref_id(ref).datasource(DATASOURCE)
    return t.instant() if instant else t.range()


def _thresholds(*steps: tuple[float | None, str]) -> dash.ThresholdsConfig:
    return dash.ThresholdsConfig().mode(ThresholdsMode.ABSOLUTE).steps(
        [Threshold(value=v, color=c) for v, c in steps])


def _series(title: str, description: str, pos: tuple[int, int, int, int], targets: list[tuple[str, str]],
            unit: str = "short", limit: float | None = None, step: bool = False, limit_var: str | None = None) -> timeseries.Panel:
    """A time series panel; `limit` draws a fixed red threshold line (1 = a feature's own limit), `limit_var` the
    series of a limit constant (a guardrail from the values), red and dashed."""
    panel = (timeseries.Panel().title(title).description(description).datasource(DATASOURCE)
             .grid_pos(GridPos(h=pos[0], w=pos[1], x=pos[2], y=pos[3])).unit(unit)
             .legend(common_b.VizLegendOptions().display_mode(common.LegendDisplayMode.TABLE)
                     .placement(common.LegendPlacement.BOTTOM).show_legend(True).calcs(["lastNotNull", "max"])))
    if step:
        panel = panel.line_interpolation(common.LineInterpolation.STEP_AFTER)
    if limit is not None:
        panel = (panel.thresholds(_thresholds((None, "green"), (limit, "red")))
                 .thresholds_style(common_b.GraphThresholdsStyleConfig().mode(common.GraphThresholdsStyleMode.LINE)))
    if limit_var is not None:
        targets = [*targets, (globals()["limit"](limit_var), LIMIT_LEGEND)]
        panel = panel.override_by_name(LIMIT_LEGEND, [_fixed_color("red"), _DASHED, DynamicConfigValue(id_val="custom.fillOpacity", value=0)])
    for i, (expr, legend) in enumerate(targets):
        panel = panel.with_target(_target(expr, legend, chr(ord("A") + i)))
    return panel


def _stat(title: str, description: str, pos: tuple[int, int, int, int], expr: str | list[tuple[str, str]],
          legend: str = "", unit: str = "short", limit: float | None = None) -> stat.Panel:
    panel = (stat.Panel().title(title).description(description).datasource(DATASOURCE)
             .grid_pos(GridPos(h=pos[0], w=pos[1], x=pos[2], y=pos[3])).unit(unit)
             .reduce_options(common_b.ReduceDataOptions().calcs(["lastNotNull"]).values(False))
             .graph_mode(common.BigValueGraphMode.NONE))
    for i, (e, leg) in enumerate([(expr, legend)] if isinstance(expr, str) else expr):
        panel = panel.with_target(_target(e, leg, chr(ord("A") + i), instant=True))
    if limit is not None:
        panel = panel.thresholds(_thresholds((None, "green"), (limit, "red")))
    else:
        panel = panel.thresholds(_thresholds((None, "blue")))
    return panel


def _datasource_var() -> dash.DatasourceVariable:
    return dash.DatasourceVariable("datasource").label("Prometheus").type("prometheus")


def _label_var(name: str, metric: str) -> dash.QueryVariable:
    """A variable of the label's values on the metric, in the selected namespace(s)."""
    return (dash.QueryVariable(name).label(name.capitalize()).datasource(DATASOURCE)
            .query(f"label_values({metric}{{{NAMESPACE_MATCHER}}}, {name})").refresh(VariableRefresh.ON_TIME_RANGE_CHANGED)
            .sort(VariableSort.ALPHABETICAL_ASC))


def _namespace_var(metric: str) -> dash.QueryVariable:
    """The Kubernetes namespace (the Prometheus Operator's `namespace` target label); All matches any, or none."""
    return (dash.QueryVariable("namespace").label("Namespace").datasource(DATASOURCE)
            .query(f"label_values({metric}, namespace)").refresh(VariableRefresh.ON_TIME_RANGE_CHANGED)
            .sort(VariableSort.ALPHABETICAL_ASC).include_all(True).all_value(".*")
            .current(VariableOption(selected=True, text="All", value="$__all")))


def _limit_vars(board: dash.Dashboard, names: tuple[str, ...]) -> dash.Dashboard:
    defaults = limits()
    for name in names:
        board = board.with_variable(dash.ConstantVariable(name).value(defaults[name])
                                    .description(f"{LIMITS[name]} (the chart sets it from the release's values)"))
    return board


def _base(uid: str, title: str, description: str, label_metric: str, limit_names: tuple[str, ...] = ()) -> dash.Dashboard:
    board = (dash.Dashboard(title).uid(uid).description(description).tags(["modelramp"])
             .editable().refresh("30s").time("now-6h", "now").timezone("utc")
             .with_variable(_datasource_var()).with_variable(_namespace_var(label_metric)))
    return _limit_vars(board, limit_names)


def _fixed_color(color: str) -> DynamicConfigValue:
    return DynamicConfigValue(id_val="color", value={"mode": "fixed", "fixedColor": color})


_DASHED = DynamicConfigValue(id_val="custom.lineStyle", value={"fill": "dash", "dash": [10, 10]})


def _named_stat(title: str, description: str, pos: tuple[int, int, int, int], expr: str, legend: str,
                colors: dict[str, str], default_color: str) -> stat.Panel:
    """A stat whose single series is named by a label (`{{decision}}`, `{{code}}`): the name is what shows, coloured per name."""
    panel = (_stat(title, description, pos, expr, legend).text_mode(common.BigValueTextMode.NAME)
             .color_mode(common.BigValueColorMode.BACKGROUND).thresholds(_thresholds((None, default_color))))
    for name, color in colors.items():
        panel = panel.override_by_name(name, [_fixed_color(color)])
    return panel


def decisions_panels(y: int) -> tuple[list[stat.Panel | timeseries.Panel], list[stat.Panel | timeseries.Panel], int]:
    """The ramp decision from the `modelramp_decision_*` gauges: (panels above the model share, panels below, next free y).

    The gauges come from `modelramp analyze --serve` or the ramp controller's Pushgateway
    (experiments.live.decision_metrics); every expression is a named query of experiments.live.promql.
    """
    alarming = "|".join(ALARMING_CODES)
    top: list[stat.Panel | timeseries.Panel] = [
        _named_stat("Current decision", f"The latest decision of the analyzer or ramp controller ({', '.join(DECISIONS)}).",
                    (DECISION_STATS_HEIGHT, 4, 0, y), q("decision"), "{{decision}}", DECISION_COLORS, "blue"),
        _named_stat("Decision reason", "The rule that decided (experiments.live.analysis.REASON_CODES); red: a rule that stops or "
                                       "reverses the ramp. The audit log (modelramp ramp --log) has the full sentence.",
                    (DECISION_STATS_HEIGHT, 6, 4, y), q("decision_reason"), "{{code}}", {}, "blue")
        .override_by_regexp(f"^({alarming})$", [_fixed_color("red")]),
        _stat("Stage", "The current ramp stage: the model arm's share (percent) and the stage's index (0 = first).",
              (DECISION_STATS_HEIGHT, 4, 10, y), [(q("decision_stage_percent"), "model %"), (q("decision_stage_index"), "stage index")]),
        _stat("Age of the latest decision", "time() - modelramp_decision_timestamp_seconds, and the age past which "
                                            "ModelrampDecisionStale fires (monitoring.prometheusRule.decisionStaleSeconds): a stalled "
                                            "controller leaves the ramp half done.",
              (DECISION_STATS_HEIGHT, 4, 14, y), [(q("decision_age_seconds"), "age"), (limit("decision_stale_seconds"), "alert after")],
              unit="s"),
        _stat("Guardrails breached", "Each model-arm guardrail as the latest decision judged it: breached rolls the ramp back.",
              (DECISION_STATS_HEIGHT, 6, 18, y), q("decision_guardrail_breached"), "{{guardrail}}", limit=1)
        .mappings([ValueMap(options={"0": ValueMappingResult(text="ok", color="green"),
                                     "1": ValueMappingResult(text="breached", color="red")})]),
    ]
    below_y = y + DECISION_STATS_HEIGHT + 8  # the model share and replica disagreement panels (8 high) sit between
    bottom: list[stat.Panel | timeseries.Panel] = [
        _series("Time in stage against its minimum", "How long the current stage has run at each decision, and the stage's minimum "
                                                     "duration: the ramp moves on only past it.",
                (8, 8, 0, below_y), [(q("decision_stage_duration_seconds"), "in stage"),
                                     (q("decision_stage_min_duration_seconds"), "minimum")], unit="s", step=True),
        _series("Model-arm exposures against the stage minimum", "Model-arm exposures counted in the current stage, and the stage's "
                                                                 "minimum sample: the ramp moves on only past it.",
                (8, 8, 8, below_y), [(q("decision_model_exposures"), "model exposures in stage"),
                                     (q("decision_min_samples"), "minimum")], step=True),
        _series("SRM and outcome-rate p-values", "Always-valid p-values of the sample ratio test (units against the weights) and of "
                                                 "equal outcome rates per exposure; red dashed line: the experiment's threshold "
                                                 "(experiment.criteria.srmPValue), below which the ramp is blocked.",
                (8, 8, 16, below_y), [(q("decision_srm_p_value"), "sample ratio (SRM)"),
                                      (q("decision_outcome_rate_p_value"), "outcome rate")], limit_var="srm_p_value")
        .scale_distribution(common_b.ScaleDistributionConfig().type(common.ScaleDistribution.LOG).log(10)),
        _series(DIFFERENCE_TITLE,
                "The success-rate difference model - legacy the decision rests on, and its confidence sequence (the shaded band "
                "from ci_lower to ci_upper): valid at every look, however often the analyzer or you look, unlike a fixed-horizon "
                "interval, which is only valid once, at a sample size fixed in advance. The one-sided bounds are what the rules "
                "compare: harm_upper (or ci_upper) below 0 rolls back (significantly worse), non_inferiority_lower above minus the "
                "margin ships at the final stage. An unbounded side is absent.",
                (9, 24, 0, below_y + 8), [(q("decision_difference"), "{{bound}}"), ("vector(0)", "no difference")], unit="percentunit")
        .override_by_name("estimate", [DynamicConfigValue(id_val="custom.lineWidth", value=3)])
        .override_by_name("ci_upper", [DynamicConfigValue(id_val="custom.fillBelowTo", value="ci_lower"),
                                       DynamicConfigValue(id_val="custom.fillOpacity", value=20), _fixed_color("blue")])
        .override_by_name("ci_lower", [DynamicConfigValue(id_val="custom.fillOpacity", value=0), _fixed_color("blue")])
        .override_by_regexp("^ci_(lower|upper)$", [_DASHED])
        .override_by_name("no difference", [_fixed_color("text"), DynamicConfigValue(id_val="custom.lineWidth", value=1)]),
    ]
    return top, bottom, below_y + 8 + 9


def experiment_dashboard() -> dash.Dashboard:
    """Traffic share per arm, exposures, success rate per arm, the ramp decision with its confidence sequence, outcome coverage."""
    rate_all = q("request_rate")
    observed = f"({rate_all}) / ignoring (arm) group_left sum({rate_all})"
    weight_model = 'avg(modelramp_traffic_weight{experiment="$experiment", arm="model"})'

    decision_top, decision_bottom, cov_y = decisions_panels(29)
    share_y = 29 + DECISION_STATS_HEIGHT  # the model share and replica disagreement, between the stats and the statistics
    cov_y += 1  # the "Outcome coverage" row itself

    def lag(quantile: float) -> str:
        return (f"histogram_quantile({quantile}, sum by (arm, le) "
                '(rate(modelramp_outcome_lag_seconds_bucket{experiment="$experiment"}[$__rate_interval])))')
    board = (
        _base("modelramp-experiment", "modelramp / experiment",
              "The live experiment: who gets which arm, how many were exposed, how each arm does, and what the ramp controller decided.",
              "modelramp_traffic_weight", ("srm_p_value", "decision_stale_seconds"))
        .with_variable(_label_var("experiment", "modelramp_traffic_weight"))
        .annotation(dash.AnnotationQuery().name("Weight changes").datasource(DATASOURCE).enable(True)
                    .icon_color("orange")
                    .expr(scoped('changes(modelramp_traffic_weight{experiment="$experiment", arm="model"}[$__interval]) > 0')))
        .with_row(dash.Row("Traffic"))
        .with_panel(_series("Traffic share per arm", "Configured weight per arm (what the routers were told) and the observed share of requests "
                                                     "(what they did).",
                            (8, 16, 0, 1), [(q("traffic_weight"), "configured {{arm}}"), (observed, "observed {{arm}}")],
                            unit="percentunit"))
        .with_panel(_stat("Exposures per arm", "Requests served per arm in the dashboard's time range (increase: a router restart does "
                                               "not drop the total).",
                          (8, 8, 16, 1), q("exposures_in_window", RANGE), "{{arm}}"))
        .with_panel(_stat("Counts per arm in the time range", "The counts one look of the analyzer reads, per arm, over the dashboard's "
                                                              "time range (increase, so restart-safe; the analyzer itself counts from the "
                                                              "experiment's start and folds restarts in per replica).",
                          (5, 24, 0, 9), [(q(f"{name}_in_window", RANGE), f"{{{{arm}}}} {name}") for name in LOOK_COUNTS]))
        .with_panel(_stat("Analysis buckets with traffic per arm",
                          "Buckets (of router.analysis_buckets) that got exposures of each arm in the time range: the analyzer's clusters "
                          "when it counts by unit. Every unit hashes to one bucket independently of its arm, so both arms should fill about "
                          "as many.",
                          (4, 24, 0, 14), q("bucket_coverage_in_window", RANGE), "{{arm}}"))
        .with_row(dash.Row("Outcomes"))
        .with_panel(_series("Success rate per arm (time range)",
                            "Reported successes over reported outcomes per arm, over the dashboard's time range up to each point: point "
                            "estimates only. No interval is drawn per arm: a fixed-horizon interval looked at again and again (the peeking "
                            "the analyzer's statistics avoid) is wrong far more often than it says. The always-valid comparison is the "
                            "confidence sequence of the difference, in the Decisions row.",
                            (9, 16, 0, 19), [(q("success_share_in_window", RANGE), "{{arm}}")], unit="percentunit"))
        .with_panel(_series("Success rate per arm (windowed)", "Share of outcomes reported as success over the rate window.",
                            (9, 8, 16, 19), [(q("success_rate"), "{{arm}}")], unit="percentunit"))
        .with_row(dash.Row("Decisions"))
    )
    for panel in decision_top:
        board = board.with_panel(panel)
    board = (
        board
        .with_panel(_series("Decisions: model share over time",
                            "Every ramp-up or rollback the ramp controller applies changes the model arm's weight: each step is a decision (the "
                            "audit log has its reason).",
                            (8, 16, 0, share_y), [(weight_model, "model share")], unit="percentunit", step=True))
        .with_panel(_stat("Replica weight disagreement", "Max minus min weight across router replicas; non-zero only while a ConfigMap change "
                                                         "propagates.",
                          (8, 8, 16, share_y), q("traffic_weight_spread"), "{{arm}}", unit="percentunit", limit=0.0001))
    )
    for panel in decision_bottom:
        board = board.with_panel(panel)
    return (
        board
        .with_row(dash.Row("Outcome coverage"))
        .with_panel(_series(COVERAGE_TITLE,
                            "Outcomes counted (once each, through the outcome ledger) per request served, over the rate window and over the "
                            "dashboard's time range. The arms should track each other: an arm whose line falls towards 0 has stopped getting "
                            "outcomes (a client or pipeline that reports only one arm), and its success rate is then built on a shrinking, "
                            "possibly biased sample.",
                            (8, 12, 0, cov_y), [(q("outcome_coverage"), "{{arm}} (windowed)"),
                                                (q("outcome_coverage", RANGE), "{{arm}} (time range)")],
                            unit="percentunit"))
        .with_panel(_series("Outcome lag per arm",
                            "Time from a prediction to its outcome being recorded (modelramp_outcome_lag_seconds), median and 95th percentile. "
                            "The arms should match: a longer lag on one arm delays its evidence.",
                            (8, 8, 12, cov_y), [(lag(0.5), "{{arm}} p50"), (lag(0.95), "{{arm}} p95")], unit="s"))
        .with_panel(_stat("Outcome ledger", "Replicas whose outcome ledger accepts writes (reports get 503 while it does not) and the "
                                            "outcomes waiting for its next write.",
                          (8, 4, 20, cov_y), [("min(modelramp_outcome_ledger_available)", "available (min over replicas)"),
                                              ("sum(modelramp_outcome_ledger_pending_rows)", "queued outcomes")], limit=None))
    )


def serving_dashboard() -> dash.Dashboard:
    """Request rate, latency percentiles per arm, errors and fallbacks with the experiment's guardrails, router health."""
    p99 = q("p99_latency_seconds")
    by_code = 'sum by (arm, protocol, code) (rate(modelramp_requests_total{experiment="$experiment"}[$__rate_interval]))'
    by_reason = 'sum by (arm, reason) (rate(modelramp_backend_errors_total{experiment="$experiment"}[$__rate_interval]))'
    guardrail = "red dashed line: the experiment's guardrail (experiment.guardrails.{})."
    return (
        _base("modelramp-serving", "modelramp / serving health",
              "Serving health per arm: request rate, latency percentiles, backend errors and fallbacks, with the experiment's guardrails; "
              "the routers' rejected configuration changes and outcome reports.",
              "modelramp_requests_total", ("max_error_rate", "max_fallback_rate", "max_p99_latency_seconds"))
        .with_variable(_label_var("experiment", "modelramp_requests_total"))
        .with_row(dash.Row("Traffic and latency"))
        .with_panel(_series("Request rate per arm", "Requests per second per arm.", (8, 12, 0, 1),
                            [(q("request_rate"), "{{arm}}")], unit="reqps"))
        .with_panel(_series("Requests by status code", "Per arm, protocol and status code.", (8, 12, 12, 1),
                            [(by_code, "{{arm}} {{protocol}} {{code}}")], unit="reqps"))
        .with_panel(_series("Latency percentiles per arm", "p50, p90 and p99 of request duration as seen by the router; "
                                                           + guardrail.format("maxP99LatencyMs"),
                            (9, 24, 0, 9),
                            [(p99.replace("histogram_quantile(0.99,", "histogram_quantile(0.5,"), "p50 {{arm}}"),
                             (p99.replace("histogram_quantile(0.99,", "histogram_quantile(0.9,"), "p90 {{arm}}"),
                             (p99, "p99 {{arm}}")],
                            unit="s", limit_var="max_p99_latency_seconds"))
        .with_row(dash.Row("Errors and fallbacks"))
        .with_panel(_series("Backend error rate per arm", "Share of requests that hit a backend error; " + guardrail.format("maxErrorRate"),
                            (8, 12, 0, 19), [(q("error_rate"), "{{arm}}")], unit="percentunit", limit_var="max_error_rate"))
        .with_panel(_series("Backend errors by reason", "Errors per second by arm and reason (timeout, unavailable, bad answer, ...).",
                            (8, 12, 12, 19), [(by_reason, "{{arm}} {{reason}}")], unit="reqps"))
        .with_panel(_series("Fallback rate per arm", "Share of requests answered by the legacy fallback; " + guardrail.format("maxFallbackRate"),
                            (8, 12, 0, 27), [(q("fallback_rate"), "{{arm}}")], unit="percentunit", limit_var="max_fallback_rate"))
        .with_panel(_stat("Model error rate (time range)", "Over the dashboard's time range (restart-safe), beside its guardrail.",
                          (4, 4, 12, 27), [(q("model_error_rate_in_window", RANGE), "model"), (limit("max_error_rate"), "guardrail")],
                          unit="percentunit"))
        .with_panel(_stat("Model fallback rate (time range)", "Over the dashboard's time range (restart-safe), beside its guardrail.",
                          (4, 4, 16, 27), [(q("model_fallback_rate_in_window", RANGE), "model"), (limit("max_fallback_rate"), "guardrail")],
                          unit="percentunit"))
        .with_panel(_stat("Model p99 latency (time range)", "Over the dashboard's time range (restart-safe), beside its guardrail.",
                          (4, 4, 20, 27), [(q("model_p99_latency_seconds_in_window", RANGE), "model"),
                                           (limit("max_p99_latency_seconds"), "guardrail")], unit="s"))
        .with_panel(_series("Circuit breaker open", "1 while the router's circuit breaker keeps the arm's traffic on the legacy fallback.",
                            (4, 12, 12, 31), [('max by (arm) (modelramp_circuit_open{experiment="$experiment"})', "{{arm}}")],
                            step=True))
        .with_row(dash.Row("Router configuration and outcome reports (every experiment of the namespace)"))
        .with_panel(_stat(RELOADS_TITLE, "Configuration changes the routers refused in the time range, by source (file: the experiment "
                                         "ConfigMap; api: PUT /v1/experiments/{name}/weights). The configuration in force stays, so the "
                                         "weights you or the ramp controller wrote are not the ones served: see the routers' logs. "
                                         "These counters carry no experiment label.",
                          (8, 6, 0, 40), q("config_reloads_rejected", RANGE), "{{source}}", limit=1))
        .with_panel(_series(REJECTED_OUTCOMES_TITLE, "Outcome reports the routers refused per second, by reason (forged or malformed id, "
                                                     "expired, another experiment or salt, duplicate, ledger unavailable): outcomes that "
                                                     "never reach the analysis. A steady reason points at a client or pipeline to fix; "
                                                     "they carry no experiment label.",
                            (8, 12, 6, 40), [(q("outcomes_rejected_rate"), "{{reason}}")], unit="reqps"))
        .with_panel(_stat("Rejected outcomes in the time range", "Outcome reports refused in the time range, by reason.",
                          (8, 6, 18, 40), q("outcomes_rejected", RANGE), "{{reason}}"))
    )


def skew_dashboard() -> dash.Dashboard:
    """Drift per feature against its own limit, the routers' verdicts, prediction drift, schema anomalies.

    Limits differ per feature (skew.features), so drift is drawn relative to each feature's limit
    as the routers export it (1 = at the limit) rather than against one fixed line.
    """
    def over_limit(statistic: str, features: str) -> str:
        sel = f'model="$model", statistic="{statistic}", feature{features}'
        return f"max by (feature) (modelramp_feature_drift{{{sel}}} / modelramp_feature_drift_threshold{{{sel}}})"

    prediction = (f'max by (statistic) (modelramp_feature_drift{{model="$model", feature="{PREDICTION_FEATURE}"}} / '
                  f'modelramp_feature_drift_threshold{{model="$model", feature="{PREDICTION_FEATURE}"}})')
    anomalies_total = q("feature_anomalies_window", RANGE)
    board = (
        _base("modelramp-skew", "modelramp / training-serving skew",
              "Live features against the training baseline: drift per feature against its own limit, the routers' verdicts, drift of the model's "
              "score, and schema anomalies.", "modelramp_feature_drift", ("anomaly_share_limit",))
        .with_variable(_label_var("model", "modelramp_feature_drift"))
        .with_row(dash.Row("Drift per feature"))
        .with_panel(_series("Drift per feature (all statistics)", "Every drift statistic of every feature (chi2_pvalue included), once the window "
                                                                  "holds skew.min_sample values.",
                            (9, 16, 0, 1), [(q("feature_drift"), "{{feature}} {{statistic}}")]))
        .with_panel(_series("Features judged drifted", "1 while some router judges the feature drifted (a statistic over the feature's limit, enough "
                                                       "values, a significant chi-square test): what the drift alerts fire on.",
                            (9, 8, 16, 1), [(q("feature_drifted"), "{{feature}}")], limit=1, step=True))
    )
    for i, statistic in enumerate(("psi", "js_distance", "linf")):
        board = board.with_panel(_series(f"{statistic} relative to each feature's limit",
                                         f"{statistic} of each feature divided by that feature's limit (skew.thresholds, skew.features); red line: "
                                         "the limit.",
                                         (8, 8, 8 * i, 10), [(over_limit(statistic, f'!="{PREDICTION_FEATURE}"'), "{{feature}}")], limit=1))
    return (
        board
        .with_row(dash.Row("Prediction drift and anomalies"))
        .with_panel(_series("Prediction drift", "Drift of the model's output score against its validation distribution, relative to its limit; red "
                                                "line: the limit.",
                            (8, 8, 0, 19), [(prediction, "{{statistic}}")], limit=1))
        .with_panel(_series("Anomaly rate by feature and kind",
                            "Missing, unexpected type, out of training range, unseen category: values per second.",
                            (8, 8, 8, 19), [(q("feature_anomaly_rate"), "{{feature}} {{kind}}")], unit="reqps"))
        .with_panel(_series("Anomalous share of sketched values", "Anomalous values over the feature's sketched values, by kind: what the anomaly "
                                                                  "alert judges; red dashed line: its threshold "
                                                                  "(monitoring.prometheusRule.anomalyRateThreshold).",
                            (8, 8, 16, 19), [(q("feature_anomaly_share"), "{{feature}} {{kind}}")], unit="percentunit",
                            limit_var="anomaly_share_limit"))
        .with_panel(_stat("Anomalies in range", "Anomalous values in the dashboard's time range, by feature and kind.",
                          (6, 24, 0, 27), anomalies_total, "{{feature}} {{kind}}"))
    )


DASHBOARDS: dict[str, Callable[[], dash.Dashboard]] = {
    "modelramp-experiment": experiment_dashboard,
    "modelramp-serving": serving_dashboard,
    "modelramp-skew": skew_dashboard,
}


def render(name: str, values: dict | None = None) -> str:
    """The dashboard's JSON text exactly as committed (sorted keys, two-space indent, final newline).

    `values` (chart values, e.g. a values file's) sets the limits' constants as the chart does; by
    default they are helm/modelramp/values.yaml's.
    """
    board = json.loads(json.dumps(DASHBOARDS[name]().build(), cls=JSONEncoder))
    for number, panel in enumerate(board["panels"], start=1):
        panel["id"] = number  # stable ids: Grafana links and alerts refer to panels by id
    if values is not None:
        set_limits(board, limits(values))
    return json.dumps(board, indent=2, sort_keys=True) + "\n"


def set_limits(board: dict, constants: dict[str, str]) -> dict:
    """Set the board's limit constants (what templates/dashboards-configmaps.yaml does with the release's values)."""
    for variable in board["templating"]["list"]:
        if variable["type"] == "constant" and variable["name"] in constants:
            variable["query"] = constants[variable["name"]]
    return board


def merged_values_from(over: dict) -> dict:
    """The chart's default values with `over` on top (maps merged key by key, as Helm does)."""
    def merge(base: dict, over: dict) -> dict:
        out = dict(base)
        for key, value in over.items():
            out[key] = merge(base[key], value) if isinstance(value, dict) and isinstance(base.get(key), dict) else value
        return out
    return merge(yaml.safe_load(CHART_VALUES.read_text()), over)


def merged_values(path: Path) -> dict:
    """The chart's default values with a values file over them."""
    return merged_values_from(yaml.safe_load(path.read_text()) or {})


def panel_queries(board: dict) -> Iterator[tuple[str, str]]:
    """(panel title, expression) of every target in a dashboard's JSON, rows included."""
    for panel in board.get("panels", []):
        for inner in [panel, *panel.get("panels", [])]:
            for target in inner.get("targets", []):
                yield inner.get("title", ""), target["expr"]


def write(dirs: tuple[Path, ...] = OUTPUT_DIRS, values: dict | None = None) -> list[Path]:
    """Write every dashboard into each folder; returns the paths written."""
    written = []
    for folder in dirs:
        folder.mkdir(parents=True, exist_ok=True)
        for name in DASHBOARDS:
            path = folder / f"{name}.json"
            path.write_text(render(name, values))
            written.append(path)
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if a committed dashboard differs from the builder")
    parser.add_argument("--values", type=Path, help="a chart values file whose limits (guardrails, thresholds) the dashboards draw")
    parser.add_argument("--out", type=Path, help="write here instead of the committed folders (with --values)")
    args = parser.parse_args(argv)
    if args.values is not None or args.out is not None:
        if args.values is None or args.out is None or args.check:
            parser.error("--values and --out go together, without --check (the committed JSON has the chart's defaults)")
        for path in write((args.out,), merged_values(args.values)):
            print(path)
        return 0
    if args.check:
        stale = [str(folder / f"{n}.json") for folder in OUTPUT_DIRS for n in DASHBOARDS
                 if not (folder / f"{n}.json").exists() or (folder / f"{n}.json").read_text() != render(n)]
        for name in stale:
            print(f"stale: {name} (run python -m k8s.dashboards)", file=sys.stderr)
        return 1 if stale else 0
    for path in write():
        print(path.relative_to(REPO))
    return 0


if __name__ == "__main__":
    sys.exit(main())
