"""``python -m app worker|scheduler|audit verify``: the worker role (app.cli.main)."""

from app.cli import main

main()
