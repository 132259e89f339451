"""A connector in a package of its own (examples/apg-connector-shout), installed with pip
and found through the ``apg.connectors`` entry point: saved in a definition, run on a
worker; a package whose entry point does not load is refused, naming it."""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from capability import dsl
from capability.connectors import registry
from capability.engine.executors import EXECUTORS
from tests.support.runs import run_to_end

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "apg-connector-shout"


def _pip_install(source: Path, target: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps",
         "--no-build-isolation", "--no-index", "--target", str(target), str(source)],
        capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    target = tmp_path_factory.mktemp("site")
    _pip_install(EXAMPLE, target)
    sys.path.insert(0, str(target))
    try:
        yield target
    finally:
        sys.path.remove(str(target))
        for name in ("shout",):
            if name in EXECUTORS:
                dsl.registry.unregister(name)
                EXECUTORS.pop(name, None)
                registry._installed.pop(name, None)
        sys.modules.pop("apg_connector_shout", None)


def test_an_installed_package_adds_its_task_type(installed: Path, app: Flask,
                                                 client: FlaskClient,
                                                 op: dict[str, Any]) -> None:
    assert (installed / "apg_connector_shout").is_dir()
    assert "shout" in registry.install()  # what a process starting now finds
    assert dsl.registry.get("shout").description.startswith("Upper-cases text")
    run = run_to_end(app, client, op, [
        {"id": "a", "type": "shout", "with": {"text": "hey", "times": 2}}])
    assert run["status"] == "succeeded", run
    assert run["by_task"]["a"]["output"] == {"text": "HEY HEY", "length": 7}
    r = client.post("/api/v1/workflows/validate", headers=op["h"], json={"definition": {
        "name": "s", "tasks": [{"id": "a", "type": "shout", "with": {"times": 2}}]}})
    assert r.status_code == 200 and r.get_json()["valid"] is False, r.get_json()
    assert "tasks[0].with.text" in str(r.get_json()["errors"])


def test_an_entry_point_that_does_not_load_is_refused_by_name(tmp_path: Path) -> None:
    broken = tmp_path / "broken"
    (broken / "apg_broken").mkdir(parents=True)
    (broken / "apg_broken" / "__init__.py").write_text("raise ImportError('no sdk here')\n")
    (broken / "pyproject.toml").write_text(
        '[build-system]\nrequires = ["setuptools>=61"]\n'
        'build-backend = "setuptools.build_meta"\n'
        '[project]\nname = "apg-broken"\nversion = "1"\n'
        '[project.entry-points."apg.connectors"]\nbroken = "apg_broken:Broken"\n'
        '[tool.setuptools]\npackages = ["apg_broken"]\n')
    target = tmp_path / "site"
    _pip_install(broken, target)
    sys.path.insert(0, str(target))
    try:
        says = re.escape("entry point 'broken' (apg_broken:Broken) does not load")
        with pytest.raises(registry.ConnectorRefused, match=says):
            registry.discovered()
    finally:
        sys.path.remove(str(target))
