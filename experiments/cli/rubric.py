"""The ML Test Score rubric (Breck et al., "The ML Test Score", IEEE Big Data 2017) as data: 28 tests, how modelramp covers each, and where."""

from __future__ import annotations

from dataclasses import dataclass

AUTOMATED, MANUAL, NOT_COVERED = "automated", "manual", "not covered"
POINTS = {AUTOMATED: 1.0, MANUAL: 0.5, NOT_COVERED: 0.0}
# A test in tests/ runs "automatically and repeatedly" only because CI runs the suite, so every
# automated claim also rests on the CI entry point and the Makefile target it calls.
CI_EVIDENCE = (".ci/run", "Makefile::test")
# The paper's reading of a final score (its "interpreting the score" table), upper bounds inclusive.
INTERPRETATION = ((0.0, "more of a research project than a productionized system"),
                  (1.0, "not totally untested, but there may be serious holes in reliability"),
                  (2.0, "a first pass at basic productionization; more investment may be needed"),
                  (3.0, "reasonably tested, but more of the tests and procedures could be automated"),
                  (5.0, "strong automated testing and monitoring, fit for mission-critical systems"),
                  (float("inf"), "exceptional levels of automated testing and monitoring"))


def interpret(score: float) -> str:
    """The paper's reading of a final score."""
    return next(text for bound, text in INTERPRETATION if score <= bound)


@dataclass(frozen=True)
class Claim:
    """How modelramp covers a rubric test, and the repository references that must hold for that to be true.

    A reference is a path relative to the checkout, `path::name` (a def or class in a Python file,
    `Class::name` for a method; an `alert:` or `record:` in a rule file; a target in the Makefile;
    a heading in Markdown), or `modelramp COMMAND` (a registered subcommand). `pending` marks a claim
    on work another change is still bringing in: while its references are missing it is passed over
    without counting as rot, and the next claim is tried.
    """

    status: str
    how: str
    where: str
    evidence: tuple[str, ...]
    note: str = ""
    pending: bool = False


@dataclass(frozen=True)
class RubricTest:
    """One of the paper's 28 tests; `claims` are tried best first, `gap` says what is missing when none holds."""

    key: str
    name: str
    description: str
    claims: tuple[Claim, ...] = ()
    gap: str = ""


@dataclass(frozen=True)
class Section:
    """One of the paper's four sections; its score is the sum of its tests' points."""

    key: str
    title: str
    tests: tuple[RubricTest, ...]


# --- the rubric ---------------------------------------------------------------------------------


def auto(how: str, where: str, *evidence: str, note: str = "", pending: bool = False) -> Claim:
    return Claim(AUTOMATED, how, where, evidence, note, pending)


def manual(how: str, where: str, *evidence: str, note: str = "", pending: bool = False) -> Claim:
    return Claim(MANUAL, how, where, evidence, note, pending)


TRAIN_TESTS = "tests/serving/training/test_train.py"
DEMO_TESTS = "tests/experiments/local/test_demo.py"
CANARY_TESTS = "tests/experiments/quality/test_problem_eval.py"
TRACKING_TESTS = "tests/experiments/quality/test_tracking.py"
RULES = "k8s/rules/modelramp.rules.yaml"
RULE_TESTS = "tests/deploy/test_rules.py::test_every_alert_has_a_firing_unit_test"

DATA = Section("data", "Tests for features and data", (
    RubricTest("Data 1", "Feature expectations are captured in a schema",
               "Each feature's expected values (type, range, categories, missing rate) are written down and data is checked against them.",
               (auto("every version exports baseline.json (ranges, quantiles, categories, missing rates) and the router counts "
                     "live values that break it", "serving/training/baseline.py, router/skew/sketches.py, tests/serving, tests/router",
                     "serving/training/baseline.py", f"{TRAIN_TESTS}::test_export_layout_and_metadata",
                     "tests/router/skew/test_sketches.py::test_numeric_missing_out_of_range_and_unexpected_type",
                     "tests/router/skew/test_sketches.py::test_categorical_is_bounded_and_counts_unseen_and_missing",
                     note="the schema is learned from the training split, not expectations a person reviewed"),)),
    RubricTest("Data 2", "All features are beneficial",
               "Each feature earns its place: its predictive value is measured (importance, leave-one-feature-out).",
               (auto("every training run measures each feature's permutation importance on the validation split "
                     "(AUC and accuracy drop over 3 shuffles) and records it with the version, listing the features "
                     "that did not help", "serving/training/importance.py, models/<name>/<version>/modelramp/importance.json",
                     f"{TRAIN_TESTS}::test_permutation_importance_finds_the_features_a_model_uses",
                     f"{TRAIN_TESTS}::test_each_version_records_its_feature_importance",
                     note="features that do not help are reported, not removed: dropping one is a new recipe"),)),
    RubricTest("Data 3", "No feature's cost is too much",
               "The cost of each feature (latency, memory, upstream dependencies, maintenance) is measured against its value.",
               gap="no per-feature cost measured; loadtests/ time whole requests, bench_sketches only the monitor's cost"),
    RubricTest("Data 4", "Features adhere to meta-level requirements",
               "Project-wide rules on features (no personal data, no forbidden or deprecated sources) are enforced.",
               gap="no list of forbidden features checked against the schema in serving/training/dataset.py"),
    RubricTest("Data 5", "The data pipeline has appropriate privacy controls",
               "Raw user data is access-controlled, minimised and deleted on schedule, also in logs and derived data.",
               gap="models/data/ keeps raw customer rows with no access control or retention; only the router's "
                   "sketches are aggregates"),
    RubricTest("Data 6", "New features can be added quickly",
               "A new feature can go from idea to the production model in days, and that time is measured.",
               gap="one schema (serving/training/dataset.py) drives encoder, export, baseline and sketches, but adding a "
                   "feature has never been timed or documented"),
    RubricTest("Data 7", "All input feature code is tested",
               "The code that creates and transforms features is tested, in training and in serving.",
               (auto("the exported graph's encoding equals the training encoder (unseen category, missing number); "
                     "split and column conversion tested", "tests/serving/training/test_train.py, tests/serving/training/test_dataset.py",
                     "serving/training/encoding.py", "serving/training/export.py",
                     f"{TRAIN_TESTS}::test_served_graph_encodes_exactly_like_training",
                     "tests/serving/training/test_dataset.py::test_columns_match_the_signature_types",
                     "tests/serving/training/test_dataset.py::test_splits_are_disjoint_cover_everything_and_are_stratified",
                     note="serving.training.encoding.Encoder is tested through the exported graph, not on its own"),)),
))

MODEL = Section("model", "Tests for model development", (
    RubricTest("Model 1", "Every model specification undergoes a code review and is checked in to a repository",
               "Model specs are reviewed and committed, so every model can be traced to the code that made it.",
               (manual("`modelramp versions` lists each version's commit, data fingerprints, hyperparameters and results",
                       "modelramp versions; models/<name>/<v>/modelramp/training.json", "modelramp versions",
                       "serving/training/train.py::RECIPES", f"{TRACKING_TESTS}::test_records_from_files_and_store",
                       note="review is not enforced or recorded; the commit is HEAD even with uncommitted changes"),
                manual("recipes are committed code; each version's training.json records recipe, data fingerprints and "
                       "git commit", "serving/training/train.py (RECIPES); models/<name>/<v>/modelramp/training.json",
                       "serving/training/train.py::RECIPES", f"{TRAIN_TESTS}::test_export_layout_and_metadata",
                       note="review is not enforced or recorded; the commit is HEAD even with uncommitted changes"))),
    RubricTest("Model 2", "Offline proxy metrics correlate with actual online impact metrics",
               "A change in the offline metric is shown to move the live metric the same way (e.g. a small live experiment).",
               (manual("`modelramp versions` shows each version's validation and gate metrics beside its live results; "
                       "for v1 and v2 the README records offline and live agreeing", "modelramp versions; README.md",
                       "modelramp versions", "README.md::The model and the data", "README.md::What `make demo` shows",
                       f"{TRACKING_TESTS}::test_the_controller_records_its_candidate_and_versions_attributes_it",
                       f"{TRAIN_TESTS}::test_candidates_and_legacy_differ_measurably",
                       f"{DEMO_TESTS}::test_worse_candidate_is_rolled_back_in_the_first_stages",
                       note="nothing compares a version's offline gain with its live gain automatically; "
                            "the gate's fixed target alone does not predict the live result"),
                manual("documented for two versions: validation accuracy v2 > legacy > v1 and live v2 ships, v1 is "
                       "rolled back; both sides are tested separately", "README.md; tests/serving, tests/experiments/local/test_demo.py",
                       "README.md::The model and the data", "README.md::What `make demo` shows",
                       f"{TRAIN_TESTS}::test_candidates_and_legacy_differ_measurably",
                       f"{DEMO_TESTS}::test_worse_candidate_is_rolled_back_in_the_first_stages",
                       note="nothing compares a version's offline gain with its live gain automatically; "
                            "the gate's fixed target alone does not predict the live result"),)),
    RubricTest("Model 3", "All hyperparameters have been tuned",
               "Every hyperparameter is set by a search whose results are kept, not left at a default.",
               gap="recipes in serving/training/train.py are set by hand; no search is run (training.json only records the values)"),
    RubricTest("Model 4", "The impact of model staleness is known",
               "How quality decays as the model ages is measured, so retraining frequency is a decision.",
               gap="never measured; the churn data has no time column to train on the past and score the future"),
    RubricTest("Model 5", "A simpler model is not better",
               "The model is compared with a simple baseline (linear model, rule) and beats it.",
               (auto("v2 must beat the legacy rule and the linear v1 offline; the gate shows the legacy rule beside the "
                     "model; live, a worse model is rolled back", "tests/serving/training/test_train.py, experiments/quality/gate.py, "
                     "tests/experiments/local/test_demo.py", f"{TRAIN_TESTS}::test_candidates_and_legacy_differ_measurably",
                     "experiments/quality/gate.py::legacy_scores",
                     f"{DEMO_TESTS}::test_worse_candidate_is_rolled_back_in_the_first_stages"),)),
    RubricTest("Model 6", "Model quality is sufficient on all important data slices",
               "Quality is measured on the slices that matter and is acceptable on each, not only on average.",
               (auto("problems marked --regression (canary patterns) fail `modelramp gate` when the candidate does worse "
                     "on one than the version it replaces, or falls below the problem's minimum accuracy",
                     "experiments/quality/problem_eval.py; modelramp problems, modelramp gate",
                     "experiments/quality/problem_eval.py::canary_check", "modelramp problems", "modelramp gate",
                     f"{CANARY_TESTS}::test_a_candidate_worse_on_a_regression_problem_fails_the_gate_and_keeps_the_test_set",
                     f"{CANARY_TESTS}::test_a_candidate_better_on_every_regression_problem_goes_on_to_the_test_set",
                     note="only as strong as the problems marked --regression; config slices are reported, not thresholded"),
                manual("`modelramp slices` ranks slices by their gap to the legacy rule; the gate reports every slice",
                       "modelramp slices; gate.slices in the experiment YAML", "modelramp slices",
                       "tests/experiments/quality/test_error_analysis.py::test_priorities_rank_by_gap_times_share",
                       "tests/experiments/quality/test_gate.py::test_slices_report_metrics_and_supports",
                       note="no per-slice threshold: judging 'sufficient' is a person reading the table"),
                manual("every gate run reports accuracy, precision, recall, F1 per configured slice beside the legacy rule",
                       "experiments/quality/gate.py; gate.slices in experiments/example_experiment.yaml",
                       "experiments/quality/gate.py::evaluate", "experiments/example_experiment.yaml",
                       "tests/experiments/quality/test_gate.py::test_slices_report_metrics_and_supports",
                       note="no per-slice threshold: judging 'sufficient' is a person reading the table"))),
    RubricTest("Model 7", "The model has been tested for considerations of inclusion",
               "Predictions are checked for unfair differences between groups of users.",
               gap="no fairness or inclusion analysis; the data has no user-group attributes besides state and area code"),
))

INFRA = Section("infrastructure", "Tests for ML infrastructure", (
    RubricTest("Infra 1", "Training is reproducible",
               "Training twice on the same data gives the same model, so differences between versions are explainable.",
               (auto("the same seed trains the same metrics (and another seed different ones); splits are fixed by seed "
                     "and fingerprinted", "tests/serving/training/test_train.py, tests/serving/training/test_dataset.py",
                     f"{TRAIN_TESTS}::test_same_seed_gives_the_same_model_metrics",
                     "tests/serving/training/test_dataset.py::test_split_is_fixed_by_seed_and_written_with_fingerprints",
                     note="checked on one machine and TensorFlow version, not across them"),)),
    RubricTest("Infra 2", "Model specification code is unit tested",
               "Model code is unit tested: a short training runs, the model learns, export and reload work.",
               (auto("a tiny recipe trains and exports; the reloaded graph computes what the network does; the real "
                     "recipes beat the legacy rule", "tests/serving/training/test_train.py",
                     f"{TRAIN_TESTS}::test_same_seed_gives_the_same_model_metrics",
                     f"{TRAIN_TESTS}::test_export_layout_and_metadata",
                     f"{TRAIN_TESTS}::test_served_graph_encodes_exactly_like_training",
                     note="no direct 'loss goes down' assertion"),)),
    RubricTest("Infra 3", "The full ML pipeline is integration tested",
               "The whole pipeline, from data to a served model, runs end to end in an automated test.",
               (auto("trained models, model server, legacy system, router, Prometheus, gate and ramp controller run "
                     "together in CI", "tests/experiments/local/test_demo.py (models from tests/conftest.py)",
                     f"{DEMO_TESTS}::test_better_candidate_passes_the_gate_ramps_through_every_stage_and_ships",
                     "tests/conftest.py::models_dir"),)),
    RubricTest("Infra 4", "Model quality is validated before attempting to serve it",
               "A new model must pass quality checks before it gets traffic.",
               (auto("`modelramp gate` runs the regression problems, then tests accuracy on the pristine test split "
                     "once; the demo gives traffic only after a pass; a version that fails to load never replaces a "
                     "working one", "experiments/quality/gate.py, experiments/local/demo.py, serving/model_server/registry.py", "modelramp gate",
                     "tests/experiments/quality/test_gate.py::test_high_target_fails_with_the_reason",
                     f"{CANARY_TESTS}::test_a_candidate_worse_on_a_regression_problem_fails_the_gate_and_keeps_the_test_set",
                     "tests/serving/model_server/test_model_versions.py::test_new_version_is_served_without_restart_and_broken_one_is_reported",
                     f"{DEMO_TESTS}::test_better_candidate_passes_the_gate_ramps_through_every_stage_and_ships",
                     note="on Kubernetes the gate is run by hand before the model arm points at a new version"),)),
    RubricTest("Infra 5", "The model allows debugging by observing the step-by-step computation on a single example",
               "One example can be run through the model to see how it computes its prediction.",
               (manual("one example through the model server, then its encoding and layers replayed from training.json; "
                       "`modelramp problems show` lists single patterns' answers per version",
                       "docs/scorecard.md; modelramp problems show", "docs/scorecard.md::Debugging one prediction",
                       "modelramp problems", f"{TRAIN_TESTS}::test_served_graph_encodes_exactly_like_training",
                       note="a documented procedure, not a tool; no per-feature contributions"),
                manual("one example through the model server, then its encoding and layers replayed from training.json",
                       "docs/scorecard.md", "docs/scorecard.md::Debugging one prediction",
                       f"{TRAIN_TESTS}::test_served_graph_encodes_exactly_like_training",
                       note="a documented procedure, not a tool; no per-feature contributions"))),
    RubricTest("Infra 6", "Models are tested via a canary process before they enter production serving",
               "A new model first serves a small share of real traffic, and loads and answers correctly, before all of it.",
               (auto("the model arm starts at 1% of units (sticky, nested stages); TF Serving is ready only with the model "
                     "loaded; the router falls back to legacy when the model fails", "router/assignment.py, helm chart, "
                     "tests/router, tests/experiments/local/test_demo.py",
                     "tests/router/test_assignment.py::test_nested_across_ramp_stages",
                     "tests/deploy/test_chart.py::test_tf_serving_uses_the_official_image_and_is_ready_only_with_the_model_loaded",
                     "tests/router/test_core.py::test_model_failure_falls_back_to_legacy_and_is_counted",
                     f"{DEMO_TESTS}::test_worse_candidate_is_rolled_back_in_the_first_stages"),)),
    RubricTest("Infra 7", "Models can be quickly and safely rolled back to a previous serving version",
               "Going back to the previous model is fast, safe and practised.",
               (auto("the ramp controller rolls back (all traffic to legacy) on a worse model or a guardrail; routers "
                     "reload weights without restart; the circuit breaker cuts off a failing model before the controller looks",
                     "experiments/live/controller.py, router/reload.py, router/breaker.py",
                     "tests/experiments/live/test_controller.py::test_rolls_back_a_worse_model",
                     "tests/router/test_reload.py::test_file_change_is_applied_and_bad_file_rejected",
                     "tests/router/test_core.py::test_circuit_breaker_opens_and_a_new_config_closes_it",
                     note="rollback goes to the legacy system; pinning an earlier model version is a manual config change"),)),
))

MONITORING = Section("monitoring", "Monitoring tests for ML", (
    RubricTest("Monitor 1", "Dependency changes result in notification",
               "Changes in upstream data sources or libraries the model depends on notify the team.",
               gap="no notification on upstream or library changes (training.json records TF/Keras versions, nothing "
                   "compares them); a renamed field only shows as Monitor 2/3 alerts"),
    RubricTest("Monitor 2", "Data invariants hold in training and serving inputs",
               "Inputs are checked against the schema continuously, and breaches alert.",
               (auto("the router rejects inputs that break the signature (400 / INVALID_ARGUMENT) and counts schema "
                     "anomalies; an alert fires over 1%; splits are never silently replaced",
                     "router/signature.py, router/skew/sketches.py, k8s/rules (ModelrampFeatureAnomalyRate)",
                     "tests/router/test_integration.py::test_bad_inputs_get_4xx_over_rest_and_grpc",
                     "tests/router/skew/test_sketches.py::test_numeric_missing_out_of_range_and_unexpected_type",
                     f"{RULES}::ModelrampFeatureAnomalyRate", RULE_TESTS,
                     "tests/serving/training/test_dataset.py::test_existing_splits_are_never_silently_replaced"),)),
    RubricTest("Monitor 3", "Training and serving features compute the same values",
               "Features and their code are the same in training and serving, and live distributions are compared with training.",
               (auto("the served graph encodes like training; live sketches are judged against the training baseline "
                     "(PSI, JS, L-inf, chi-square) and drift alerts fire", "router/skew/sink.py, router/skew/drift.py, "
                     "k8s/rules (ModelrampFeatureDrift)",
                     f"{TRAIN_TESTS}::test_served_graph_encodes_exactly_like_training",
                     "tests/experiments/live/test_skew_e2e.py::test_deliberate_skew_is_caught_on_the_right_features_only",
                     "tests/experiments/live/test_skew_e2e.py::test_clean_traffic_raises_no_alarm",
                     f"{RULES}::ModelrampFeatureDrift", RULE_TESTS),)),
    RubricTest("Monitor 4", "Models are not too stale",
               "The serving model's age is watched and alerts before it passes the known staleness limit.",
               gap="training.json records trained_at, but no metric exports the serving version's age and nothing alerts"),
    RubricTest("Monitor 5", "The model is numerically stable",
               "NaNs and infinities in training and in predictions are detected and alert.",
               (auto("training stops on a NaN loss and a version whose loss or validation scores are not finite is "
                     "never published; the router treats a NaN/Inf model answer as a failed call: the client gets the "
                     "legacy answer, modelramp_backend_errors_total{reason=\"non_finite\"} counts it, the breaker and "
                     "the model-arm error alert and guardrail see it",
                     "serving/training/train.py (check_numerics), router/backends/base.py (check_finite), k8s/rules "
                     "(ModelrampModelArmErrorRate)",
                     f"{TRAIN_TESTS}::test_a_diverged_training_run_is_not_published",
                     f"{TRAIN_TESTS}::test_check_numerics_refuses_nan_scores",
                     "tests/router/test_nonfinite.py::test_a_nan_answer_falls_back_to_legacy_and_is_counted",
                     f"{RULES}::ModelrampModelArmErrorRate", RULE_TESTS,
                     note="no alert of its own: NaN answers count as model-arm errors"),)),
    RubricTest("Monitor 6", "The model has not experienced regressions in training speed, serving latency, throughput, or RAM",
               "Computing performance is tracked across versions and regressions alert.",
               (auto("model-arm p99 latency is a guardrail: an alert fires and the analyzer rolls back; benchmarks "
                     "measure latency, CPU and RSS by hand", "k8s/rules (ModelrampModelArmLatencyP99), "
                     "experiments/stats/guardrails.py, loadtests/", f"{RULES}::ModelrampModelArmLatencyP99", RULE_TESTS,
                     "tests/experiments/live/test_analysis.py::test_guardrail_reports_latency_too",
                     "loadtests/bench_model_server.py", "loadtests/bench_router.py", "Makefile::bench-router",
                     note="throughput, RAM and training speed are only benchmarked by hand, not compared across versions"),)),
    RubricTest("Monitor 7", "The model has not experienced a regression in prediction quality on served data",
               "Live prediction quality is compared with a reference and a regression alerts or rolls back.",
               (auto("live success rate against the legacy arm with a sequential test; a worse model is rolled back; "
                     "the score's drift alerts", "experiments/live/analysis.py, experiments/live/controller.py, "
                     "k8s/rules (ModelrampPredictionDrift)",
                     "tests/experiments/live/test_controller.py::test_rolls_back_a_worse_model",
                     f"{DEMO_TESTS}::test_worse_candidate_is_rolled_back_in_the_first_stages",
                     f"{RULES}::ModelrampPredictionDrift", RULE_TESTS,
                     note="after shipping at 100% no legacy arm is left to compare with: only prediction drift watches"),)),
))

RUBRIC: tuple[Section, ...] = (DATA, MODEL, INFRA, MONITORING)
