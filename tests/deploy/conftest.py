"""The live stack (real routers, real Prometheus) shared by the dashboard and alert checks of this folder."""

from __future__ import annotations

import pytest

from tests.deploy import live


@pytest.fixture(scope="session")
def live_stack(models_dir, model_server, legacy_server, tmp_path_factory):
    from serving.training.dataset import read_split, to_instances

    rows = to_instances(read_split(models_dir / "data", "test"))
    stack = live.start(tmp_path_factory.mktemp("live-routers"), models_dir, model_server.grpc_target, legacy_server.url, rows)
    yield stack
    stack.close()
