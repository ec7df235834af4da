"""Start real router processes on loopback for integration tests."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import httpx
import yaml

from tests.support.processes import Process, free_port, wait_ready

SIGNING_KEY = "integration-test-key"
TOKEN = "integration-test-token"
ROW = {"state": "KS", "area_code": "area_code_415", "international_plan": "no", "voice_mail_plan": "yes",
       "account_length": 128.0, "number_vmail_messages": 25.0, "total_day_minutes": 265.1, "total_day_calls": 110.0,
       "total_day_charge": 45.07, "total_eve_minutes": 197.4, "total_eve_calls": 99.0, "total_eve_charge": 16.78,
       "total_night_minutes": 244.7, "total_night_calls": 91.0, "total_night_charge": 11.01, "total_intl_minutes": 10.0,
       "total_intl_calls": 3.0, "total_intl_charge": 2.7, "number_customer_service_calls": 1.0}


def experiment(legacy_url: str, model_target: str, model_weight: float, **extra) -> dict:
    doc = {"name": "churn-it", "salt": "it-salt", "model_name": "churn",
           "arms": {"legacy": {"weight": round(1 - model_weight, 12), "backend": {"kind": "legacy_http", "url": legacy_url}},
                    "model": {"weight": model_weight, "backend": {"kind": "tfserving_grpc", "target": model_target, "model_name": "churn"}}}}
    doc.update(extra)
    return doc


@dataclass
class RouterProcess:
    process: Process
    http_port: int
    grpc_port: int
    config_path: Path
    ledger: str

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def grpc_target(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"

    def write_config(self, doc: dict) -> None:
        self.config_path.write_text(yaml.safe_dump(doc))

    def weights(self) -> dict:
        return httpx.get(f"{self.url}/v1/experiments/churn-it").json()["weights"]

    def metric(self, name: str, **labels) -> float:
        """The sum of a metric's samples whose labels include `labels`, read from /metrics."""
        from prometheus_client.parser import text_string_to_metric_families

        total = 0.0
        for family in text_string_to_metric_families(httpx.get(f"{self.url}/metrics").text):
            for s in family.samples:
                if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                    total += s.value
        return total


def start_router(tmp_path: Path, doc: dict, ports: tuple[int, int] | None = None, ledger: str | None = None,
                 ready_path: str = "/readyz") -> RouterProcess:
    """A router process for `doc` on free ports (or `ports`: HTTP, gRPC, e.g. to restart one in place).

    `ledger`: the outcome ledger's URL; by default a SQLite file of its own in `tmp_path` (never
    the working folder's default, which every test's routers would share). `ready_path`: what to
    wait for, `/healthz` for a router whose backends are not running (outcomes need none).
    """
    config_path = tmp_path / f"experiment-{free_port()}.yaml"
    config_path.write_text(yaml.safe_dump(doc))
    http_port, grpc_port = ports or (free_port(), free_port())
    ledger = ledger or f"sqlite:///{(tmp_path / f'outcomes-{http_port}.db').resolve()}"
    proc = Process(["router", "--config", str(config_path), "--host", "127.0.0.1", "--http-port", str(http_port),
                    "--grpc-port", str(grpc_port), "--watch-interval", "0.1", "--outcome-ledger", ledger],
                   tmp_path / f"router-{http_port}.log", env={"MODELRAMP_SIGNING_KEY": SIGNING_KEY, "MODELRAMP_WEIGHTS_TOKEN": TOKEN})
    router = RouterProcess(proc, http_port, grpc_port, config_path, ledger)
    wait_ready(proc, f"{router.url}{ready_path}", "router ready")
    return router


def grpc_inputs(n: int = 1) -> dict:
    """ROW as typed arrays for a PredictRequest: strings as bytes, numbers as float32 (the signature's dtypes)."""
    import numpy as np

    return {k: (np.array([v.encode()] * n, dtype=object) if isinstance(v, str) else np.full(n, v, dtype=np.float32)) for k, v in ROW.items()}
