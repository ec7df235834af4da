"""Session fixtures: a real trained model, a real model server and a real legacy system on loopback."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import pytest

from serving.model_server.model_config import render_model_config
from tests.support.processes import Process, free_port, port_open, wait_until

MODEL_NAME = "churn"
# A test needs TensorFlow when it uses a trained model or imports the model side at module level.
_TENSORFLOW_FIXTURES = {"models_dir"}
_TENSORFLOW_IMPORTS = ("serving.training", "serving.model_server.server", "serving.model_server.servable", "import tensorflow")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark TensorFlow-backed tests `tensorflow`, so `make test-fast` can leave them out."""
    sources: dict[Path, bool] = {}
    for item in items:
        path = Path(str(item.fspath))
        if path not in sources:
            text = path.read_text(errors="replace")
            sources[path] = any(name in text for name in _TENSORFLOW_IMPORTS)
        if sources[path] or _TENSORFLOW_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.tensorflow)


@pytest.fixture(scope="session")
def models_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Both candidate versions, trained for real once per session (or reused from MODELRAMP_TEST_MODELS)."""
    reuse = os.environ.get("MODELRAMP_TEST_MODELS")
    if reuse:
        return Path(reuse)
    from serving.training.train import train_all_versions

    out = tmp_path_factory.mktemp("models")
    train_all_versions(out)
    return out


@dataclass
class Server:
    process: Process
    grpc_port: int = 0
    rest_port: int = 0
    http_port: int = 0
    host: str = "127.0.0.1"  # where it is reached (it may listen on every address)

    @property
    def grpc_target(self) -> str:
        return f"{self.host}:{self.grpc_port}"

    @property
    def rest_url(self) -> str:
        return f"http://{self.host}:{self.rest_port}"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"




def start_model_server(models_dir: Path, log_dir: Path, *extra: str, both_versions: bool = True,
                       ports: tuple[int, int] | None = None, host: str | None = None) -> Server:
    """A model server process; by default both versions with labels stable=1, canary=2, on free ports.

    `host`: listen on that address only (another loopback address, 127.0.0.2, lets two servers share a port
    number, as the pods of one Deployment do); by default on every address, reached at 127.0.0.1.
    """
    grpc_port, rest_port = ports or (free_port(), free_port())
    if both_versions:
        config = log_dir / f"models-{grpc_port}.config"
        config.write_text(render_model_config(MODEL_NAME, (models_dir / MODEL_NAME).resolve(), [1, 2], {"stable": 1, "canary": 2}))
        model_flags = ["--model_config_file", str(config)]
    else:
        model_flags = ["--model_name", MODEL_NAME, "--model_base_path", str(models_dir / MODEL_NAME)]
    proc = Process(
        ["serve-model", "--port", str(grpc_port), "--rest_api_port", str(rest_port), *model_flags,
         *(("--host", host) if host else ()), *extra],
        log_dir / f"model-server-{grpc_port}.log",
    )
    server = Server(proc, grpc_port=grpc_port, rest_port=rest_port, host=host or "127.0.0.1")
    import httpx

    def ready() -> bool:
        r = httpx.get(f"{server.rest_url}/v1/models/{MODEL_NAME}", timeout=1.0)
        return r.status_code == 200 and all(v["state"] == "AVAILABLE" for v in r.json()["model_version_status"])

    try:
        wait_until(ready, timeout=120, what="model server ready", proc=proc.proc)
    except Exception:
        print(proc.log())
        proc.stop()
        raise
    return server


@pytest.fixture(scope="session")
def model_server(models_dir: Path, tmp_path_factory: pytest.TempPathFactory):
    """`modelramp serve-model` serving versions 1 and 2 (labels stable, canary) on free loopback ports."""
    server = start_model_server(models_dir, tmp_path_factory.mktemp("logs"))
    yield server
    server.process.stop()


def start_legacy(log_dir: Path) -> Server:
    port = free_port()
    proc = Process(["legacy", "--port", str(port)], log_dir / f"legacy-{port}.log")
    wait_until(lambda: port_open(port), timeout=60, what="legacy system listening", proc=proc.proc)
    return Server(proc, http_port=port)


@pytest.fixture(scope="session")
def legacy_server(tmp_path_factory: pytest.TempPathFactory):
    """`modelramp legacy` on a free loopback port."""
    server = start_legacy(tmp_path_factory.mktemp("logs"))
    yield server
    server.process.stop()
