"""Version handling: polling picks up new versions, a broken one never replaces a working one."""

import shutil

import httpx
import pytest

from serving.model_server.model_config import parse_model_config
from serving.tfserving.errors import InvalidArgument
from serving.training.dataset import NUMERIC
from tests.conftest import start_model_server
from tests.support.processes import wait_until


def versions(server) -> dict[str, dict]:
    body = httpx.get(f"{server.rest_url}/v1/models/churn", timeout=5).json()
    return {v["version"]: v for v in body["model_version_status"]}


@pytest.fixture
def polled_server(models_dir, tmp_path):
    base = tmp_path / "models"
    (base / "churn").mkdir(parents=True)
    shutil.copytree(models_dir / "churn" / "1", base / "churn" / "1")
    server = start_model_server(base, tmp_path, "--file_system_poll_wait_seconds", "0.2", both_versions=False)
    yield server, base / "churn"
    server.process.stop()


def test_new_version_is_served_without_restart_and_broken_one_is_reported(polled_server, models_dir):
    server, base = polled_server
    assert {v: s["state"] for v, s in versions(server).items()} == {"1": "AVAILABLE"}

    # A broken version 5: reported with its error, version 1 keeps serving.
    (base / "5").mkdir()
    (base / "5" / "saved_model.pb").write_bytes(b"not a saved model")
    wait_until(lambda: versions(server).get("5", {}).get("state") == "END", timeout=60, what="broken version reported")
    status = versions(server)
    assert status["5"]["status"]["error_code"] != "OK" and "failed to load" in status["5"]["status"]["error_message"]
    assert status["1"]["state"] == "AVAILABLE"
    meta = httpx.get(f"{server.rest_url}/v1/models/churn/metadata", timeout=5).json()
    assert meta["model_spec"]["version"] == "1"

    # A good version 3 is picked up and, being the latest, replaces version 1.
    shutil.rmtree(base / "5")
    shutil.copytree(models_dir / "churn" / "2", base / "3")
    wait_until(lambda: versions(server).get("3", {}).get("state") == "AVAILABLE", timeout=60, what="version 3 loaded")
    wait_until(lambda: versions(server)["1"]["state"] == "END", timeout=30, what="version 1 unloaded")
    assert server.process.proc.poll() is None


def test_model_config_file_is_validated():
    with pytest.raises(InvalidArgument, match="not a valid ModelServerConfig"):
        parse_model_config("model_config_list { config { nme: 'x' } }")
    with pytest.raises(InvalidArgument, match="name and a base_path"):
        parse_model_config("model_config_list { config { name: 'x' } }")
    with pytest.raises(InvalidArgument, match="point at versions"):
        parse_model_config("model_config_list { config { name: 'x' base_path: '/m' "
                           "model_version_policy { specific { versions: 1 } } version_labels { key: 'a' value: 2 } } }")
    sources = parse_model_config("model_config_list { config { name: 'a' base_path: '/m/a' } "
                                 "config { name: 'b' base_path: '/m/b' model_version_policy { all {} } } }")
    assert [(s.name, s.policy) for s in sources] == [("a", "latest"), ("b", "all")]


def test_bad_flags_and_busy_ports_are_clear_errors(tmp_path, models_dir):
    from experiments.cli import main

    assert main(["serve-model", "--model_base_path", str(tmp_path / "missing")]) == 2
    assert main(["serve-model", "--tensorflow_intra_op_parallelism", "-1", "--model_base_path", str(models_dir / "churn")]) == 2
    # TF Serving's threading flags are accepted and the server answers with them.
    server = start_model_server(models_dir, tmp_path, "--tensorflow_intra_op_parallelism", "1",
                                "--tensorflow_inter_op_parallelism", "1")
    try:
        row = {"instances": [dict.fromkeys(("state", "area_code", "international_plan", "voice_mail_plan"), "x")
                             | dict.fromkeys(NUMERIC, 1.0)]}
        assert httpx.post(f"{server.rest_url}/v1/models/churn:predict", json=row, timeout=10).status_code == 200
        assert main(["serve-model", "--port", str(server.grpc_port), "--rest_api_port", "0",
                     "--model_base_path", str(models_dir / "churn")]) == 2
    finally:
        server.process.stop()
