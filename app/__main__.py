"""``python -m app worker|scheduler|audit verify|reap``: a worker-role process.

Not through the ``flask`` command: its plugin commands (FAB's ``fab``, Flask-Limiter's
``limiter``) would import all of FAB before the app even loads (see
docs/developer_guide.md, "Process roles").
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from flask.cli import ScriptInfo

from app import create_app
from app.process import WORKER


def main(argv: Sequence[str] | None = None) -> None:
    """``python -m app <command>``: a worker-role process (see docs/developer_guide.md).

    Settings come from the environment as for any process (DATABASE_URL, REDIS_URL,
    SECRET_KEY, ...); ``APG_PROCESS`` is always ``worker`` here.
    """
    app = create_app({"APG_PROCESS": WORKER})
    app.cli.name = "python -m app"
    app.cli.help = (
        "APG worker-role commands (RQ worker, scheduler, audit). The web, migrations and "
        "`up` run under `flask --app app`."
    )
    app.cli.main(
        args=list(sys.argv[1:] if argv is None else argv),
        prog_name="python -m app",
        obj=ScriptInfo(create_app=lambda: app, set_debug_flag=False),
    )


if __name__ == "__main__":
    main()
