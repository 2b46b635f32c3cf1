"""``make run`` and packaging: what running installs, how Postfix is found, ARGS on both branches,
the Debian packages the tests need, and a build without the project's own setuptools warnings."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from tests.helpers import free_port

ROOT = Path(__file__).resolve().parent.parent
MAKEFILE = (ROOT / "Makefile").read_text()


def make_dry_run(target: str) -> str:
    """The commands ``make`` would run for ``target`` (everything remade, nothing run)."""
    done = subprocess.run(["make", "-n", "-B", "-C", str(ROOT), target], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_running_installs_the_package_without_the_test_tools() -> None:
    run = make_dry_run("setup-run")
    assert re.search(r"pip install .*-e \.$", run, re.MULTILINE) and "[test]" not in run
    assert "'.[test]'" in make_dry_run("setup")
    assert re.search(r"^run: setup-run$", MAKEFILE, re.MULTILINE)
    assert re.search(r"^demo: setup-run$", MAKEFILE, re.MULTILINE)


def test_the_browser_tests_packages_are_installed_by_make_test() -> None:
    debs = re.search(r"^DEBS\s*:=(.*)$", MAKEFILE, re.MULTILINE)
    assert debs and {"chromium", "chromium-driver"} <= set(debs.group(1).split())


def test_pyproject_license_is_an_spdx_expression() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert project["project"]["license"] == "Apache-2.0"
    assert project["build-system"]["requires"] == ["setuptools>=77"]  # the first to take an SPDX string


def test_building_the_package_warns_about_nothing_of_ours(tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--verbose", "--wheel-dir",
                           str(tmp_path), str(ROOT)], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1"})
    assert done.returncode == 0, done.stderr[-3000:]
    output = done.stdout + done.stderr
    ours = [line for line in output.splitlines() if re.search(r"(?i)warning", line)
            and "byte-compiling is disabled" not in line  # the build's own note, not about the project
            and "Location 'file://" not in line]  # this machine's pip index settings
    assert ours == []
    wheel = next(tmp_path.glob("mtaq_exporter-*.whl"))
    listing = subprocess.run([sys.executable, "-m", "zipfile", "-l", str(wheel)], capture_output=True, text=True,
                             timeout=60, check=True).stdout
    for data in ("reasons.yaml", "demo_maillog.log", "demo_queue.jsonl"):
        assert f"collectors/data/{data}" in listing


def _make_until(target: str, args: str, marker: str, env: dict[str, str]) -> str:
    """Run ``make target ARGS=args`` until its output shows ``marker``; stop it; return the output."""
    proc = subprocess.Popen(["make", "-s", "-C", str(ROOT), "-o", ".venv/.installed-run", target, f"ARGS={args}"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
                            start_new_session=True)
    assert proc.stdout is not None
    lines = []
    try:
        for line in proc.stdout:
            lines.append(line)
            if marker in line or "Traceback" in line:
                break
    finally:
        os.killpg(proc.pid, signal.SIGTERM)  # make and the agent it started: the group of this run
        proc.communicate(timeout=30)
    return "".join(lines)


@pytest.mark.skipif(not os.path.exists("/usr/sbin/postconf"), reason="Postfix (Debian package postfix) not installed")
def test_make_run_finds_postfix_the_way_the_agent_does_without_sbin_in_path() -> None:
    """Issue 12: ``make run`` looked for a socket only root can see and said "no local Postfix"
    while Postfix ran. It now asks the agent's own detection, with Postfix's sbin directory on the
    PATH (Debian leaves it out of a normal user's PATH; the agent's postqueue fallback needs it)."""
    env = {"PATH": "/usr/bin:/bin", "HOME": str(ROOT)}
    output = _make_until("run", f"--web.listen-address 127.0.0.1:{free_port()} --no-collector.postfix_log",
                         "listening on", env)
    assert "running the demo" not in output
    assert "collector postfix_queue: postfix instance postfix: showq" in output, output


def test_make_demo_passes_args_on(tmp_path: Path) -> None:
    """Issue 12: ``make run ARGS=…`` failed on the demo branch with "unrecognized arguments"."""
    if shutil.which("make") is None:
        pytest.skip("make is not installed")
    port = free_port()
    output = _make_until("demo", f"--web.listen-address 127.0.0.1:{port} --log.level debug", "listening on",
                         {"PATH": os.environ["PATH"], "HOME": str(tmp_path)})
    assert f"listening on 127.0.0.1:{port}" in output and "DEBUG" in output, output
