"""Packaging: the Dockerfile and .dockerignore, the pinned dependencies, the chart's copies of the
rules and dashboards, the wheel installed with pipx, and the systemd unit (``systemd-analyze
verify``). The image itself is built and run in tests/test_container_lab.py, the chart rendered
by the Helm engine in tests/test_helm.py.
"""

from __future__ import annotations

import fnmatch
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement

from exporter.http import WebSection

ROOT = Path(__file__).resolve().parent.parent
CHART = ROOT / "helm" / "mtaq-exporter"
UNIT = ROOT / "deploy" / "mtaq-exporter.service"
ACTIONS_DROP_IN = ROOT / "deploy" / "mtaq-exporter-actions.conf"
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())


def dockerfile_instructions() -> list[tuple[int, str, str]]:
    """(stage index, INSTRUCTION, arguments) with continuation lines joined and comments dropped;
    instructions before the first FROM (global ARGs) are stage -1."""
    lines: list[str] = []
    pending = ""
    for raw in (ROOT / "Dockerfile").read_text().splitlines():
        stripped = raw.strip()
        if not stripped or stripped.startswith("#"):
            continue
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        lines.append(pending + stripped)
        pending = ""
    result = []
    stage = -1
    for line in lines:
        instruction, _, args = line.partition(" ")
        instruction = instruction.upper()
        if instruction == "FROM":
            stage += 1
        result.append((stage, instruction, args.strip()))
    return result


def final_stage() -> list[tuple[str, str]]:
    instructions = dockerfile_instructions()
    last = max(stage for stage, _, _ in instructions)
    return [(ins, args) for stage, ins, args in instructions if stage == last]


def default_port() -> int:
    return int(WebSection().listen_address.rpartition(":")[2])


def constraints() -> dict[str, str]:
    """constraints.txt: {normalised name: pinned version}."""
    pins = {}
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, _, version = line.partition("==")
            pins[re.sub(r"[-_.]+", "-", name).lower()] = version.strip()
    return pins


# ---------------------------------------------------------------------------------------------
# Dockerfile
# ---------------------------------------------------------------------------------------------

def test_dockerfile_is_multi_stage_on_a_base_image_argument() -> None:
    instructions = dockerfile_instructions()
    base = [args for stage, ins, args in instructions if stage == -1 and ins == "ARG"]
    assert base == ["BASE_IMAGE=python:3.11-slim-bookworm"], "ARG BASE_IMAGE defaults to the official slim image"
    froms = [args for _, ins, args in instructions if ins == "FROM"]
    assert froms == ["${BASE_IMAGE} AS build", "${BASE_IMAGE}"], "both stages on the same base (the venv's python)"
    copies_from = [args for ins, args in final_stage() if ins == "COPY" and "--from=" in args]
    assert copies_from == ["--from=build /opt/mtaq /opt/mtaq"]


def test_dockerfile_installs_with_the_pinned_constraints() -> None:
    build = [args for stage, ins, args in dockerfile_instructions() if stage == 0]
    assert any(args.startswith("constraints.txt ") for args in build), "constraints.txt is copied into the build"
    run = " ".join(args for args in build if "pip install" in args)
    assert "PIP_CONSTRAINT=/src/constraints.txt" in run and "--no-cache-dir" in run
    assert "PIP_CERT" in [args for stage, ins, args in dockerfile_instructions() if stage == 0 and ins == "ARG"]


def test_dockerfile_runs_as_numeric_non_root_user() -> None:
    users = [args for ins, args in final_stage() if ins == "USER"]
    assert users, "no USER in the runtime stage: the image would run as root"
    user = users[-1]
    assert re.fullmatch(r"\d+:\d+", user), f"USER must be numeric so runAsNonRoot can verify it: {user!r}"
    values = yaml.safe_load((CHART / "values.yaml").read_text())["securityContext"]
    assert user == f"{values['runAsUser']}:{values['runAsGroup']}" != "0:0", "chart runAsUser/runAsGroup != USER"


def test_dockerfile_exposes_the_default_listen_port() -> None:
    exposed = [args for ins, args in final_stage() if ins == "EXPOSE"]
    ports = {int(p.split("/")[0]) for args in exposed for p in args.split()}
    assert ports == {default_port()}, f"EXPOSE {ports} but exporter/http.py listens on {default_port()}"


def test_dockerfile_entrypoint_is_exec_form_mtaq_exporter() -> None:
    entrypoints = [args for ins, args in final_stage() if ins == "ENTRYPOINT"]
    command = json.loads(entrypoints[-1])  # exec form is a JSON array; shell form would not parse
    assert command == ["/opt/mtaq/bin/mtaq-exporter"]
    assert "mtaq-exporter" in PYPROJECT["project"]["scripts"]


def test_dockerfile_healthcheck_follows_the_agents_own_flags() -> None:
    checks = [args for ins, args in final_stage() if ins == "HEALTHCHECK"]
    assert len(checks) == 1
    options, _, command = checks[0].partition(" CMD ")
    assert json.loads(command) == ["/opt/mtaq/bin/mtaq-exporter", "healthcheck", "--agent-pid", "1"]
    assert re.search(r"--timeout=(\d+)s", options), "a timeout longer than the command's own (3 s)"
    assert int(re.search(r"--timeout=(\d+)s", options).group(1)) > 3


def test_dockerfile_labels_name_version_and_source() -> None:
    labels = " ".join(args for ins, args in final_stage() if ins == "LABEL")
    for key in ("title", "version", "revision", "source", "licenses"):
        assert f"org.opencontainers.image.{key}=" in labels, key
    args = dict(a.partition("=")[::2] for ins, a in final_stage() if ins == "ARG")
    assert args["VERSION"] == PYPROJECT["project"]["version"], "the image's default VERSION lags pyproject.toml"
    assert PYPROJECT["project"]["license"] in labels


def test_dockerfile_copies_every_python_package() -> None:
    packages = PYPROJECT["tool"]["setuptools"]["packages"]["find"]["include"]
    copied = " ".join(args for _, ins, args in dockerfile_instructions() if ins in ("COPY", "ADD"))
    for package in {p.split(".")[0] for p in packages}:
        assert re.search(rf"(^|\s){package}/?\s", copied + " "), f"package {package} is not copied into the image"


def test_dockerignore_excludes_dev_files_but_not_the_build_inputs() -> None:
    patterns = [line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines()
                if line.strip() and not line.startswith("#")]
    for needed in (".venv", ".git", "tests", "bench", "helm", "deploy", ".pytest_cache", ".ruff_cache"):
        assert needed in patterns, f".dockerignore should exclude {needed}"
    copied = []
    for _, ins, args in dockerfile_instructions():
        if ins == "COPY" and "--from=" not in args:
            copied += args.split()[:-1]
    assert copied
    for path in copied:
        for pattern in patterns:
            assert not pattern.startswith("!")
            assert not fnmatch.fnmatch(path.rstrip("/"), pattern.rstrip("/")), \
                f".dockerignore pattern {pattern!r} drops {path!r}, which the Dockerfile copies"


# ---------------------------------------------------------------------------------------------
# Pinned dependencies
# ---------------------------------------------------------------------------------------------

def test_constraints_pin_every_dependency_within_pyproject_ranges() -> None:
    pins = constraints()
    requirements = [Requirement(r) for r in (*PYPROJECT["project"]["dependencies"],
                                             *PYPROJECT["project"]["optional-dependencies"]["test"],
                                             *PYPROJECT["build-system"]["requires"])]
    for requirement in requirements:
        name = re.sub(r"[-_.]+", "-", requirement.name).lower()
        assert name in pins, f"{requirement.name} is not pinned in constraints.txt (make constraints)"
        assert requirement.specifier.contains(pins[name]), f"{name}=={pins[name]} outside {requirement}"
    assert all(re.fullmatch(r"[\w.+]+", version) for version in pins.values())


def test_make_setup_installs_with_the_constraints() -> None:
    makefile = (ROOT / "Makefile").read_text()
    assert "-c constraints.txt" in makefile or "PIP_CONSTRAINT=constraints.txt" in makefile


# ---------------------------------------------------------------------------------------------
# Rules and dashboards shipped in the chart
# ---------------------------------------------------------------------------------------------

def sync_module():  # type: ignore[no-untyped-def]
    spec = importlib.util.spec_from_file_location("helm_sync_files", ROOT / "helm" / "sync_files.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_chart_copies_of_rules_and_dashboards_match_the_sources() -> None:
    sync = sync_module()
    assert any(source.suffix == ".json" for source, _ in sync.pairs()), "no dashboards found in dashboards/"
    problems = sync.drift()
    assert not problems, "chart copies out of date; run: python helm/sync_files.py\n" + "\n".join(problems)


def test_dashboards_fit_in_one_config_map() -> None:
    dashboards = sorted((CHART / "files" / "dashboards").glob("*.json"))
    uids = [json.loads(p.read_text()).get("uid") for p in dashboards]
    assert all(uids) and len(set(uids)) == len(uids), uids
    assert sum(p.stat().st_size for p in dashboards) < 900_000, "a ConfigMap holds at most 1 MiB"


# ---------------------------------------------------------------------------------------------
# Host install: the wheel with pipx, the systemd unit
# ---------------------------------------------------------------------------------------------

def systemd_verify(unit_dir: Path, unit: str) -> subprocess.CompletedProcess[str]:
    """``systemd-analyze verify`` of ``unit`` with its drop-ins from ``unit_dir``."""
    if shutil.which("systemd-analyze") is None:
        pytest.skip("systemd-analyze is not installed (Debian package systemd)")
    env = {**os.environ, "SYSTEMD_UNIT_PATH": f"{unit_dir}:", "SYSTEMD_LOG_COLOR": "0"}
    return subprocess.run(["systemd-analyze", "verify", unit], capture_output=True, text=True, cwd=unit_dir,
                          env=env, check=False, timeout=60)


def install_unit(unit_dir: Path, executable: Path, drop_ins: tuple[Path, ...] = ()) -> None:
    """The shipped unit (and drop-ins) in ``unit_dir``, its ExecStart pointing at ``executable``
    (verify checks that the program exists)."""
    unit_dir.mkdir(parents=True, exist_ok=True)
    text = UNIT.read_text()
    assert "ExecStart=/usr/local/bin/mtaq-exporter " in text
    (unit_dir / UNIT.name).write_text(text.replace("/usr/local/bin/mtaq-exporter", str(executable)))
    for drop_in in drop_ins:
        target = unit_dir / f"{UNIT.name}.d" / "actions.conf"
        target.parent.mkdir(exist_ok=True)
        target.write_text(drop_in.read_text())


def unit_settings(path: Path) -> dict[str, list[str]]:
    settings: dict[str, list[str]] = {}
    for line in path.read_text().splitlines():
        if "=" in line and not line.startswith(("#", "[")):
            key, _, value = line.partition("=")
            settings.setdefault(key, []).append(value)
    return settings


def test_the_unit_is_hardened_with_a_writable_state_directory() -> None:
    unit = unit_settings(UNIT)
    assert unit["DynamicUser"] == ["yes"] and unit["SupplementaryGroups"] == ["postdrop adm"]
    assert unit["ProtectSystem"] == ["strict"] and unit["NoNewPrivileges"] == ["yes"]
    assert unit["StateDirectory"] == ["mtaq-exporter"] and unit["ReadWritePaths"] == ["/var/lib/mtaq-exporter"]
    assert unit["Restart"] == ["on-failure"] and unit["RestartPreventExitStatus"] == ["2"]
    assert unit["CapabilityBoundingSet"] == [""]
    assert unit["ExecStart"] == ["/usr/local/bin/mtaq-exporter --config.file /etc/mtaq-exporter.yml"]
    actions = unit_settings(ACTIONS_DROP_IN)
    assert actions["User"] == ["root"] and actions["DynamicUser"] == ["no"]
    assert actions["ReadWritePaths"] == ["/etc/postfix /var/spool/postfix /var/lib/postfix"]


@pytest.mark.parametrize("drop_ins", [(), (ACTIONS_DROP_IN,)], ids=["unit", "with-actions-drop-in"])
def test_systemd_analyze_verify_passes_without_a_warning(tmp_path: Path, drop_ins: tuple[Path, ...]) -> None:
    install_unit(tmp_path, Path(sys.executable).parent / "mtaq-exporter", drop_ins)
    done = systemd_verify(tmp_path, UNIT.name)
    assert done.returncode == 0 and done.stderr == "" and done.stdout == "", done.stdout + done.stderr


def test_systemd_analyze_verify_catches_a_broken_unit(tmp_path: Path) -> None:
    """The check above is not vacuous: verify reports unknown keys (exit 0, on stderr) and a
    missing program (exit 1)."""
    install_unit(tmp_path, tmp_path / "missing" / "mtaq-exporter")
    with (tmp_path / UNIT.name).open("a") as unit:
        unit.write("ProtectSystm=strict\n")
    done = systemd_verify(tmp_path, UNIT.name)
    assert done.returncode == 1 and "is not executable" in done.stderr


def test_pipx_installs_the_wheel(tmp_path: Path) -> None:
    """The README's host install: build the wheel, ``pipx install`` it (with the pinned versions),
    run the console script, and verify the unit against that very program."""
    if shutil.which("pipx") is None:
        pytest.skip("pipx is not installed (Debian package pipx; make setup installs it as root)")
    # Built from a copy of what the image copies too: pip builds in the source tree.
    source = tmp_path / "src"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source)
    for name in ("exporter", "collectors"):
        shutil.copytree(ROOT / name, source / name, ignore=shutil.ignore_patterns("__pycache__"))
    wheels = tmp_path / "dist"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "--wheel-dir", str(wheels),
                    str(source)], check=True, capture_output=True, timeout=300)
    (wheel,) = wheels.glob("mtaq_exporter-*.whl")
    # Every data file is in the wheel: the demo reads its bundled Postfix and Exim data (the Exim
    # spool: nested files without an extension) from the installed package.
    with zipfile.ZipFile(wheel) as archive:
        packaged = {name for name in archive.namelist() if name.startswith("collectors/data/")}
    data = source / "collectors" / "data"
    assert packaged == {f"collectors/{p.relative_to(source / 'collectors').as_posix()}"
                        for p in data.rglob("*") if p.is_file()}
    env = {**os.environ, "PIPX_HOME": str(tmp_path / "pipx"), "PIPX_BIN_DIR": str(tmp_path / "bin"),
           "PIP_CONSTRAINT": str(ROOT / "constraints.txt")}
    done = subprocess.run(["pipx", "install", str(wheel)], capture_output=True, text=True, env=env, timeout=600,
                          check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    program = tmp_path / "bin" / "mtaq-exporter"
    version = subprocess.run([str(program), "--version"], capture_output=True, text=True, check=True, timeout=60)
    assert version.stdout.strip() == f"mtaq-exporter {PYPROJECT['project']['version']}"
    config = tmp_path / "mtaq.yml"
    config.write_text("postfix: {enabled: false}\nlog: {paths: ['-']}\n")
    check = subprocess.run([str(program), "check-config", "--config.file", str(config)], capture_output=True,
                           text=True, timeout=60, check=False)
    assert check.returncode == 0 and "collectors: postfix_log" in check.stdout, check.stdout + check.stderr
    install_unit(tmp_path / "units", program)
    verify = systemd_verify(tmp_path / "units", UNIT.name)
    assert verify.returncode == 0 and verify.stderr == "", verify.stderr
