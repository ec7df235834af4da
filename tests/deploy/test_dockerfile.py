"""The Dockerfile (it cannot be built here: no Docker engine) agrees with what the chart runs."""

from __future__ import annotations

import re

import yaml

from tests.deploy.manifests import CHART, REPO


def test_image_user_is_the_charts_numeric_non_root_user():
    text = (REPO / "Dockerfile").read_text()
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    (user,) = re.findall(r"^USER (\S+)$", text, re.M)
    uid = values["runAsUser"]
    assert user == f"{uid}:{uid}" and uid != 0
    assert f"--uid {uid}" in text


def test_image_runs_the_modelramp_console_script():
    text = (REPO / "Dockerfile").read_text()
    assert 'ENTRYPOINT ["modelramp"]' in text
    exposed = re.search(r"^EXPOSE (.+)$", text, re.M)
    assert exposed, "the Dockerfile exposes no port"
    for port in (8080, 8090, 8081):
        assert str(port) in exposed.group(1)
