"""The images' recipe agrees with the chart, the extras and the lock files (nothing here builds an image).

Building and running them is tests/deploy/test_images_build.py and `scripts/build_images.sh` (.ci/run).
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
import tomllib
import yaml
from packaging.requirements import Requirement

from tests.deploy.manifests import CHART, REPO, pod_specs, render

CONTAINERFILE = (REPO / "Containerfile").read_text()
PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
VALUES = yaml.safe_load((CHART / "values.yaml").read_text())
LOCKS = {name: REPO / "requirements" / f"{name}.lock" for name in ("router", "controller", "model", "dev")}
MODEL_SIDE = {"tensorflow", "tensorflow-serving-api", "keras", "pandas", "statsmodels", "matplotlib", "scikit-learn"}


def lock_pins(name: str) -> dict[str, str]:
    """Distribution name (normalised) -> pinned version, from a lock file; every pin must carry hashes."""
    text = LOCKS[name].read_text()
    pins = {}
    for block in re.split(r"\n(?=[A-Za-z0-9])", text):
        head = re.match(r"([A-Za-z0-9._-]+)(?:\[[^\]]*\])?==([^\s;\\]+)", block)
        if head is None:
            continue
        assert "--hash=sha256:" in block, f"{name}.lock pins {head.group(1)} without a hash"
        pins[re.sub(r"[-_.]+", "-", head.group(1)).lower()] = head.group(2)
    return pins


def requirements(*extras: str) -> list[Requirement]:
    reqs = [Requirement(r) for r in PYPROJECT["dependencies"]]
    for extra in extras:
        reqs += [Requirement(r) for r in PYPROJECT["optional-dependencies"][extra]]
    return [r for r in reqs if r.name != "modelramp" and (r.marker is None or r.marker.evaluate())]


def stage(target: str) -> str:
    """The Containerfile's text of one stage (FROM ... AS target up to the next FROM)."""
    match = re.search(rf"^FROM \S+ AS {target}\n(.*?)(?=^FROM |\Z)", CONTAINERFILE, re.M | re.S)
    assert match, f"no stage {target} in the Containerfile"
    return match.group(1)


@pytest.mark.parametrize("target", ["router", "controller", "model"])
def test_each_image_runs_the_console_script_as_the_charts_numeric_non_root_user(target):
    text = stage(target)
    uid = VALUES["runAsUser"]
    assert uid != 0
    assert re.search(rf"^USER {uid}:{uid}$", text, re.M), f"{target} does not run as {uid}"
    assert 'ENTRYPOINT ["modelramp"]' in text
    assert f"modelramp:x:{uid}:{uid}:" in stage("runtime"), "the user is not in /etc/passwd"


def test_the_router_image_exposes_the_router_and_legacy_ports():
    exposed = re.search(r"^EXPOSE (.+)$", stage("router"), re.M)
    assert exposed and set(exposed.group(1).split()) == {"8080", "8090", "8081"}


def test_the_base_is_an_argument_whose_default_is_pinned_by_digest():
    (default,) = re.findall(r"^ARG BASE=(\S+)$", CONTAINERFILE, re.M)
    assert re.fullmatch(r"python:3\.11-slim[\w.-]*@sha256:[0-9a-f]{64}", default)
    assert all(line.split()[1] in ("${BASE}", *re.findall(r"AS (\S+)", CONTAINERFILE))
               for line in re.findall(r"^FROM .+$", CONTAINERFILE, re.M)), "a stage starts from an unpinned image"


def test_each_image_installs_only_its_lock_with_hashes_and_no_index():
    for target in ("router", "controller", "model"):
        text = stage(f"{target}-venv")
        assert f"-r /src/requirements/{target}.lock" in text and "--require-hashes" in text
        assert text.count("--no-index") == 2, f"{target}: every pip install must be offline"
        assert f"RUN --mount=type=bind,source=build/images/wheels/{target},target=/wheels" in text, "the wheels must stay out of every layer"


def test_the_images_write_nothing_outside_tmp_at_run_time():
    env = stage("runtime")
    assert "PYTHONDONTWRITEBYTECODE=1" in env and "HOME=/tmp" in env and "MPLCONFIGDIR=/tmp/" in env


def test_tf_serving_and_the_tensorflow_used_for_export_are_the_same_minor():
    tag = VALUES["tfserving"]["image"]["tag"]
    serving_minor = tuple(int(x) for x in tag.split(".")[:2])
    for dist in ("tensorflow", "tensorflow-serving-api"):
        (req,) = [r for r in requirements("model") if r.name == dist]
        pinned = lock_pins("model")[dist]
        assert tuple(int(x) for x in pinned.split(".")[:2]) == serving_minor, f"{dist} {pinned} vs tensorflow/serving:{tag}"
        assert req.specifier.contains(f"{serving_minor[0]}.{serving_minor[1]}.0")
        assert not req.specifier.contains(f"{serving_minor[0]}.{serving_minor[1] + 1}.0"), f"{dist} is not pinned to one minor"


@pytest.mark.parametrize(("lock", "extras"), [("router", ("postgres",)), ("controller", ("controller", "postgres")),
                                              ("model", ("model", "postgres")), ("dev", ("dev", "controller", "model", "postgres"))])
def test_each_lock_pins_every_requirement_of_its_extras_within_pyproject(lock, extras):
    pins = lock_pins(lock)
    for req in requirements(*extras):
        name = re.sub(r"[-_.]+", "-", req.name).lower()
        assert name in pins, f"{lock}.lock misses {req.name}"
        assert req.specifier.contains(pins[name], prereleases=True), f"{lock}.lock: {name}=={pins[name]} outside {req}"


def test_the_base_install_and_the_router_lock_leave_the_model_side_out():
    base = {Requirement(r).name for r in PYPROJECT["dependencies"]}
    assert not base & MODEL_SIDE
    assert not set(lock_pins("router")) & MODEL_SIDE
    assert not set(lock_pins("controller")) & MODEL_SIDE
    assert "statsmodels" in lock_pins("dev") and "tensorflow" in lock_pins("dev")


def test_every_subcommand_is_a_base_command_or_names_its_extra():
    from experiments.cli import COMMAND_EXTRAS, build_parser

    parser = build_parser()
    (sub,) = [a for a in parser._actions if a.dest == "command"]
    assert sub.choices is not None and set(sub.choices) == set(COMMAND_EXTRAS) | {"router", "legacy"}
    assert set(COMMAND_EXTRAS.values()) <= set(PYPROJECT["optional-dependencies"])


@pytest.mark.parametrize(("command", "module", "extra"), [("gate", "tensorflow", "model"), ("ramp", "sqlalchemy", "controller"),
                                                          ("demo", "rich", "model"), ("router", "psycopg", "postgres")])
def test_a_subcommand_missing_its_extra_says_which_to_install(monkeypatch, capsys, command, module, extra):
    import experiments.cli as cli

    parser = cli.build_parser()

    def missing(args):
        raise ModuleNotFoundError(f"No module named '{module}'", name=module)

    def parse_args(argv):
        args = parser.parse_args(argv)
        args.handler = missing
        return args

    monkeypatch.setattr(cli, "build_parser", lambda: type("P", (), {"parse_args": staticmethod(parse_args)})())
    argv = {"router": ["router", "--config", "x.yaml"]}.get(command, [command])
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert err == f"modelramp {command} needs the [{extra}] extra: pip install 'modelramp[{extra}]'\n"


def test_an_import_error_of_a_required_module_is_not_dressed_up_as_a_missing_extra(monkeypatch):
    import experiments.cli as cli

    parser = cli.build_parser()

    def broken(args):
        raise ModuleNotFoundError("No module named 'router.nothing'", name="router.nothing")

    def parse_args(argv):
        args = parser.parse_args(argv)
        args.handler = broken
        return args

    monkeypatch.setattr(cli, "build_parser", lambda: type("P", (), {"parse_args": staticmethod(parse_args)})())
    with pytest.raises(ModuleNotFoundError):
        cli.main(["ramp"])


def test_the_legacy_system_and_the_router_load_no_optional_dependency():
    """What `modelramp legacy` and `modelramp router` import at start-up is in the base install."""
    code = ("import sys; from serving import cli; import serving.legacy.app, serving.ports, router.server, router.cli; "
            "print(sorted({m.split('.')[0] for m in sys.modules}))")
    loaded = set(eval(subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True, cwd=REPO).stdout))
    from experiments.cli import MODULE_EXTRAS

    assert not loaded & set(MODULE_EXTRAS), f"loaded optional modules: {sorted(loaded & set(MODULE_EXTRAS))}"
    assert "tensorflow" not in loaded and "scipy" not in loaded


def test_the_charts_modelramp_images_are_the_ones_the_build_script_makes():
    names = subprocess.run(["bash", "scripts/build_images.sh", "names"], check=True, capture_output=True, text=True,
                           cwd=REPO, env={"PY": sys.executable, "PATH": "/usr/bin:/bin"}).stdout.split()
    by_target = {n.rsplit(":", 1)[0].rsplit("-", 1)[1]: n for n in names}
    assert set(by_target) == {"router", "controller", "model"}
    wanted = {"router": by_target["router"], "legacy": by_target["router"], "ramp-controller": by_target["controller"]}
    seen = {}
    for obj in render():
        for pod in pod_specs(obj):
            for c in pod["containers"]:
                if c["name"] in wanted:
                    seen[c["name"]] = c["image"]
    assert seen == wanted


def test_the_chart_version_is_the_package_version_the_images_are_tagged_with():
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    assert chart["appVersion"] == PYPROJECT["version"]
    assert VALUES["image"]["tag"] in ("", PYPROJECT["version"])


def test_built_artifacts_stay_out_of_git():
    ignored = subprocess.run(["git", "check-ignore", "build/images/wheels/router/x.whl", "build/images/base.tar"],
                             capture_output=True, text=True, cwd=REPO).stdout.split()
    assert len(ignored) == 2
    assert Path(REPO / ".containerignore").read_text().splitlines()[1] == "*"
