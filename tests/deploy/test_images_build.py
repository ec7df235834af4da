"""The image build script's smoke step fails a broken image, and the base install is what the router image needs.

The images themselves are built and smoke-tested by `scripts/build_images.sh` in .ci/run (minutes, not a
test); here a broken router image is a few kilobytes made from scratch, so the check costs seconds.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.deploy.manifests import REPO
from tests.support.binaries import require_binary
from tests.support.processes import free_port

BUILDAH_ENV = {**os.environ, "STORAGE_DRIVER": "vfs", "BUILDAH_ISOLATION": "chroot", "PY": sys.executable}


def buildah(*args: str) -> str:
    return subprocess.run(["buildah", *args], check=True, capture_output=True, text=True, env=BUILDAH_ENV).stdout.strip()


@pytest.fixture
def scratch_image(request) -> Iterator[str]:
    """A tiny image from scratch with the config given by the test's parameter (user, entrypoint)."""
    require_binary("buildah", "buildah")
    user, entrypoint = request.param
    name = f"localhost/modelramp-broken-{os.getpid()}:test"
    ctr = buildah("from", "scratch")
    config = ["--user", user, "--cmd", '["router", "--config", "/etc/modelramp/experiment.yaml"]']
    if entrypoint:
        config += ["--entrypoint", entrypoint]
    buildah("config", *config, ctr)
    buildah("commit", "--quiet", "--rm", ctr, name)
    try:
        yield name
    finally:
        buildah("rmi", "-f", name)


@pytest.mark.parametrize(("scratch_image", "reason"), [(("10001:10001", None), "has no entrypoint"),
                                                        (("0", '["modelramp"]'), "runs as user '0'")],
                         indirect=["scratch_image"])
def test_the_smoke_step_fails_a_router_image_that_cannot_run_as_the_chart_runs_it(scratch_image, reason):
    done = subprocess.run(["bash", "scripts/build_images.sh", "smoke", "--router", scratch_image, "--controller", scratch_image],
                          cwd=REPO, env=BUILDAH_ENV, capture_output=True, text=True, timeout=120)
    assert done.returncode != 0
    assert f"image {scratch_image} {reason}" in done.stderr
    assert "smoke: FAILED" in done.stderr and "served REST and gRPC" not in done.stdout
    # Refused before any backend started: no model server, no legacy system (each takes seconds to start).
    assert "router from" not in done.stdout


def test_the_smoke_step_fails_an_image_that_does_not_exist():
    require_binary("buildah", "buildah")
    done = subprocess.run(["bash", "scripts/build_images.sh", "smoke", "--router", "localhost/modelramp-no-such-image:0"],
                          cwd=REPO, env=BUILDAH_ENV, capture_output=True, text=True, timeout=120)
    assert done.returncode != 0 and "no image localhost/modelramp-no-such-image:0" in done.stderr


def _get(url: str) -> int:
    try:
        return httpx.get(url, timeout=2, trust_env=False).status_code
    except httpx.HTTPError:
        return 0


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_a_plain_install_has_no_tensorflow_and_runs_the_router_the_legacy_system_and_the_ramp_help(tmp_path: Path):
    """`pip install .` into a fresh venv: what a router pod gets, without the model side."""
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    bin_dir = venv / "bin"
    subprocess.run([str(bin_dir / "python"), "-m", "pip", "install", "--quiet", str(REPO)], check=True, timeout=540)
    installed = subprocess.run([str(bin_dir / "python"), "-m", "pip", "list", "--format=freeze"], check=True,
                               capture_output=True, text=True).stdout.lower()
    names = {line.split("==")[0] for line in installed.split()}
    assert not names & {"tensorflow", "tensorflow-serving-api", "keras", "scipy", "pandas", "statsmodels", "matplotlib"}
    modelramp = str(bin_dir / "modelramp")
    for args in (["router", "--help"], ["ramp", "--help"]):
        done = subprocess.run([modelramp, *args], capture_output=True, text=True, timeout=60)
        assert done.returncode == 0 and "usage: modelramp" in done.stdout, done.stderr
    # The controller's own dependencies are an extra: one line says which.
    done = subprocess.run([modelramp, "ramp", "--once", "--dry-run", "--db", str(tmp_path / "audit.db")],
                          capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert (done.returncode, done.stderr) == (2, "modelramp ramp needs the [controller] extra: pip install 'modelramp[controller]'\n")
    port = free_port()
    log = tmp_path / "legacy.log"
    with open(log, "wb") as out:
        legacy = subprocess.Popen([modelramp, "legacy", "--host", "127.0.0.1", "--port", str(port)], stdout=out, stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + 60
            while _get(f"http://127.0.0.1:{port}/healthz") != 200:  # polled: the server says nothing when it is ready
                assert legacy.poll() is None, log.read_text()
                assert time.monotonic() < deadline, f"the legacy system did not answer within 60 s:\n{log.read_text()}"
                time.sleep(0.2)
        finally:
            legacy.terminate()
            legacy.wait(30)
