"""Every PromQL query modelramp asks, named, in one place: the analyzer, dashboards and alerts share these names.

"What to ask" lives here; "how to ask" lives in `experiments.live.sources.prometheus`. Templates use
Grafana's variable syntax (`$experiment`, `$window`, `$model`), so a dashboard can take an
expression as it is, while Python renders it with `render(name, experiment=...)`.

Three families:

- cumulative counts since the routers started (no range vector): what the analyzer reads at each
  look. The history stores cumulative counts, and the router-metrics source computes exactly the
  same numbers from a scrape, so a live look and a replayed one agree;
- windowed rates (`$window`, e.g. `5m` in alert rules, `$__rate_interval` in Grafana): what
  people watch and alerts fire on;
- the ramp decision's gauges (`modelramp_decision_*`, experiments.live.decision_metrics): what the
  experiment dashboard's "Decisions" row and the `modelramp.decisions` alerts show.
"""

from __future__ import annotations

from dataclasses import dataclass
from string import Template

from router.skew.sketches import PREDICTION as PREDICTION_FEATURE  # the `feature` label of the model's score

MODEL_ARM = "model"


@dataclass(frozen=True)
class Query:
    """One named PromQL expression; `by_arm` says whether the result has one series per arm."""

    name: str
    template: str
    help: str
    by_arm: bool = True

    def render(self, **variables: str) -> str:
        """The expression with `$experiment`, `$window`, `$model` filled in (label values escaped)."""
        escaped = {k: _escape(v) for k, v in variables.items()}
        try:
            return Template(self.template).substitute(escaped)
        except KeyError as err:
            raise ValueError(f"query {self.name!r} needs the variable {err.args[0]!r}") from None


def _escape(value: str) -> str:
    # Label values sit inside double quotes in every template.
    return str(value).replace("\\", "\\\\").replace('"', '\\"')


_EXP = 'experiment="$experiment"'
_MODEL = f'{_EXP}, arm="{MODEL_ARM}"'

_QUERIES = [
    # Cumulative counts per arm: the analyzer's input (one look).
    Query("exposures", f"sum by (arm) (modelramp_requests_total{{{_EXP}}})",
          "Requests served per arm (every status code): units exposed to the arm."),
    Query("successes", f'sum by (arm) (modelramp_outcomes_total{{{_EXP}, outcome="success"}})',
          "Outcomes reported as success per arm."),
    Query("failures", f'sum by (arm) (modelramp_outcomes_total{{{_EXP}, outcome="failure"}})',
          "Outcomes reported as failure per arm."),
    # The same per analysis bucket (router/buckets.py): 2 x B series each, what the analyzer counts units by.
    Query("bucket_exposures", f"sum by (arm, bucket) (modelramp_bucket_exposures_total{{{_EXP}}})",
          "Requests served per arm and analysis bucket (sums over buckets to `exposures`).", by_arm=False),
    Query("bucket_successes", f'sum by (arm, bucket) (modelramp_bucket_outcomes_total{{{_EXP}, outcome="success"}})',
          "Outcomes reported as success per arm and analysis bucket.", by_arm=False),
    Query("bucket_failures", f'sum by (arm, bucket) (modelramp_bucket_outcomes_total{{{_EXP}, outcome="failure"}})',
          "Outcomes reported as failure per arm and analysis bucket.", by_arm=False),
    Query("bucket_coverage", f"count by (arm) (sum by (arm, bucket) (modelramp_bucket_exposures_total{{{_EXP}}}) > 0)",
          "Analysis buckets holding exposures, per arm (the clusters of the by-unit analysis)."),
    Query("backend_errors", f"sum by (arm) (modelramp_backend_errors_total{{{_EXP}}})",
          "Backend errors per arm (timeouts, refused connections, bad answers)."),
    Query("fallbacks", f"sum by (arm) (modelramp_fallbacks_total{{{_EXP}}})",
          "Requests of an arm answered by the legacy fallback instead."),
    Query("traffic_weight", f"avg by (arm) (modelramp_traffic_weight{{{_EXP}}})",
          "Configured share per arm as the routers see it (averaged over replicas)."),
    Query("traffic_weight_spread", f"max by (arm) (modelramp_traffic_weight{{{_EXP}}}) - min by (arm) (modelramp_traffic_weight{{{_EXP}}})",
          "Disagreement between router replicas on the weights; non-zero while a reload propagates."),
    # The analyzer's look: every raw counter series of the experiment in one instant query, so all
    # counts share one evaluation time; the source sums them per (job, instance, arm) itself and
    # folds router restarts in per instance, as Prometheus's increase() does.
    Query("look_counter_series",
          '{__name__=~"modelramp_(requests|outcomes|backend_errors|fallbacks|bucket_exposures|bucket_outcomes)_total", '
          'experiment="$experiment"}',
          "Raw cumulative counter series of one experiment, one per router replica and label set (6B + a few per replica).",
          by_arm=False),
    # When each replica's counters were created (prometheus_client's `_created` samples): it moves
    # forward when a router restarts, even if the new counts already exceed the old ones.
    Query("look_counter_created",
          'min by (job, instance) ({__name__=~"modelramp_(requests|outcomes|backend_errors|fallbacks)_created", experiment="$experiment"})',
          "Earliest creation time of each replica's counter series: a router restart moves it forward.", by_arm=False),
    Query("cumulative_p99_latency_seconds",
          f"histogram_quantile(0.99, sum by (arm, le) (modelramp_request_duration_seconds_bucket{{{_EXP}}}))",
          "99th percentile request duration per arm since the routers started (the analyzer's guardrail)."),
    # Guardrails of the model arm since the start, as single numbers for panels and alerts.
    Query("model_error_rate", f"sum(modelramp_backend_errors_total{{{_MODEL}}}) / sum(modelramp_requests_total{{{_MODEL}}})",
          "Share of model-arm requests that hit a backend error, since the routers started.", by_arm=False),
    Query("model_fallback_rate", f"sum(modelramp_fallbacks_total{{{_MODEL}}}) / sum(modelramp_requests_total{{{_MODEL}}})",
          "Share of model-arm requests answered by the fallback, since the routers started.", by_arm=False),
    Query("model_p99_latency_seconds",
          f"histogram_quantile(0.99, sum by (le) (modelramp_request_duration_seconds_bucket{{{_MODEL}}}))",
          "99th percentile of model-arm request duration, since the routers started.", by_arm=False),
    # Windowed views per arm: dashboards and alert rules.
    Query("request_rate", f"sum by (arm) (rate(modelramp_requests_total{{{_EXP}}}[$window]))",
          "Requests per second per arm."),
    Query("error_rate", f"sum by (arm) (rate(modelramp_backend_errors_total{{{_EXP}}}[$window]))"
                        f" / sum by (arm) (rate(modelramp_requests_total{{{_EXP}}}[$window]))",
          "Share of requests per arm that hit a backend error over the window."),
    Query("fallback_rate", f"sum by (arm) (rate(modelramp_fallbacks_total{{{_EXP}}}[$window]))"
                           f" / sum by (arm) (rate(modelramp_requests_total{{{_EXP}}}[$window]))",
          "Share of requests per arm answered by the fallback over the window."),
    Query("success_rate", f'sum by (arm) (rate(modelramp_outcomes_total{{{_EXP}, outcome="success"}}[$window]))'
                          f" / sum by (arm) (rate(modelramp_outcomes_total{{{_EXP}}}[$window]))",
          "Share of reported outcomes that are successes, per arm, over the window."),
    Query("p99_latency_seconds", f"histogram_quantile(0.99, sum by (arm, le) (rate(modelramp_request_duration_seconds_bucket{{{_EXP}}}[$window])))",
          "99th percentile request duration per arm over the window."),
    # Totals over a window (`$window`: `$__range` on dashboards): restart-safe, since increase()
    # folds in a router's counters starting again from 0, where the raw sums above drop.
    Query("exposures_in_window", f"sum by (arm) (increase(modelramp_requests_total{{{_EXP}}}[$window]))",
          "Requests served per arm over the window (restart-safe)."),
    Query("successes_in_window", f'sum by (arm) (increase(modelramp_outcomes_total{{{_EXP}, outcome="success"}}[$window]))',
          "Outcomes reported as success per arm over the window (restart-safe)."),
    Query("failures_in_window", f'sum by (arm) (increase(modelramp_outcomes_total{{{_EXP}, outcome="failure"}}[$window]))',
          "Outcomes reported as failure per arm over the window (restart-safe)."),
    Query("outcomes_in_window", f"sum by (arm) (increase(modelramp_outcomes_total{{{_EXP}}}[$window]))",
          "Outcomes reported per arm over the window (restart-safe)."),
    Query("backend_errors_in_window", f"sum by (arm) (increase(modelramp_backend_errors_total{{{_EXP}}}[$window]))",
          "Backend errors per arm over the window (restart-safe)."),
    Query("fallbacks_in_window", f"sum by (arm) (increase(modelramp_fallbacks_total{{{_EXP}}}[$window]))",
          "Requests of an arm answered by the fallback over the window (restart-safe)."),
    Query("success_share_in_window",
          f'sum by (arm) (increase(modelramp_outcomes_total{{{_EXP}, outcome="success"}}[$window]))'
          f" / sum by (arm) (increase(modelramp_outcomes_total{{{_EXP}}}[$window]))",
          "Share of reported outcomes that are successes per arm over the window (a point estimate: the always-valid "
          "comparison is decision_difference)."),
    Query("bucket_coverage_in_window",
          f"count by (arm) (sum by (arm, bucket) (increase(modelramp_bucket_exposures_total{{{_EXP}}}[$window])) > 0)",
          "Analysis buckets that got exposures over the window, per arm (restart-safe)."),
    Query("outcome_coverage", f"sum by (arm) (increase(modelramp_outcomes_total{{{_EXP}}}[$window]))"
                              f" / sum by (arm) (increase(modelramp_requests_total{{{_EXP}}}[$window]))",
          "Outcomes counted per request served, per arm, over the window: the arms should track each other."),
    Query("model_error_rate_in_window", f"sum(increase(modelramp_backend_errors_total{{{_MODEL}}}[$window]))"
                                        f" / sum(increase(modelramp_requests_total{{{_MODEL}}}[$window]))",
          "Share of model-arm requests that hit a backend error over the window (restart-safe).", by_arm=False),
    Query("model_fallback_rate_in_window", f"sum(increase(modelramp_fallbacks_total{{{_MODEL}}}[$window]))"
                                           f" / sum(increase(modelramp_requests_total{{{_MODEL}}}[$window]))",
          "Share of model-arm requests answered by the fallback over the window (restart-safe).", by_arm=False),
    Query("model_p99_latency_seconds_in_window",
          f"histogram_quantile(0.99, sum by (le) (increase(modelramp_request_duration_seconds_bucket{{{_MODEL}}}[$window])))",
          "99th percentile of model-arm request duration over the window (restart-safe).", by_arm=False),
    # Router health beyond one experiment: these counters carry no experiment label (router/metrics.py).
    Query("config_reloads_rejected", 'sum by (source) (increase(modelramp_config_reloads_total{result="rejected"}[$window]))',
          "Configuration changes the routers rejected (invalid file or weights call; the one in force stays), by source.",
          by_arm=False),
    Query("outcomes_rejected", "sum by (reason) (increase(modelramp_outcomes_rejected_total[$window]))",
          "Outcome reports the routers rejected (forged, expired, another experiment or salt, duplicate, ...), by reason.",
          by_arm=False),
    Query("outcomes_rejected_rate", "sum by (reason) (rate(modelramp_outcomes_rejected_total[$window]))",
          "Outcome reports the routers rejected per second, by reason.", by_arm=False),
    # Training-serving skew monitors (labelled by model, not experiment).
    Query("feature_drift", 'max by (feature, statistic) (modelramp_feature_drift{model="$model"})',
          "Drift statistic per feature of live inputs against the training baseline.", by_arm=False),
    Query("feature_anomaly_rate", 'sum by (feature, kind) (rate(modelramp_feature_anomalies_total{model="$model"}[$window]))',
          "Anomalous feature values per second, by feature and kind.", by_arm=False),
    # The sketches themselves (`modelramp skew --prometheus`): cumulative per-bin counts of the fleet,
    # or their increase over a trailing window, judged against the baseline by router.skew.drift.
    Query("feature_values", 'sum by (feature, bin) (modelramp_feature_values_total{model="$model"})',
          "Sampled feature values per baseline bin, summed over router replicas, since they started.", by_arm=False),
    Query("feature_values_window", 'sum by (feature, bin) (increase(modelramp_feature_values_total{model="$model"}[$window]))',
          "Sampled feature values per baseline bin over the window, summed over router replicas.", by_arm=False),
    Query("feature_anomalies", 'sum by (feature, kind) (modelramp_feature_anomalies_total{model="$model"})',
          "Anomalous feature values by feature and kind, summed over router replicas, since they started.", by_arm=False),
    Query("feature_anomalies_window", 'sum by (feature, kind) (increase(modelramp_feature_anomalies_total{model="$model"}[$window]))',
          "Anomalous feature values by feature and kind over the window.", by_arm=False),
    Query("feature_drifted", 'max by (feature) (modelramp_feature_drifted{model="$model"})',
          "1 for a feature some router judges drifted (per-feature thresholds, minimum sample and significance).", by_arm=False),
    Query("feature_drift_over_limit",
          'max by (feature, statistic) (modelramp_feature_drift{model="$model"} / modelramp_feature_drift_threshold{model="$model"})',
          "Each judged drift statistic as a multiple of the feature's own limit (skew.thresholds, skew.features): over 1 is over.", by_arm=False),
    # Anomalies over sketched values of the same feature, not over requests: a request carries one
    # value per feature, and only sampled requests are sketched, so this is the share of values.
    Query("feature_anomaly_share",
          'sum by (feature, kind) (rate(modelramp_feature_anomalies_total{model="$model"}[$window]))'
          ' / on (feature) group_left sum by (feature) (rate(modelramp_feature_values_total{model="$model"}[$window]))',
          "Share of sketched values of each feature that are anomalous, by kind, over the window.", by_arm=False),
    # The skew alerts (the chart's PrometheusRule and k8s/rules render exactly these; tests/deploy
    # checks): the whole fleet, per namespace and model. Drift alerts follow the router's verdict, so
    # per-feature limits, the minimum sample and the significance test all count; the value is the
    # largest judged statistic as a multiple of its limit.
    Query("alert_feature_drift",
          f'max by (namespace, model, feature) (modelramp_feature_drift{{feature!="{PREDICTION_FEATURE}"}} / modelramp_feature_drift_threshold)\n'
          f'and on (namespace, model, feature)\n'
          f'max by (namespace, model, feature) (modelramp_feature_drifted{{feature!="{PREDICTION_FEATURE}"}}) == 1',
          "Features some router judges drifted, valued by how far their worst statistic is over its limit.", by_arm=False),
    Query("alert_prediction_drift",
          f'max by (namespace, model, feature) (modelramp_feature_drift{{feature="{PREDICTION_FEATURE}"}} / modelramp_feature_drift_threshold)\n'
          f'and on (namespace, model, feature)\n'
          f'max by (namespace, model, feature) (modelramp_feature_drifted{{feature="{PREDICTION_FEATURE}"}}) == 1',
          "The model's score judged drifted from its validation distribution, valued as alert_feature_drift.", by_arm=False),
    Query("alert_feature_anomaly_share",
          "sum by (namespace, model, feature, kind) (rate(modelramp_feature_anomalies_total[$window]))\n"
          "  / on (namespace, model, feature) group_left\n"
          "sum by (namespace, model, feature) (rate(modelramp_feature_values_total[$window]))",
          "Share of sketched values of each feature that are anomalous, by kind, per namespace and model.", by_arm=False),
    # The ramp decision (experiments.live.decision_metrics): the latest analysis per experiment, from
    # `modelramp analyze --serve` or the ramp controller's Pushgateway. `max by` folds the copies two
    # exporters (or a scrape and a push) may hold of the same gauge into one series.
    Query("decision", f"max by (decision) (modelramp_decision{{{_EXP}}}) == 1",
          "The current decision (hold, ramp, ship, rollback, blocked): one series, named by its `decision` label.", by_arm=False),
    Query("decision_reason", f"max by (code) (modelramp_decision_reason{{{_EXP}}}) == 1",
          "The rule that decided (a REASON_CODES code): one series, named by its `code` label.", by_arm=False),
    Query("decision_stage_percent", f"max(modelramp_decision_stage_percent{{{_EXP}}})",
          "Model-arm share of the current ramp stage, in percent.", by_arm=False),
    Query("decision_stage_index", f"max(modelramp_decision_stage_index{{{_EXP}}})",
          "Index of the current ramp stage (0 = first).", by_arm=False),
    Query("decision_stage_duration_seconds", f"max(modelramp_decision_stage_duration_seconds{{{_EXP}}})",
          "How long the current stage has run at the latest decision.", by_arm=False),
    Query("decision_stage_min_duration_seconds", f"max(modelramp_decision_stage_min_duration_seconds{{{_EXP}}})",
          "The current stage's minimum duration.", by_arm=False),
    Query("decision_model_exposures", f"max(modelramp_decision_model_exposures{{{_EXP}}})",
          "Model-arm exposures counted in the current stage.", by_arm=False),
    Query("decision_min_samples", f"max(modelramp_decision_min_samples{{{_EXP}}})",
          "The current stage's minimum model-arm exposures.", by_arm=False),
    Query("decision_difference", f"max by (bound) (modelramp_decision_difference{{{_EXP}}})",
          "Model - legacy success rate: the estimate, the always-valid CI and the harm / non-inferiority bounds.", by_arm=False),
    Query("decision_srm_p_value", f"max(modelramp_decision_srm_p_value{{{_EXP}}})",
          "Always-valid sample ratio mismatch p-value (on units) of the latest decision.", by_arm=False),
    Query("decision_outcome_rate_p_value", f"max(modelramp_decision_outcome_rate_p_value{{{_EXP}}})",
          "Always-valid p-value that both arms get outcomes per exposure at the same rate.", by_arm=False),
    Query("decision_guardrail_breached", f"max by (guardrail) (modelramp_decision_guardrail_breached{{{_EXP}}})",
          "1 for each model-arm guardrail the latest decision found breached, 0 for the others.", by_arm=False),
    Query("decision_age_seconds", f"time() - max(modelramp_decision_timestamp_seconds{{{_EXP}}})",
          "Seconds since the latest decision was made (a stalled controller lets it grow).", by_arm=False),
    # The decision alerts (the chart's modelramp.decisions group renders exactly these, with its
    # thresholds appended): per namespace and experiment; they follow the analyzer's verdict.
    Query("alert_decision_rollback", 'max by (namespace, experiment) (modelramp_decision{decision="rollback"}) == 1',
          "Experiments whose latest decision is rollback.", by_arm=False),
    Query("alert_decision_blocked", 'max by (namespace, experiment) (modelramp_decision{decision="blocked"}) == 1',
          "Experiments whose latest decision is blocked (the analyzer cannot decide on the data).", by_arm=False),
    Query("alert_sample_ratio_mismatch", 'max by (namespace, experiment) (modelramp_decision_reason{code="sample_ratio_mismatch"}) == 1',
          "Experiments the analyzer found a sample ratio mismatch in (its always-valid test, its own threshold).", by_arm=False),
    Query("alert_decision_age_seconds",
          "(\n"
          "  time() - max by (namespace, experiment) (modelramp_decision_timestamp_seconds)\n"
          "  unless on (namespace, experiment)\n"
          '  max by (namespace, experiment) (modelramp_decision{decision=~"ship|rollback"}) == 1\n'
          ")",
          "Seconds since the latest decision of each unfinished experiment (shipped and rolled-back ones are done: no "
          "decision is due); the stale-decision alert compares it with its limit.", by_arm=False),
    Query("alert_controller_holding", 'max by (namespace, experiment) (modelramp_decision_reason{code="controller_hold"}) == 1',
          "Experiments whose ramp controller holds on its own (cannot read the config or counters, lost its lease, a "
          "counter reset, a failed analysis) rather than on the analyzer's decision.", by_arm=False),
    Query("alert_controller_absent", 'absent(modelramp_decision_timestamp_seconds{experiment="$experiment"})',
          "1 while no decision of the experiment reaches Prometheus at all (the controller never ran, or its "
          "Pushgateway is not scraped).", by_arm=False),
    # Router availability is `up` of the routers' scrape job, whose name is the chart's (the router
    # Service's): the chart writes ModelrampRoutersAbsent and ModelrampRoutersDown itself.
]

QUERIES: dict[str, Query] = {q.name: q for q in _QUERIES}

# Which count of a look each raw counter series feeds (metric name, outcome label or None).
COUNTER_FIELDS = {
    ("modelramp_requests_total", None): "exposures",
    ("modelramp_outcomes_total", "success"): "successes",
    ("modelramp_outcomes_total", "failure"): "failures",
    ("modelramp_backend_errors_total", None): "errors",
    ("modelramp_fallbacks_total", None): "fallbacks",
}
# The per-bucket counters: (metric name, outcome label or None) -> the count per bucket they feed.
BUCKET_COUNTER_FIELDS = {
    ("modelramp_bucket_exposures_total", None): "exposures",
    ("modelramp_bucket_outcomes_total", "success"): "successes",
    ("modelramp_bucket_outcomes_total", "failure"): "failures",
}
CREATED_SAMPLES = frozenset(name.replace("_total", "_created") for name, _ in COUNTER_FIELDS)
LATENCY_BUCKETS = "modelramp_request_duration_seconds_bucket"
LATENCY_QUANTILE = 0.99


def render(name: str, **variables: str) -> str:
    """The named query as PromQL, e.g. `render("exposures", experiment="clf-v2")`."""
    try:
        query = QUERIES[name]
    except KeyError:
        raise ValueError(f"no PromQL query named {name!r}; known: {', '.join(QUERIES)}") from None
    return query.render(**variables)
