"""README's command blocks run as written.

Every `modelramp` line of every fenced block parses with the real command line (a renamed flag
fails here). The blocks of "Known problems, version after version" and "Where the model fails, and
what produced it" run line by line in bash from a scratch folder that holds what they expect
beside them (`models`, linked to the trained models, and the repository's
`experiments/quality/example_problems.jsonl`), so their databases and reports land there. The
foreign legacy system's block runs with its port and key file moved into the scratch folder, on a
certificate made for the test. The first-request section has its own test
(tests/experiments/local/test_readme_first_request.py); `make`, `helm` and `grpcurl` lines are
covered by CI itself, the chart tests and tests/router/test_tfserving_surfaces.py.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from experiments.cli import build_parser
from tests.router.stack import ROW
from tests.support.processes import REPO, free_port, wait_until
from tests.support.tls import make_test_pki

README = (REPO / "README.md").read_text()
BIN = Path(sys.executable).parent  # the venv's `modelramp`, as a user's shell has it after `make demo`


def section_blocks(title: str) -> list[str]:
    """The fenced blocks of the README section `title`, in order."""
    assert f"\n## {title}\n" in README, f"the README has a section {title!r}"
    body = README.split(f"\n## {title}\n", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```\w*\n(.*?)```", body, re.S)


def command_lines(code: str) -> list[str]:
    """The block's commands: continuation lines joined, comments dropped."""
    joined = re.sub(r"\\\n\s*", " ", code)
    return [line.split("  #")[0].strip() for line in joined.splitlines() if line.strip() and not line.startswith("#")]


def every_modelramp_line() -> list[str]:
    return [line for code in re.findall(r"```\w*\n(.*?)```", README, re.S) for line in command_lines(code)
            if line.startswith("modelramp ")]


def shell(line: str, cwd: Path, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}", "PYTHONPATH": str(REPO)}
    return subprocess.run(["bash", "-euo", "pipefail", "-c", line], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=timeout)


@pytest.mark.parametrize("line", every_modelramp_line())
def test_every_modelramp_line_of_the_readme_parses(line):
    build_parser().parse_args(shlex.split(line)[1:])  # argparse exits (the test fails) on any unknown or bad flag


def test_the_readme_has_the_blocks_run_here():
    lines = every_modelramp_line()
    assert len(lines) >= 10, lines
    assert any(line.startswith("modelramp problems import") for line in lines)


@pytest.fixture
def scratch(models_dir, tmp_path) -> Path:
    (tmp_path / "models").symlink_to(models_dir, target_is_directory=True)
    examples = tmp_path / "experiments" / "quality"
    examples.mkdir(parents=True)
    (examples / "example_problems.jsonl").symlink_to(REPO / "experiments" / "quality" / "example_problems.jsonl")
    return tmp_path


@pytest.mark.slow
def test_known_problems_and_slices_blocks_run_as_written(scratch):
    problems = command_lines("".join(section_blocks("Known problems, version after version")))
    slices = command_lines("".join(section_blocks("Where the model fails, and what produced it")))
    assert [line.split()[1] for line in problems + slices] == ["problems", "problems", "evaluate", "problems", "slices",
                                                               "versions", "versions"]
    printed = {}
    for line in problems + slices:
        run = shell(line, scratch)
        assert run.returncode == 0, f"{line}\n{run.stdout[-2000:]}\n{run.stderr[-3000:]}"
        printed[line] = run.stdout
    # What the prose around the blocks says they leave behind.
    assert (scratch / "modelramp.db").is_file()
    assert (scratch / "reports" / "problems" / "churn-problems.png").stat().st_size > 10_000
    assert (scratch / "reports" / "slices.png").stat().st_size > 10_000
    shown = next(out for line, out in printed.items() if line.startswith("modelramp problems show"))
    assert "international-plan churners missed" in shown
    (version,) = json.loads(printed["modelramp versions --version 2 --json"])["versions"]
    # The training record of version 2, read with the database the commands above wrote (no gate run, no live experiment yet).
    assert version["version"] == 2 and version["training"] and version["gate_runs"] == [] and version["live"] == []


def test_the_foreign_legacy_block_runs_as_written(tmp_path):
    (block,) = [code for code in section_blocks("Fronting your own legacy system") if "modelramp legacy --api foreign" in code]
    key_line, serve_line = command_lines(block)
    assert key_line == "echo -n 's3cret' > /tmp/api-key" and serve_line.startswith("modelramp legacy --api foreign --port 8443 ")
    pki = make_test_pki(tmp_path)  # server.pem and server.key, as the block names them, in the folder it runs from
    key_file, port = tmp_path / "api-key", free_port()  # not the machine's /tmp/api-key nor its port 8443
    assert shell(key_line.replace("/tmp/api-key", str(key_file)), tmp_path).returncode == 0
    line = serve_line.replace("/tmp/api-key", str(key_file)).replace("--port 8443", f"--port {port}")
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}", "PYTHONPATH": str(REPO)}
    with (tmp_path / "legacy.log").open("w") as log:
        proc = subprocess.Popen(["bash", "-c", f"exec {line}"], cwd=tmp_path, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        with httpx.Client(base_url=f"https://127.0.0.1:{port}", verify=pki.client_context(with_certificate=False), timeout=5) as http:
            wait_until(lambda: http.get("/status").status_code == 200, timeout=60, what="the foreign legacy system over HTTPS", proc=proc)
            row = ROW
            assert http.post("/api/v2/score", json={"customers": [row]}).status_code == 401, "no key, no tenant"
            assert http.post("/api/v2/score", json={"customers": [row]}, headers={"X-Api-Key": "s3cret"}).status_code == 401
            r = http.post("/api/v2/score", json={"customers": [row]}, headers={"X-Api-Key": "s3cret", "X-Tenant": "acme"})
            assert r.status_code == 200 and len(r.json()["results"]) == 1, r.text
    finally:
        proc.terminate()
        proc.wait(30)
