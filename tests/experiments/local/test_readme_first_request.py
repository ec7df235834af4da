"""README's "First request" section, executed as written against a real `modelramp up`.

The section's fenced blocks are taken from README.md itself: the curl commands run in bash and the
Python block in this interpreter, from the folder `up` was started in, with only the router's
ports moved to the free ones of this stack (8080 and 8090 may be taken on a shared machine). The
output the README shows under each command (`# ...` lines) must be what the command prints, the
signed outcome id aside, which changes with every request. The `modelramp` commands of the section
run with no flags at all: they find the stack through `.modelramp/up.json`.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys

import httpx
import pytest

from tests.experiments.local.up_stack import UpStack, modelramp_up
from tests.support.processes import REPO
from tests.test_cli import TENSORFLOW_NOISE

SECTION = "## First request, against `modelramp up`"
OUTCOME_ID = re.compile(r"churn-v2-vs-legacy\.(legacy|model)\.\d+\.\d+\.[\w-]+\.[0-9a-f]+\.[\w-]+")

pytestmark = pytest.mark.slow


def blocks() -> list[tuple[str, str]]:
    """The section's fenced blocks, (language, code), in order."""
    text = (REPO / "README.md").read_text()
    assert SECTION in text, "the README has its first-request section"
    body = text.split(SECTION, 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```(\w+)\n(.*?)```", body, re.S)


def shown_output(code: str) -> list[str]:
    """What the README says a block prints: its comment lines that stand alone, after the commands."""
    return [line[2:] for line in code.splitlines() if line.startswith("# ")]


def on_stack(code: str, up: UpStack) -> str:
    return code.replace("127.0.0.1:8080", f"127.0.0.1:{up.router_port}").replace("127.0.0.1:8090", f"127.0.0.1:{up.router_grpc_port}")


def assert_prints(shown: list[str], printed: list[str]) -> list[str]:
    """Each line as shown, an outcome id matching its form; the outcome ids printed."""
    assert len(printed) == len(shown), printed
    ids = []
    for want, got in zip(shown, printed, strict=True):
        if OUTCOME_ID.search(want):
            assert OUTCOME_ID.fullmatch(got.split()[-1]), got
            assert OUTCOME_ID.sub("ID", want) == OUTCOME_ID.sub("ID", got)
            ids.append(got.split()[-1])
        else:
            assert got == want
    return ids


@pytest.fixture(scope="module")
def up(models_dir, tmp_path_factory):
    with modelramp_up(models_dir, tmp_path_factory.mktemp("first-request")) as stack:
        yield stack


def test_the_section_shows_rest_outcome_grpc_and_the_commands():
    kinds = [kind for kind, _ in blocks()]
    assert kinds == ["sh", "sh", "python", "sh"]
    predict, outcome, grpc_block, commands = (code for _, code in blocks())
    assert "X-Unit-Id: customer-4711" in predict and '{"instances": [{' in predict
    assert "/v1/outcomes" in outcome and '\\"request_id\\"' in outcome and '\\"success\\": true' in outcome
    assert "tensorflow_serving.apis" in grpc_block and "trailing_metadata()" in grpc_block
    assert [line.split()[1] for line in commands.splitlines()] == ["analyze", "skew", "ramp", "versions"]


def test_curl_predict_and_outcome_report_as_written(up):
    rest = [code for kind, code in blocks() if kind == "sh" and "curl" in code]
    script = "\n".join(on_stack(code, up) for code in rest)
    run = subprocess.run(["bash", "-euo", "pipefail", "-c", script], cwd=up.folder, env=up.env(),
                         capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    printed = run.stdout.splitlines()
    ids = assert_prints([line for code in rest for line in shown_output(code)], printed)
    predictions = json.loads(printed[0])["predictions"]
    assert len(predictions) == 1 and 0.0 <= predictions[0] <= 1.0
    assert printed[1].startswith("HTTP/1.1 200")
    arm = printed[2].split(": ")[1]
    assert ids and ids[0].split(".")[1] == arm, "the outcome id is the answering arm's"
    assert json.loads(printed[-1]) == {"accepted": 1, "duplicates": 0}, "the outcome is accepted once"


def test_grpc_with_the_official_stubs_as_written(up):
    (code,) = (code for kind, code in blocks() if kind == "python")
    run = subprocess.run([sys.executable, "-c", on_stack(code, up)], cwd=up.folder, env=up.env(),
                         capture_output=True, text=True, timeout=180)
    assert run.returncode == 0, run.stderr[-3000:]
    (outcome_id,) = assert_prints(shown_output(code), run.stdout.splitlines())
    # The id from the trailing metadata is one the router takes as an outcome report.
    answer = httpx.post(f"http://127.0.0.1:{up.router_port}/v1/outcomes", json={"request_id": outcome_id, "success": False},
                        timeout=10, trust_env=False)
    assert answer.status_code == 200 and answer.json() == {"accepted": 1, "duplicates": 0}


def test_the_commands_run_without_flags_beside_up(up):
    (commands,) = (code for kind, code in blocks() if kind == "sh" and "curl" not in code)
    state = up.state
    for line in commands.splitlines():
        command = line.split("#")[0].split()
        run = subprocess.run(command, cwd=up.folder, env=up.env(), capture_output=True, text=True, timeout=180)
        assert run.returncode == 0, f"{line}: {run.stderr[-2000:]}"
        said = f"modelramp {command[1]}: from the running `modelramp up` (pid {state['pid']}"
        assert said in run.stderr, run.stderr
        if command[1] in ("analyze", "ramp"):
            assert f"source Prometheus {state['prometheus_url']}" in run.stderr or not state["prometheus_url"]
            assert f"config {state['config']}" in run.stderr
        if command[1] == "analyze":
            assert state["experiment"] in run.stdout
        if command[1] == "skew":
            assert f"baseline {state['baseline']}" in run.stderr and "total_day_minutes" in run.stdout
        if command[1] == "ramp":
            assert f"db {state['db']}" in run.stderr and "stage    1%" in run.stdout
        if command[1] == "versions":
            assert f"db {state['db']}" in run.stderr and "churn/2" in run.stdout
    # The decision `ramp` just recorded is the served version's live result, with no --db.
    run = subprocess.run(["modelramp", "versions", "--version", "2", "--json"], cwd=up.folder, env=up.env(),
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    (version,) = json.loads(run.stdout)["versions"]
    assert [e["experiment"] for e in version["live"]] == [state["experiment"]]


def test_a_flag_wins_over_the_running_up(up):
    router = f"http://127.0.0.1:{up.router_port}"
    run = subprocess.run(["modelramp", "analyze", "--metrics-url", router, "--json"], cwd=up.folder, env=up.env(),
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    assert "from the running `modelramp up`" not in run.stderr
    # The packaged example configures the same experiment, read here through the router.
    assert json.loads(run.stdout)["experiment"] == up.state["experiment"]
    run = subprocess.run(["modelramp", "versions", "--db", str(up.folder / "elsewhere.db"), "--models", up.state["models"], "--json"], cwd=up.folder,
                         env=up.env(), capture_output=True, text=True, timeout=120)
    assert run.returncode == 0 and "from the running" not in run.stderr
    doc = json.loads(run.stdout)
    assert doc["database"] is None and doc["versions"][1]["live"] is None and not (up.folder / "elsewhere.db").exists()


def test_up_and_its_model_server_print_no_tensorflow_start_up_lines(up):
    # `up`'s terminal carries every child's output: the model server's TensorFlow start included.
    log = up.child.log()
    assert "modelramp model server: gRPC on" in log and "modelramp is up" in log
    noisy = [line for line in log.splitlines() if any(word in line for word in TENSORFLOW_NOISE)]
    assert noisy == []
