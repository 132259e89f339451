"""app.fab_lazy: FAB's submodules import without FAB's package __init__, which runs,
into the same module, on the first use of any other top-level name."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

SCRIPT = """
import sys, threading
import app  # installs the lazy package
import flask_appbuilder
from flask_appbuilder import Model
from flask_appbuilder.security.sqla.models import Role, User
from flask_appbuilder.models.sqla import Model as SqlaModel
assert Model is SqlaModel and User.__tablename__ == "ab_user"
assert flask_appbuilder.__version__[0].isdigit()
for heavy in ("flask_appbuilder.base", "flask_appbuilder.api", "flask_appbuilder.views",
              "marshmallow"):
    assert heavy not in sys.modules, heavy
lazy = sys.modules["flask_appbuilder"]
got = []
threads = [threading.Thread(target=lambda: got.append(flask_appbuilder.AppBuilder))
           for _ in range(4)]
for t in threads:
    t.start()
for t in threads:
    t.join()
from flask_appbuilder import AppBuilder, BaseView, ModelView
from flask_appbuilder.base import AppBuilder as BaseAppBuilder
assert sys.modules["flask_appbuilder"] is lazy and got == [AppBuilder] * 4
assert AppBuilder is BaseAppBuilder and BaseView and ModelView
assert flask_appbuilder.Model is SqlaModel
try:
    flask_appbuilder.no_such_name
except AttributeError:
    pass
else:
    raise AssertionError("a missing name must raise AttributeError")
print("ok")
"""


def test_fab_models_load_without_fab_and_the_rest_on_first_use():
    done = subprocess.run([sys.executable, "-c", SCRIPT], cwd=ROOT, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "ok"
