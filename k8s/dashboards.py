"""Grafana dashboards (experiment, serving health, skew) built in code from the named PromQL queries.

Every panel that shows something the analyzer also asks for takes its expression from
`experiments.live.promql`, so a dashboard and a decision never disagree about what "exposures" or
"error rate" means. Dashboards are built with grafana-foundation-sdk (the Grafana 11.6 build) and
written as JSON to `k8s/dashboards/` (kustomize) and `helm/modelramp/dashboards/` (the chart):

    python -m k8s.dashboards          # rewrite both folders
    python -m k8s.dashboards --check  # exit 1 if the committed JSON is stale
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

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
    VariableRefresh,
    VariableSort,
)

from experiments.config import CriteriaSpec, GuardrailsSpec
from experiments.live.analysis import DECISIONS
from experiments.live.promql import PREDICTION_FEATURE, QUERIES

REPO = Path(__file__).resolve().parents[1]
OUTPUT_DIRS = (REPO / "k8s" / "dashboards", REPO / "helm" / "modelramp" / "dashboards")
DATASOURCE = DataSourceRef(type_val="prometheus", uid="${datasource}")
LOOK_COUNTS = ("exposures", "successes", "failures", "backend_errors", "fallbacks")  # one look of the analyzer
Z95 = 1.959964  # two-sided 95% normal quantile
# The chart's default monitoring.prometheusRule.decisionStaleSeconds: ModelrampDecisionStale fires past it.
DECISION_STALE_SECONDS = 1800
# How each decision shows on the "Current decision" stat (Grafana colour names).
DECISION_COLORS = {"hold": "blue", "ramp": "green", "ship": "dark-green", "rollback": "red", "blocked": "orange"}
# Reason codes that stop or reverse a ramp (experiments.live.analysis.REASON_CODES), drawn red.
DECISION_STATS_HEIGHT = 4
ALARMING_CODES = ("guardrail", "harm", "sample_ratio_mismatch", "outcome_rate_mismatch", "counter_reset", "missing_outcomes")


def q(name: str) -> str:
    """A named query from experiments.live.promql, in Grafana's variables (`$__rate_interval` windows)."""
    return QUERIES[name].render(experiment="$experiment", model="$model", window="$__rate_interval")


def _target(expr: str, legend: str, ref: str, instant: bool = False) -> prometheus.Dataquery:
    t = prometheus.Dataquery().expr(expr).legend_format(legend).ref_id(ref).datasource(DATASOURCE)
    return t.instant() if instant else t.range()


def _thresholds(*steps: tuple[float | None, str]) -> dash.ThresholdsConfig:
    return dash.ThresholdsConfig().mode(ThresholdsMode.ABSOLUTE).steps(
        [Threshold(value=v, color=c) for v, c in steps])


def _series(title: str, description: str, pos: tuple[int, int, int, int], targets: list[tuple[str, str]],
            unit: str = "short", limit: float | None = None, step: bool = False) -> timeseries.Panel:
    """A time series panel; `limit` draws a red threshold line (a guardrail or drift threshold)."""
    panel = (timeseries.Panel().title(title).description(description).datasource(DATASOURCE)
             .grid_pos(GridPos(h=pos[0], w=pos[1], x=pos[2], y=pos[3])).unit(unit)
             .legend(common_b.VizLegendOptions().display_mode(common.LegendDisplayMode.TABLE)
                     .placement(common.LegendPlacement.BOTTOM).show_legend(True).calcs(["lastNotNull", "max"])))
    if step:
        panel = panel.line_interpolation(common.LineInterpolation.STEP_AFTER)
    if limit is not None:
        panel = (panel.thresholds(_thresholds((None, "green"), (limit, "red")))
                 .thresholds_style(common_b.GraphThresholdsStyleConfig().mode(common.GraphThresholdsStyleMode.LINE)))
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
    return (dash.QueryVariable(name).label(name.capitalize()).datasource(DATASOURCE)
            .query(f"label_values({metric}, {name})").refresh(VariableRefresh.ON_TIME_RANGE_CHANGED)
            .sort(VariableSort.ALPHABETICAL_ASC))


def _base(uid: str, title: str, description: str) -> dash.Dashboard:
    return (dash.Dashboard(title).uid(uid).description(description).tags(["modelramp"])
            .editable().refresh("30s").time("now-6h", "now").timezone("utc")
            .with_variable(_datasource_var()))


def wilson(successes: str, trials: str, side: str) -> str:
    """PromQL for the Wilson 95% score interval bound (`side` is "+" or "-") of successes/trials."""
    p = f"({successes} / {trials})"
    z2 = f"{Z95 ** 2:.6f}"
    centre = f"({p} + {z2} / (2 * {trials}))"
    half = f"{Z95} * sqrt({p} * (1 - {p}) / {trials} + {z2} / (4 * {trials} ^ 2))"
    return f"({centre} {side} {half}) / (1 + {z2} / {trials})"


def _fixed_color(color: str) -> DynamicConfigValue:
    return DynamicConfigValue(id_val="color", value={"mode": "fixed", "fixedColor": color})


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
    srm_threshold = CriteriaSpec().srm_p_value
    top: list[stat.Panel | timeseries.Panel] = [
        _named_stat("Current decision", f"The latest decision of the analyzer or ramp controller ({', '.join(DECISIONS)}).",
                    (DECISION_STATS_HEIGHT, 4, 0, y), q("decision"), "{{decision}}", DECISION_COLORS, "blue"),
        _named_stat("Decision reason", "The rule that decided (experiments.live.analysis.REASON_CODES); red: a rule that stops or "
                                       "reverses the ramp. The audit log (modelramp ramp --log) has the full sentence.",
                    (DECISION_STATS_HEIGHT, 6, 4, y), q("decision_reason"), "{{code}}", {}, "blue")
        .override_by_regexp(f"^({alarming})$", [_fixed_color("red")]),
        _stat("Stage", "The current ramp stage: the model arm's share (percent) and the stage's index (0 = first).",
              (DECISION_STATS_HEIGHT, 4, 10, y), [(q("decision_stage_percent"), "model %"), (q("decision_stage_index"), "stage index")]),
        _stat("Age of the latest decision", f"time() - modelramp_decision_timestamp_seconds: red past {DECISION_STALE_SECONDS} s, where "
                                            "ModelrampDecisionStale fires by default (a stalled controller leaves the ramp half done).",
              (DECISION_STATS_HEIGHT, 4, 14, y), q("decision_age_seconds"), "age", unit="s", limit=DECISION_STALE_SECONDS),
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
                                                 "equal outcome rates per exposure; red line: the default threshold "
                                                 f"(criteria.srm_p_value, {srm_threshold:g}), below which the ramp is blocked.",
                (8, 8, 16, below_y), [(q("decision_srm_p_value"), "sample ratio (SRM)"),
                                      (q("decision_outcome_rate_p_value"), "outcome rate")], limit=srm_threshold)
        .scale_distribution(common_b.ScaleDistributionConfig().type(common.ScaleDistribution.LOG).log(10)),
        _series("Difference model - legacy: estimate, always-valid CI, harm and non-inferiority bounds",
                "The success-rate difference the decision rests on, with its always-valid confidence sequence (ci_lower, ci_upper) and "
                "the one-sided bounds the rules compare: harm_upper (or ci_upper) below 0 rolls back (significantly worse), non_inferiority_lower "
                "above minus the margin ships at the final stage. An unbounded side is absent.",
                (9, 24, 0, below_y + 8), [(q("decision_difference"), "{{bound}}")], unit="percentunit")
        .override_by_name("estimate", [DynamicConfigValue(id_val="custom.lineWidth", value=3)])
        .override_by_regexp("^ci_(lower|upper)$", [DynamicConfigValue(id_val="custom.lineStyle", value={"fill": "dash", "dash": [10, 10]})]),
    ]
    return top, bottom, below_y + 8 + 9


def experiment_dashboard() -> dash.Dashboard:
    """Traffic share per arm, exposures, success rate per arm with intervals, the ramp decision and what it rests on."""
    rate_all = q("request_rate")
    observed = f"({rate_all}) / ignoring (arm) group_left sum({rate_all})"
    trials = 'sum by (arm) (modelramp_outcomes_total{experiment="$experiment"})'
    success = f"({q('successes')}) / {trials}"
    weight_model = 'avg(modelramp_traffic_weight{experiment="$experiment", arm="model"})'
    outcome_rate = 'sum by (arm) (rate(modelramp_outcomes_total{experiment="$experiment"}[$__rate_interval]))'
    request_rate = 'sum by (arm) (rate(modelramp_requests_total{experiment="$experiment"}[$__rate_interval]))'
    requests = 'sum by (arm) (modelramp_requests_total{experiment="$experiment"})'

    decision_top, decision_bottom, cov_y = decisions_panels(29)
    share_y = 29 + DECISION_STATS_HEIGHT  # the model share and replica disagreement, between the stats and the statistics
    cov_y += 1  # the "Outcome coverage" row itself

    def lag(quantile: float) -> str:
        return (f"histogram_quantile({quantile}, sum by (arm, le) "
                '(rate(modelramp_outcome_lag_seconds_bucket{experiment="$experiment"}[$__rate_interval])))')
    board = (
        _base("modelramp-experiment", "modelramp / experiment",
              "The live experiment: who gets which arm, how many were exposed, how each arm does, and what the ramp controller decided.")
        .with_variable(_label_var("experiment", "modelramp_traffic_weight"))
        .annotation(dash.AnnotationQuery().name("Weight changes").datasource(DATASOURCE).enable(True)
                    .icon_color("orange")
                    .expr('changes(modelramp_traffic_weight{experiment="$experiment", arm="model"}[$__interval]) > 0'))
        .with_row(dash.Row("Traffic"))
        .with_panel(_series("Traffic share per arm", "Configured weight per arm (what the routers were told) and the observed share of requests "
                                                     "(what they did).",
                            (8, 16, 0, 1), [(q("traffic_weight"), "configured {{arm}}"), (observed, "observed {{arm}}")],
                            unit="percentunit"))
        .with_panel(_stat("Exposures per arm", "Requests served per arm since the routers started: the analyzer's exposures.",
                          (8, 8, 16, 1), q("exposures"), "{{arm}}"))
        .with_panel(_stat("What the analyzer reads (per arm, since the routers started)",
                          "The cumulative counts of one look of the analyzer, from the same named queries.",
                          (5, 24, 0, 9), [(q(name), f"{{{{arm}}}} {name}") for name in LOOK_COUNTS]))
        .with_panel(_stat("Analysis buckets with traffic per arm",
                          "Buckets (of router.analysis_buckets) holding exposures of each arm: the analyzer's clusters when it counts by unit. "
                          "Every unit hashes to one bucket independently of its arm, so both arms should fill about as many.",
                          (4, 24, 0, 14), q("bucket_coverage"), "{{arm}}"))
        .with_row(dash.Row("Outcomes"))
        .with_panel(_series("Success rate per arm (95% Wilson interval)",
                            "Reported successes over reported outcomes since the routers started (the analyzer's counts), with the 95% Wilson score "
                            "interval of each arm.",
                            (9, 16, 0, 19), [(success, "{{arm}}"),
                                             (wilson(q("successes"), trials, "-"), "{{arm}} lower 95%"),
                                             (wilson(q("successes"), trials, "+"), "{{arm}} upper 95%")],
                            unit="percentunit"))
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
        .with_panel(_series("Outcomes per exposure per arm",
                            "Outcomes counted (once each, through the outcome ledger) per request served, windowed and since the routers "
                            "started. The arms should track each other: an arm whose line falls towards 0 has stopped getting outcomes "
                            "(a client or pipeline that reports only one arm), and its success rate is then built on a shrinking, "
                            "possibly biased sample.",
                            (8, 12, 0, cov_y), [(f"{outcome_rate} / {request_rate}", "{{arm}} (windowed)"),
                                             (f"{trials} / {requests}", "{{arm}} (since start)")],
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


def serving_dashboard(guardrails: GuardrailsSpec | None = None) -> dash.Dashboard:
    """Request rate, latency percentiles per arm, errors and fallbacks, with the guardrails drawn in (default: the defaults')."""
    guardrails = guardrails if guardrails is not None else GuardrailsSpec()
    p99 = q("p99_latency_seconds")
    by_code = 'sum by (arm, protocol, code) (rate(modelramp_requests_total{experiment="$experiment"}[$__rate_interval]))'
    by_reason = 'sum by (arm, reason) (rate(modelramp_backend_errors_total{experiment="$experiment"}[$__rate_interval]))'
    return (
        _base("modelramp-serving", "modelramp / serving health",
              "Serving health per arm: request rate, latency percentiles, backend errors and fallbacks, with the experiment's guardrails.")
        .with_variable(_label_var("experiment", "modelramp_requests_total"))
        .with_row(dash.Row("Traffic and latency"))
        .with_panel(_series("Request rate per arm", "Requests per second per arm.", (8, 12, 0, 1),
                            [(q("request_rate"), "{{arm}}")], unit="reqps"))
        .with_panel(_series("Requests by status code", "Per arm, protocol and status code.", (8, 12, 12, 1),
                            [(by_code, "{{arm}} {{protocol}} {{code}}")], unit="reqps"))
        .with_panel(_series("Latency percentiles per arm", "p50, p90 and p99 of request duration as seen by the router; red line: the p99 guardrail.",
                            (9, 24, 0, 9),
                            [(p99.replace("histogram_quantile(0.99,", "histogram_quantile(0.5,"), "p50 {{arm}}"),
                             (p99.replace("histogram_quantile(0.99,", "histogram_quantile(0.9,"), "p90 {{arm}}"),
                             (p99, "p99 {{arm}}")],
                            unit="s", limit=guardrails.max_p99_latency_ms / 1000))
        .with_row(dash.Row("Errors and fallbacks"))
        .with_panel(_series("Backend error rate per arm", "Share of requests that hit a backend error; red line: the error-rate guardrail.",
                            (8, 12, 0, 19), [(q("error_rate"), "{{arm}}")], unit="percentunit", limit=guardrails.max_error_rate))
        .with_panel(_series("Backend errors by reason", "Errors per second by arm and reason (timeout, unavailable, bad answer, ...).",
                            (8, 12, 12, 19), [(by_reason, "{{arm}} {{reason}}")], unit="reqps"))
        .with_panel(_series("Fallback rate per arm", "Share of requests answered by the legacy fallback; red line: the fallback guardrail.",
                            (8, 12, 0, 27), [(q("fallback_rate"), "{{arm}}")], unit="percentunit", limit=guardrails.max_fallback_rate))
        .with_panel(_stat("Model error rate (since start)", "What the analyzer checks against the guardrail.", (4, 4, 12, 27),
                          q("model_error_rate"), "model", unit="percentunit", limit=guardrails.max_error_rate))
        .with_panel(_stat("Model fallback rate (since start)", "What the analyzer checks against the guardrail.", (4, 4, 16, 27),
                          q("model_fallback_rate"), "model", unit="percentunit", limit=guardrails.max_fallback_rate))
        .with_panel(_stat("Model p99 latency (since start)", "What the analyzer checks against the guardrail.", (4, 4, 20, 27),
                          q("model_p99_latency_seconds"), "model", unit="s", limit=guardrails.max_p99_latency_ms / 1000))
        .with_panel(_series("Circuit breaker open", "1 while the router's circuit breaker keeps the arm's traffic on the legacy fallback.",
                            (4, 12, 12, 31), [('max by (arm) (modelramp_circuit_open{experiment="$experiment"})', "{{arm}}")],
                            step=True))
    )


def skew_dashboard(anomaly_share_limit: float = 0.01) -> dash.Dashboard:
    """Drift per feature against its own limit, the routers' verdicts, prediction drift, schema anomalies.

    Limits differ per feature (skew.features), so drift is drawn relative to each feature's limit
    as the routers export it (1 = at the limit) rather than against one fixed line.
    """
    def over_limit(statistic: str, features: str) -> str:
        sel = f'model="$model", statistic="{statistic}", feature{features}'
        return f"max by (feature) (modelramp_feature_drift{{{sel}}} / modelramp_feature_drift_threshold{{{sel}}})"

    prediction = (f'max by (statistic) (modelramp_feature_drift{{model="$model", feature="{PREDICTION_FEATURE}"}} / '
                  f'modelramp_feature_drift_threshold{{model="$model", feature="{PREDICTION_FEATURE}"}})')
    anomalies_total = 'sum by (feature, kind) (increase(modelramp_feature_anomalies_total{model="$model"}[$__range]))'
    board = (
        _base("modelramp-skew", "modelramp / training-serving skew",
              "Live features against the training baseline: drift per feature against its own limit, the routers' verdicts, drift of the model's "
              "score, and schema anomalies.")
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
                                                                  "alert judges; red line: its default threshold.",
                            (8, 8, 16, 19), [(q("feature_anomaly_share"), "{{feature}} {{kind}}")], unit="percentunit", limit=anomaly_share_limit))
        .with_panel(_stat("Anomalies in range", "Anomalous values in the dashboard's time range, by feature and kind.",
                          (6, 24, 0, 27), anomalies_total, "{{feature}} {{kind}}"))
    )


DASHBOARDS: dict[str, Callable[[], dash.Dashboard]] = {
    "modelramp-experiment": experiment_dashboard,
    "modelramp-serving": serving_dashboard,
    "modelramp-skew": skew_dashboard,
}


def render(name: str) -> str:
    """The dashboard's JSON text exactly as committed (sorted keys, two-space indent, final newline)."""
    board = json.loads(json.dumps(DASHBOARDS[name]().build(), cls=JSONEncoder))
    for number, panel in enumerate(board["panels"], start=1):
        panel["id"] = number  # stable ids: Grafana links and alerts refer to panels by id
    return json.dumps(board, indent=2, sort_keys=True) + "\n"


def panel_queries(board: dict) -> Iterator[tuple[str, str]]:
    """(panel title, expression) of every target in a dashboard's JSON, rows included."""
    for panel in board.get("panels", []):
        for inner in [panel, *panel.get("panels", [])]:
            for target in inner.get("targets", []):
                yield inner.get("title", ""), target["expr"]


def write(dirs: tuple[Path, ...] = OUTPUT_DIRS) -> list[Path]:
    """Write every dashboard into each folder; returns the paths written."""
    written = []
    for folder in dirs:
        folder.mkdir(parents=True, exist_ok=True)
        for name in DASHBOARDS:
            path = folder / f"{name}.json"
            path.write_text(render(name))
            written.append(path)
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if a committed dashboard differs from the builder")
    args = parser.parse_args(argv)
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
