"""The legacy backend's configuration: today's form still loads, every misconfiguration is refused naming its field."""

from __future__ import annotations

import copy
import re
from pathlib import Path

import pytest

from experiments.config import EXAMPLE_CONFIG
from experiments.config import load_config as load_experiment
from router.backends import make_backend
from router.backends.legacy_http import LegacyHttpBackend
from router.config import ConfigError, LegacyHttpSpec, dump_config, load_config, parse_config

BASE = {"name": "churn-it", "salt": "s", "model_name": "churn",
        "arms": {"legacy": {"weight": 0.9, "backend": {"kind": "legacy_http", "url": "http://127.0.0.1:8081"}},
                 "model": {"weight": 0.1, "backend": {"kind": "tfserving_grpc", "target": "127.0.0.1:8500", "model_name": "churn"}}}}


def with_legacy(**fields) -> dict:
    doc = copy.deepcopy(BASE)
    doc["arms"]["legacy"]["backend"].update(fields)
    return doc


def test_todays_form_loads_with_todays_behaviour():
    spec = parse_config(BASE).arms.legacy.backend
    assert (spec.path, spec.method, spec.health.path, spec.health.expect_status) == ("/v1/predict", "POST", "/healthz", 200)
    assert spec.request is None and spec.response is None and spec.headers == {} and spec.forward_headers == [] and spec.tls is None
    assert load_experiment(EXAMPLE_CONFIG).arms.legacy.backend.url == "http://127.0.0.1:8081"


def test_a_full_mapped_backend_loads_and_survives_a_round_trip(tmp_path):
    doc = with_legacy(url="https://scoring.internal:8443", path="/api/v2/score", method="PUT",
                      health={"path": "/status", "expect_status": 204},
                      headers={"X-Api-Key": {"file": "/var/run/secrets/legacy/api-key"}, "X-Client": "modelramp"},
                      forward_headers=["Authorization", "X-Tenant"],
                      tls={"ca_file": "/etc/legacy/ca.pem", "cert_file": "/etc/legacy/tls.crt", "key_file": "/etc/legacy/tls.key"},
                      request="{customers: instances}", response={"probability": "results[*].churn_score"}, timeout_ms=300)
    config = parse_config(doc)
    path = tmp_path / "e.yaml"
    path.write_text(dump_config(config))
    again = load_config(path)
    assert again == config, "what the ramp controller writes back is the same configuration"
    assert again.with_weights({"legacy": 0.8, "model": 0.2}).arms.legacy.backend == config.arms.legacy.backend


MISCONFIGURED = [
    (with_legacy(request="{customers: instances"), "arms.legacy.backend.request", "not a JMESPath expression"),
    (with_legacy(response={"probability": "results[*].churn_score[", "other": "a"}), "arms.legacy.backend.response",
     "output 'probability': not a JMESPath expression"),
    (with_legacy(response={"probability": "results[?score > `0.5`"}), "arms.legacy.backend.response", "not a JMESPath"),
    (with_legacy(response={}), "arms.legacy.backend.response", "at least one model output"),
    (with_legacy(response={"probability": 3}), "arms.legacy.backend.response.probability", "string"),
    (with_legacy(response="results[*].churn_score"), "arms.legacy.backend.response", "dictionary"),
    (with_legacy(url="ftp://scoring.internal"), "arms.legacy.backend.url", "http:// or https:// URL with a host"),
    (with_legacy(url="scoring.internal:8443"), "arms.legacy.backend.url", "http:// or https:// URL with a host"),
    (with_legacy(path="api/v2/score"), "arms.legacy.backend.path", "pattern"),
    (with_legacy(method="GET"), "arms.legacy.backend.method", "'POST' or 'PUT'"),
    (with_legacy(health={"path": "/status", "expect_status": 999}), "arms.legacy.backend.health.expect_status", "less than or equal"),
    (with_legacy(health={"path": "/status", "method": "HEAD"}), "arms.legacy.backend.health.method", "Extra inputs"),
    (with_legacy(headers={"Content-Length": "3"}), "arms.legacy.backend.headers", "set by the router itself"),
    (with_legacy(headers={"X Api Key": "k"}), "arms.legacy.backend.headers", "not an HTTP header name"),
    (with_legacy(headers={"X-Api-Key": "k\r\nX-Evil: 1"}), "arms.legacy.backend.headers", "one line of ASCII"),
    (with_legacy(headers={"X-Api-Key": "a", "x-api-key": "b"}), "arms.legacy.backend.headers", "given twice"),
    (with_legacy(headers={"X-Api-Key": {"path": "/x"}}), "arms.legacy.backend.headers", "a string or {file: PATH}"),
    (with_legacy(headers={"X-Retries": 3}), "arms.legacy.backend.headers", "a string or {file: PATH}, got 3"),
    (with_legacy(forward_headers=["X-Tenant", "x-tenant"]), "arms.legacy.backend.forward_headers", "named twice"),
    (with_legacy(forward_headers=["Host"]), "arms.legacy.backend.forward_headers", "set by the router itself"),
    (with_legacy(forward_headers=["X-Api-Key"], headers={"X-Api-Key": "k"}), "arms.legacy.backend", "comes from one place"),
    (with_legacy(tls={"ca_file": "/ca.pem"}), "arms.legacy.backend", "not https://"),
    (with_legacy(url="https://h:1", tls={"key_file": "/k.pem"}), "arms.legacy.backend.tls", "key_file needs cert_file"),
    (with_legacy(url="https://h:1", tls={"ca_file": "/ca.pem", "verify": False}), "arms.legacy.backend.tls", "ca_file is not used"),
    (with_legacy(url="https://h:1", tls={"verfy": False}), "arms.legacy.backend.tls.verfy", "Extra inputs"),
    (with_legacy(timeout_ms=0), "arms.legacy.backend.timeout_ms", "greater than 0"),
    (with_legacy(mapping="x"), "arms.legacy.backend.mapping", "Extra inputs"),
]


@pytest.mark.parametrize(("doc", "field", "words"), MISCONFIGURED, ids=[f"{n}-{m[1].rsplit('.', 1)[-1]}" for n, m in enumerate(MISCONFIGURED)])
def test_a_misconfiguration_is_refused_at_load_naming_the_field(doc, field, words):
    with pytest.raises(ConfigError) as refused:
        parse_config(doc)
    message = str(refused.value)
    assert f"{field}: " in message and words in message, message


def test_files_are_read_when_the_backend_is_built_and_named_when_they_cannot_be(tmp_path):
    secret = tmp_path / "api-key"
    secret.write_text("k-123\n")
    spec = LegacyHttpSpec(headers={"X-Api-Key": {"file": str(secret)}, "X-Client": "modelramp"})
    backend = make_backend(spec)
    assert isinstance(backend, LegacyHttpBackend)
    assert backend._static == b"X-Api-Key: k-123\r\nX-Client: modelramp\r\n"

    cases = [
        (LegacyHttpSpec(headers={"X-Api-Key": {"file": str(tmp_path / "absent")}}), "arms.legacy.backend.headers.X-Api-Key.file", "absent"),
        (LegacyHttpSpec(headers={"X-Api-Key": {"file": str(tmp_path)}}), "arms.legacy.backend.headers.X-Api-Key.file", "cannot read"),
        (LegacyHttpSpec(url="https://h:1", tls={"ca_file": str(tmp_path / "ca.pem")}), "arms.legacy.backend.tls.ca_file", "ca.pem"),
        (LegacyHttpSpec(url="https://h:1", tls={"ca_file": str(secret)}), "arms.legacy.backend.tls.ca_file", "cannot load"),
        (LegacyHttpSpec(url="https://h:1", tls={"cert_file": str(secret)}), "arms.legacy.backend.tls.cert_file", "cannot load"),
    ]
    two_lines = tmp_path / "two-lines"
    two_lines.write_text("a\nb\n")
    cases.append((LegacyHttpSpec(headers={"X-Api-Key": {"file": str(two_lines)}}), "headers.X-Api-Key.file", "one non-empty line"))
    empty = tmp_path / "empty"
    empty.write_text("\n")
    cases.append((LegacyHttpSpec(headers={"X-Api-Key": {"file": str(empty)}}), "headers.X-Api-Key.file", "one non-empty line"))
    for spec, field, words in cases:
        with pytest.raises(ConfigError) as refused:
            make_backend(spec)
        assert field in str(refused.value) and words in str(refused.value), str(refused.value)


def test_an_https_backend_without_tls_trusts_the_system_store_and_checks_host_names():
    backend = make_backend(LegacyHttpSpec(url="https://scoring.internal:8443"))
    assert isinstance(backend, LegacyHttpBackend) and backend._ssl is not None
    assert backend._ssl.check_hostname and backend._ssl.verify_mode.name == "CERT_REQUIRED"
    relaxed = make_backend(LegacyHttpSpec(url="https://scoring.internal:8443", tls={"verify": False}))
    assert isinstance(relaxed, LegacyHttpBackend) and relaxed._ssl is not None and not relaxed._ssl.check_hostname
    plain = make_backend(LegacyHttpSpec())
    assert isinstance(plain, LegacyHttpBackend) and plain._ssl is None



def test_the_readmes_example_is_a_valid_experiment_file():
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    section = readme.split("## Fronting your own legacy system", 1)[1].split("\n## ", 1)[0]
    example = re.search(r"```yaml\n(.*?)```", section, re.S)
    assert example is not None, "the section shows a complete experiment file"
    import yaml

    backend = parse_config(yaml.safe_load(example.group(1))).arms.legacy.backend
    assert backend.response == {"probability": "results[*].churn_score"} and backend.tls is not None and backend.forward_headers


def test_a_reload_whose_secret_cannot_be_read_is_rejected_and_the_config_in_force_stays(tmp_path, caplog):
    from router.core import Router
    from router.reload import ConfigFile
    from router.signing import Signer

    secret = tmp_path / "api-key"
    secret.write_text("k-1")
    path = tmp_path / "exp.yaml"
    path.write_text(dump_config(parse_config(with_legacy(headers={"X-Api-Key": {"file": str(secret)}}))))
    source = ConfigFile(path, settle_seconds=0)  # one look per file: the reload itself is test_reload's
    router = Router(source.load(), signer=Signer(b"k"))
    assert not source.check(router)
    before = router.state

    path.write_text(dump_config(parse_config(with_legacy(headers={"X-Api-Key": {"file": str(tmp_path / "rotated-away")}}))))
    caplog.set_level("ERROR", logger="router")
    assert not source.check(router), "the new file is valid, but its backend cannot be built"
    assert router.state is before, "the configuration in force stays, with its backends"
    assert "headers.X-Api-Key.file" in caplog.text and "rotated-away" in caplog.text
    assert router.metrics.registry.get_sample_value("modelramp_config_reloads_total", {"source": "file", "result": "rejected"}) == 1
