"""The router never loads TensorFlow, and its /metrics passes `promtool check metrics`."""

from __future__ import annotations

import subprocess
import sys
import textwrap

from tests.support.binaries import require_binary
from tests.support.processes import REPO

NO_TF = textwrap.dedent("""
    import asyncio, sys
    import experiments.cli                      # the console script the router runs under
    import router.cli, router.server, router.rest.app, router.rest.predict, router.rest.server, router.grpc
    import experiments.cli.local, experiments.local.stack
    from router.backends.legacy_http import LegacyHttpBackend
    from router.backends.tfserving_grpc import TfServingGrpcBackend
    from router.backends.tfserving_rest import TfServingRestBackend
    from router.core import Router
    from router.rest.predict import RestDecoder
    from experiments.config import parse_config
    from serving.tfserving.errors import UserFacingError

    config = parse_config({"name": "x", "salt": "s", "model_name": "churn", "arms": {
        "legacy": {"weight": 0.5, "backend": {"kind": "legacy_http", "url": "http://127.0.0.1:9"}},
        "model": {"weight": 0.5, "backend": {"kind": "tfserving_grpc", "target": "127.0.0.1:9", "model_name": "churn"}}}})

    async def main():
        router = Router(config)
        for unit in ("a", "b", "c", "d"):
            try:
                await router.predict("churn", unit, RestDecoder(b'{"instances": [{"x": 1.0}]}', 10000, "serving_default"), "http", 0.5)
            except UserFacingError:
                pass  # nothing listens on port 9: the point is the code path, not the answer
        await router.readiness(0.2)
        await router.close()

    asyncio.run(main())
    loaded = sorted(m for m in sys.modules if m.split(".")[0] in ("tensorflow", "tensorflow_serving", "keras"))
    print("LOADED", loaded)
    sys.exit(1 if loaded else 0)
""")


def test_router_does_not_load_tensorflow():
    result = subprocess.run([sys.executable, "-c", NO_TF], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "LOADED []" in result.stdout


def test_metrics_pass_promtool(tmp_path):
    import asyncio

    from router.core import Router
    from router.signing import Signer
    from serving.tfserving import errors
    from tests.router.fakes import decoder, fake_factory, make_config

    promtool = require_binary("promtool")
    from router.ledger import MemoryLedger
    from router.server import attach_ledger_metrics

    router = Router(make_config(0.5), signer=Signer(b"k"), backend_factory=fake_factory, ledger=MemoryLedger())
    attach_ledger_metrics(router)

    async def traffic():
        await router.refresh_metadata()
        for i in range(20):
            served = await router.predict("churn", f"u{i}", decoder(), "http")
            await router.outcomes.report({"request_id": served.request_id, "success": i % 2 == 0})
        router.state.backends["model"].fail = errors.Unavailable("down")
        for i in range(20):
            await router.predict("churn", f"u{i}", decoder(), "grpc")

    asyncio.run(traffic())
    text = router.metrics.exposition()
    for name in ("modelramp_requests_total", "modelramp_request_duration_seconds_bucket", "modelramp_backend_errors_total",
                 "modelramp_fallbacks_total", "modelramp_outcomes_total", "modelramp_traffic_weight",
                 "modelramp_outcome_ledger_available", "modelramp_outcome_ledger_pending_rows", "modelramp_outcome_lag_seconds_bucket"):
        assert name.encode() in text, name
    result = subprocess.run([promtool, "check", "metrics"], input=text, capture_output=True, timeout=60)
    assert result.returncode == 0, result.stdout.decode() + result.stderr.decode()
