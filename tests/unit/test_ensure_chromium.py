"""`.ci/ensure-chromium`, which `make test` runs before pytest: it returns at once when
the browser is there, installs it with apt-get as root or through passwordless sudo,
and otherwise stops with the one command to run. Driven with fake ``id``, ``sudo`` and
``apt-get`` on a PATH of their own, and a browser path under a temporary directory."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / ".ci" / "ensure-chromium"
ONE_COMMAND = "sudo apt-get update && sudo apt-get install -y chromium"

FAKE_ID = """#!/bin/bash
echo "$FAKE_UID"
"""
# Passwordless when FAKE_SUDO=ok; otherwise `sudo -n` fails as it does without a
# cached password.
FAKE_SUDO = """#!/bin/bash
[ "$FAKE_SUDO" = ok ] || { echo "sudo: a password is required" >&2; exit 1; }
[ "$1" = -n ] && shift
[ "$*" = true ] && exit 0
echo "sudo $*" >> "$CALLS"
exec "$@"
"""
FAKE_APT = """#!/bin/bash
echo "apt-get $* (DEBIAN_FRONTEND=$DEBIAN_FRONTEND)" >> "$CALLS"
if [ "$FAKE_APT" = fail ] && [ "$1" = install ]; then
  echo "E: Unable to locate package chromium" >&2; exit 100
fi
if [ "$1" = install ] && [ "$FAKE_APT" != elsewhere ]; then
  printf '#!/bin/sh\\n' > "$FAKE_TARGET"
  /bin/chmod +x "$FAKE_TARGET"
fi
exit 0
"""


class Sandbox:
    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.bin = tmp / "bin"
        self.bin.mkdir()
        # What the script needs besides the fakes, and nothing else from the system.
        for tool in ("env",):
            found = shutil.which(tool)
            assert found, tool
            (self.bin / tool).symlink_to(found)
        self.target = tmp / "usr-bin" / "chromium"
        self.target.parent.mkdir()
        self.calls = tmp / "calls.log"
        self.calls.touch()
        self.fake("id", FAKE_ID)

    def fake(self, name: str, body: str) -> None:
        path = self.bin / name
        path.write_text(body)
        path.chmod(0o755)

    def browser(self, path: Path | None = None) -> Path:
        path = path or self.target
        path.write_text("#!/bin/sh\n")
        path.chmod(0o755)
        return path

    def run(self, *, uid: int = 1000, sudo: str = "", apt: str = "",
            chromium_path: str | None = None) -> subprocess.CompletedProcess[str]:
        env = {"PATH": str(self.bin), "FAKE_UID": str(uid), "FAKE_SUDO": sudo,
               "FAKE_APT": apt, "FAKE_TARGET": str(self.target), "CALLS": str(self.calls)}
        if chromium_path is not None:
            env["CHROMIUM_PATH"] = chromium_path
        return subprocess.run(["/bin/bash", str(SCRIPT), str(self.target)], env=env,
                              capture_output=True, text=True, timeout=30, check=False)

    def log(self) -> list[str]:
        return self.calls.read_text().splitlines()


@pytest.fixture()
def box(tmp_path: Path) -> Sandbox:
    return Sandbox(tmp_path)


def test_a_browser_in_place_returns_at_once_and_installs_nothing(box: Sandbox) -> None:
    box.fake("apt-get", FAKE_APT)
    box.browser()
    r = box.run(uid=0)
    assert r.returncode == 0, r.stderr
    assert r.stdout == r.stderr == ""
    assert box.log() == []


def test_chromium_path_is_used_as_given_and_nothing_is_installed(box: Sandbox) -> None:
    box.fake("apt-get", FAKE_APT)
    own = box.browser(box.tmp / "my-chromium")
    assert box.run(uid=0, chromium_path=str(own)).returncode == 0
    r = box.run(uid=0, chromium_path=str(box.tmp / "missing"))
    assert r.returncode == 1
    assert f"CHROMIUM_PATH={box.tmp / 'missing'} is not an executable file" in r.stderr
    assert box.log() == []
    assert not box.target.exists()


def test_as_root_it_updates_then_installs_chromium(box: Sandbox) -> None:
    box.fake("apt-get", FAKE_APT)
    r = box.run(uid=0)
    assert r.returncode == 0, r.stderr
    assert box.log() == [
        "apt-get update -q (DEBIAN_FRONTEND=noninteractive)",
        "apt-get install -y -q chromium (DEBIAN_FRONTEND=noninteractive)",
    ]
    assert os.access(box.target, os.X_OK)
    assert f"Chromium installed: {box.target}" in r.stdout


def test_with_passwordless_sudo_it_installs_through_sudo(box: Sandbox) -> None:
    box.fake("apt-get", FAKE_APT)
    box.fake("sudo", FAKE_SUDO)
    r = box.run(uid=1000, sudo="ok")
    assert r.returncode == 0, r.stderr
    log = box.log()
    assert log[0].startswith("sudo env DEBIAN_FRONTEND=noninteractive apt-get update")
    assert log[2].startswith("sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y")
    assert os.access(box.target, os.X_OK)


@pytest.mark.parametrize("has_sudo", [True, False])
def test_without_root_or_passwordless_sudo_it_stops_with_the_one_command(
    box: Sandbox, has_sudo: bool
) -> None:
    box.fake("apt-get", FAKE_APT)
    if has_sudo:
        box.fake("sudo", FAKE_SUDO)  # asks for a password: `sudo -n` fails
    r = box.run(uid=1000)
    assert r.returncode == 1
    assert ONE_COMMAND in r.stderr
    assert box.log() == []


def test_without_apt_get_it_says_to_install_chromium_and_set_chromium_path(
    box: Sandbox,
) -> None:
    r = box.run(uid=0)
    assert r.returncode == 1
    assert "package manager" in r.stderr and "CHROMIUM_PATH=" in r.stderr


def test_a_failed_install_is_reported_with_what_to_do_instead(box: Sandbox) -> None:
    box.fake("apt-get", FAKE_APT)
    r = box.run(uid=0, apt="fail")
    assert r.returncode == 1
    assert "apt-get could not install chromium" in r.stderr
    assert "CHROMIUM_PATH=" in r.stderr


def test_an_install_that_puts_the_browser_elsewhere_says_to_set_chromium_path(
    box: Sandbox,
) -> None:
    box.fake("apt-get", FAKE_APT)
    r = box.run(uid=0, apt="elsewhere")
    assert r.returncode == 1
    assert f"{box.target} is not there" in r.stderr and "CHROMIUM_PATH=" in r.stderr


def test_make_test_checks_the_browser_before_anything_else() -> None:
    make = shutil.which("make")
    assert make, "make is needed to run the suite through `make test`"
    out = subprocess.run([make, "-n", "--no-print-directory", "test"], cwd=ROOT,
                         capture_output=True, text=True, check=True, timeout=30).stdout
    lines = [line for line in out.splitlines() if line.strip()]
    assert lines[0] == ".ci/ensure-chromium", lines
    assert any("pytest" in line for line in lines[1:]), lines
