"""The benchmark scripts still run end to end (tiny sizes; their figures are not checked here)."""

from __future__ import annotations

import json
import subprocess
import sys

from tests.router.ledger.pgserver import require_postgres
from tests.support.binaries import require_binary
from tests.support.processes import REPO


def run_script(script: str, *args: str, tmp_path) -> dict:
    out = tmp_path / "result.json"
    subprocess.run([sys.executable, f"loadtests/{script}", *args, "--json", str(out)], cwd=REPO, check=True,
                   capture_output=True, text=True, timeout=240)
    return json.loads(out.read_text())


def test_router_idle_benchmark_measures_every_pacing(tmp_path):
    result = run_script("bench_router_idle.py", "--requests", "40", tmp_path=tmp_path)
    assert set(result) == {"back_to_back", "idle_gaps_500_rps", "idle_gaps_1000_rps"}
    assert all(row["router_cpu_us_per_request"] > 0 and row["json_round_trip_cpu_us"] > 0 for row in result.values())


def test_grpc_stack_benchmark_measures_both_stacks_and_the_floor(tmp_path):
    result = run_script("bench_grpc_stack.py", "--calls", "100", tmp_path=tmp_path)
    assert set(result) == {"tcp_floor", "event_engine", "iomgr"}
    assert all(row["n"] == 100 and row["p50_ms"] > 0 for row in result.values())


def test_grpc_client_benchmark_measures_every_client_against_a_real_model_server(tmp_path, models_dir):
    result = run_script("bench_grpc_client.py", "--models", str(models_dir), "--rps", "50", "--seconds", "1", "--rounds", "1",
                        tmp_path=tmp_path)
    assert set(result["figures"]) == {"grpc_aio", "grpc_unary", "rest_http1", "idle_wakes"}
    for kind, row in result["figures"].items():
        assert row["errors"] == 0 and row["calls"] == 50 and row["cpu_us_per_call"] > 0, kind
    assert result["figures"]["rest_http1"]["cpu_ratio_to_rest_http1"] == 1.0


def test_router_benchmark_measures_router_and_bare_forwarder_at_each_rate(tmp_path, models_dir):
    result = run_script("bench_router.py", "--models", str(models_dir), "--rps", "100", "--seconds", "2", "--rounds", "1",
                        "--cpu-rps", "200", "--saturate", "0", tmp_path=tmp_path)
    assert result["direct"]["errors"] == 0 and result["router"]["errors"] == 0
    assert result["cpu_s_per_1000"] > 0 and result["bare_forwarder_cpu_s_per_1000"] > 0 and result["bare_forwarder_errors"] == 0
    assert result["awaiting_forwarder_cpu_s_per_1000"] > 0 and result["awaiting_forwarder_errors"] == 0
    assert set(result["cpu_s_per_1000_by_rps"]) == {"200"}
    assert set(result["cpu_s_per_1000_by_rps"]["200"]) == {"router", "bare_forwarder", "awaiting_forwarder"}
    assert all(v > 0 for v in result["cpu_s_per_1000_by_rps"]["200"].values())


def test_router_sections_benchmark_times_every_stage_of_both_variants(tmp_path):
    result = run_script("bench_router_sections.py", "--requests", "30", tmp_path=tmp_path)
    assert set(result) == {"back_to_back", "idle_gap_2ms"}
    for pacing in result.values():
        assert set(pacing) == {"router", "openssl_prometheus"}
        assert all(set(row) == {"decode", "assign", "validate", "legacy_call", "request_id", "count", "encode"}
                   and all(us > 0 for us in row.values()) for row in pacing.values())


def test_router_benchmark_measures_a_baseline_revision_beside_this_tree(tmp_path, models_dir):
    result = run_script("bench_router.py", "--models", str(models_dir), "--rps", "100", "--seconds", "1", "--rounds", "2",
                        "--cpu-rps", "200", "--saturate", "2", "--baseline-rev", "HEAD", tmp_path=tmp_path)
    assert result["baseline_rev"] == "HEAD" and len(result["baseline_commit"]) == 40
    assert result["router"]["errors"] == 0 and result["baseline"]["router"]["errors"] == 0
    assert result["baseline"]["cpu_s_per_1000"] > 0 and result["baseline"]["router_saturation_rps"] > 0
    assert set(result["cpu_s_per_1000_by_rps"]["200"]) == {"router", "baseline", "bare_forwarder", "awaiting_forwarder"}
    assert result["after_over_before"]["cpu_s_per_1000"] > 0 and result["after_over_before"]["router_p50_ms"] > 0
    worktrees = subprocess.run(["git", "worktree", "list"], cwd=REPO, check=True, capture_output=True, text=True).stdout
    assert "bench-router-baseline-" not in worktrees  # the checkout is removed at the end


def test_router_benchmark_compares_two_revisions_with_the_model_arm_over_rest(tmp_path, models_dir):
    result = run_script("bench_router.py", "--models", str(models_dir), "--rps", "100", "--seconds", "1", "--rounds", "2",
                        "--cpu-rps", "200", "--saturate", "0", "--baseline-rev", "HEAD~1", "--after-rev", "HEAD",
                        "--model-transport", "rest", "--model-weight", "0.5", tmp_path=tmp_path)
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, check=True, capture_output=True, text=True).stdout.strip()
    assert (result["after_rev"], result["after_commit"], result["after_uncommitted"]) == ("HEAD", head, [])
    assert result["router"]["errors"] == 0 and result["baseline"]["router"]["errors"] == 0
    assert result["model_arm"]["requests"] > 0 and result["baseline"]["model_arm"]["requests"] > 0  # REST model arm answered
    worktrees = subprocess.run(["git", "worktree", "list"], cwd=REPO, check=True, capture_output=True, text=True).stdout
    assert "bench-router-baseline-" not in worktrees


def test_peers_benchmark_measures_nginx_haproxy_and_both_routers_at_each_share(tmp_path, models_dir):
    require_binary("nginx", "nginx")
    require_binary("haproxy", "haproxy")
    result = run_script("bench_peers.py", "--models", str(models_dir), "--shares", "1,100", "--rps", "40", "--seconds", "1",
                        "--rounds", "2", "--warmup", "0.3", tmp_path=tmp_path)
    peers = ["nginx", "haproxy", "router (gRPC)", "router (REST rows)"]
    assert result["paths"] == peers and set(result["shares"]) == {"1", "100"}
    for share, paths in result["shares"].items():
        assert set(paths) == {"direct", *peers}
        for name, figures in paths.items():
            assert figures["errors"] == 0 and figures["requests"] > 0 and len(figures["rounds"]) == 2, (share, name)
            if name != "direct":
                assert figures["cpu_s_per_1000"] >= 0, (share, name)
    # At 100% every path's every answer came from the model server (nginx, HAProxy and the routers say which arm answered).
    assert all(paths["model_share_answered"] == 1.0 for paths in result["shares"]["100"].values())
    assert all(paths["by_arm"].get("legacy", {}).get("requests", 0) > 0 for paths in result["shares"]["1"].values())


def test_ledger_benchmark_inserts_into_sqlite_and_postgresql(tmp_path):
    require_postgres()  # the benchmark starts its own throwaway server from these binaries
    result = run_script("bench_ledger.py", "--seconds", "0.3", "--submitters", "1,4", "--batch-sizes", "1,10", tmp_path=tmp_path)
    assert [(r["database"], r["batch_size"], r["submitters"]) for r in result["rows"]] == [
        (db, b, s) for db in ("sqlite", "postgresql") for b in (1, 10) for s in (1, 4)]
    assert all(r["outcomes_per_second"] > 0 and r["cpu_us_per_outcome"] > 0 for r in result["rows"]), result["rows"]


def test_ledger_benchmark_measures_the_predict_path_without_and_with_outcome_load(tmp_path, models_dir):
    result = run_script("bench_ledger.py", "--predict", "--models", str(models_dir), "--rps", "50", "--seconds", "1",
                        "--rounds", "3", "--outcome-rate", "200", "--outcome-batch", "10", tmp_path=tmp_path)
    assert result["outcome_report_errors"] == 0 and result["outcomes_per_second"] > 0
    assert all(result["rows"][load]["requests"] == 150 for load in ("without", "with"))
    assert all(len(result["per_round_added_ms"][load]) == 3 for load in ("without", "with"))
    # Three rounds each way: three paired differences, and two between successive rounds without load.
    assert all(len(v) == 3 for v in (*result["paired_effect_ms"].values(), *result["noise_ms"].values()))
