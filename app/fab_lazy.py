"""Import Flask-AppBuilder's submodules without the whole framework.

``flask_appbuilder/__init__.py`` imports all of FAB (views, REST APIs, marshmallow,
apispec, forms, charts: about 20 MB of a process's memory), and Python runs it before
any submodule, so even ``from flask_appbuilder.security.sqla.models import User``
pays for it. Workers and schedulers need FAB's models only (our tables reference its
users and roles), so ``install()`` puts the package in ``sys.modules`` uninitialised:
its submodules import as usual, ``Model`` resolves to ``flask_appbuilder.models.sqla``,
and the first use of any other top-level name (``AppBuilder``, ``BaseView`` ...) runs
the real ``__init__`` then, into the same module object, so the web process ends up
with exactly the package it always had.

Installed when ``app`` is imported. When FAB is already imported (the ``flask``
command loads its ``fab`` plugin command before the app), it does nothing.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
import threading
from pathlib import Path
from typing import Any

PACKAGE = "flask_appbuilder"
# Top-level names served without running the package's __init__.
CHEAP = {"Model": "flask_appbuilder.models.sqla", "__version__": None}

_lock = threading.RLock()


def _version(directory: Path) -> str:
    for line in (directory / "__init__.py").read_text().splitlines():
        if line.startswith("__version__"):
            return line.split("=", 1)[1].strip().strip("\"'")
    return "unknown"


def install() -> None:
    if PACKAGE in sys.modules:
        return
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or spec.loader is None or not spec.submodule_search_locations:
        return  # not installed: the import error comes where it is used
    module = importlib.util.module_from_spec(spec)
    directory = Path(next(iter(spec.submodule_search_locations)))
    state = {"loading": False}

    def load() -> None:
        """Run the real ``__init__`` once. Called holding ``_lock``."""
        if module.__dict__.get("_apg_fab_loaded"):
            return
        state["loading"] = True
        try:
            assert spec.loader is not None
            spec.loader.exec_module(module)
        finally:
            state["loading"] = False
        module.__dict__["_apg_fab_loaded"] = True
        module.__dict__.pop("__getattr__", None)

    def __getattr__(name: str) -> Any:
        if name in CHEAP:
            source = CHEAP[name]
            value = _version(directory) if source is None else getattr(
                importlib.import_module(source), name
            )
            setattr(module, name, value)
            return value
        is_submodule = (directory / f"{name}.py").exists() or (directory / name).is_dir()
        if name.startswith("__") or is_submodule:
            # A submodule is imported by the import system once this says "not here".
            raise AttributeError(f"module {PACKAGE!r} has no attribute {name!r}")
        # Another thread waits here while one runs __init__; the thread running it
        # (re-entering the lock) finds a name not defined yet missing, as usual.
        with _lock:
            if state["loading"]:
                raise AttributeError(f"module {PACKAGE!r} has no attribute {name!r}")
            load()
        try:
            return module.__dict__[name]
        except KeyError:
            raise AttributeError(f"module {PACKAGE!r} has no attribute {name!r}") from None

    module.__dict__["__getattr__"] = __getattr__
    with _lock:
        if PACKAGE not in sys.modules:
            sys.modules[PACKAGE] = module

