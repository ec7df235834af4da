"""A model that answers NaN: the router never passes it on, falls back to legacy and counts it (Monitor 5)."""

from __future__ import annotations

from types import SimpleNamespace

import httpx
import numpy as np
import pytest

from router.backends import NonFiniteOutput, Prediction, check_finite
from tests.conftest import start_model_server
from tests.router.stack import ROW, experiment, start_router


def test_check_finite_names_the_output():
    check_finite(Prediction({"probability": np.array([[0.2]], dtype=np.float32), "label": np.array([b"x"], dtype=object)}))
    with pytest.raises(NonFiniteOutput, match=r"'probability' has 2 NaN or infinite value\(s\) of 3"):
        check_finite(Prediction({"probability": np.array([0.1, np.nan, np.inf], dtype=np.float32)}))


class _Dense:
    """What `serving.training.export` reads of a Keras Dense layer."""

    def __init__(self, kernel: np.ndarray, bias: np.ndarray):
        self._weights = [kernel, bias]

    def get_weights(self):
        return self._weights

    def get_config(self):
        return {"activation": "sigmoid"}


@pytest.fixture(scope="module")
def nan_model_server(models_dir, tmp_path_factory):
    """The real model server serving a real SavedModel with the churn signature whose weights are NaN."""
    from serving.training import dataset
    from serving.training.encoding import Encoder
    from serving.training.export import export_saved_model

    out = tmp_path_factory.mktemp("nan-models")
    encoder = Encoder.fit(dataset.read_split(models_dir / "data", "train"))
    kernel = np.full((encoder.width, 1), np.nan, dtype=np.float32)
    export_saved_model(encoder, SimpleNamespace(layers=[_Dense(kernel, np.zeros(1, np.float32))]), out / "churn" / "1")
    server = start_model_server(out, out, both_versions=False)
    yield server
    server.process.stop()


def test_a_nan_answer_falls_back_to_legacy_and_is_counted(tmp_path, nan_model_server, legacy_server):
    router = start_router(tmp_path, experiment(f"{legacy_server.url}", nan_model_server.grpc_target, 1.0))
    try:
        for i in range(3):
            r = httpx.post(f"{router.url}/v1/models/churn:predict", json={"instances": [ROW]},
                           headers={"X-Unit-Id": f"u{i}"}, timeout=5)
            assert r.status_code == 200, r.text
            prob = r.json()["predictions"][0]
            value = prob["probability"] if isinstance(prob, dict) else prob
            assert np.isfinite(np.asarray(value, dtype=float)).all()
            assert r.headers["X-Modelramp-Arm"] == "model"
        assert router.metric("modelramp_backend_errors_total", arm="model", reason="non_finite") >= 1
        assert router.metric("modelramp_fallbacks_total", arm="model") == 3
    finally:
        router.process.stop()
