"""``flask --app app up``: everything on one machine.

Migrates, ensures the admin, then runs N RQ workers and one scheduler as child
processes and the web server (Werkzeug's threaded server, with Flask-SocketIO's
middleware) in this process.

Werkzeug's server is a deliberate choice for this single-machine mode: threads suit
Socket.IO's threading mode and one process. It is started directly (``make_server``)
rather than through ``socketio.run``/``app.run``, whose banners warn that it is a
development server meant for `flask run`; the installation guide says what to put in
front of it, and what to use instead on several machines. Its request lines go to the
``app.access`` logger (DEBUG, or the ``ACCESS_LOG`` file; app/logs.py).

Children get this process's ``REDIS_URL`` (the embedded server's URL when none was
configured) and ``DATABASE_URL``, so every process talks to the same services.

Lifecycle:

* a child that dies while the web server runs is started again (after a pause that
  grows when it keeps dying at once), so ``/health`` keeps reporting N workers;
* children run in their own process groups, so signals meant for the whole command
  (Ctrl-C, ``kill -TERM -- -<pgid>``) reach this process only, and it relays them;
* SIGTERM or Ctrl-C: the web server stops, each child gets one SIGTERM (an RQ worker
  finishes its current job, then exits), a child still busy after the grace period
  (``APG_SHUTDOWN_GRACE``, 30 s) gets a second SIGTERM (RQ's cold shutdown: the job is
  killed) and finally SIGKILL; the embedded Redis, if this process started it, is
  stopped last;
* if this process is killed outright (SIGKILL), the kernel sends SIGTERM to the
  children and to the embedded Redis (``PR_SET_PDEATHSIG``, Linux), so nothing is
  left running.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from typing import Any

import click
from flask import Flask
from werkzeug.serving import WSGIRequestHandler, make_server

from app.extensions import db
from app.logs import access_logger
from app.runtime.redis_conn import pdeathsig_preexec, started_here, stop_embedded

log = logging.getLogger(__name__)

# Workers and the scheduler run in the worker process role (``python -m app``, see
# app/cli.py ``main``): no views, REST APIs or Socket.IO server, and never a permission
# or role sync (this process did it). Not through the `flask` command, whose plugin
# commands would load all of Flask-AppBuilder before the app: about 85 MB a child
# instead of 125 MB.
CHILD_COMMAND = [sys.executable, "-m", "app"]

# The Server header of every response: no product or version an attacker could look up
# (Werkzeug's handler adds its own to each response, the app's and Socket.IO's alike).
SERVER_HEADER = "APG"

# Seconds a worker may take to finish its current job after SIGTERM.
GRACE_SECONDS = float(os.environ.get("APG_SHUTDOWN_GRACE", "30"))


def prepare(app: Flask) -> None:
    """Migrate, sync permissions and roles, ensure the admin (printing a generated password)."""
    from flask_migrate import upgrade

    from app.security.admin import ensure_admin
    from app.security.sync import sync_security

    upgrade()
    sync_security(app)
    log.info("database ready: %s", _display_url(app.config["SQLALCHEMY_DATABASE_URI"]))
    result = ensure_admin(app)
    if result.generated_password:
        click.echo(
            "\n  Created the Admin user\n"
            f"    username: {result.username}\n"
            f"    password: {result.generated_password}\n"
            "  It is shown this once; change it under your user's profile.\n"
        )
    elif result.created:
        log.info("created the Admin user %r from ADMIN_PASSWORD", result.username)
    db.session.remove()


def _display_url(url: str) -> str:
    """A database or Redis URL without its credentials."""
    scheme, sep, rest = url.partition("://")
    return f"{scheme}{sep}{rest.rpartition('@')[2]}" if sep else url


class AccessLogRequestHandler(WSGIRequestHandler):
    """Werkzeug's handler with the request line sent to ``app.access`` at DEBUG instead
    of Werkzeug's own logger at INFO (errors still go through Werkzeug's logger)."""

    def version_string(self) -> str:
        return SERVER_HEADER  # not Werkzeug's and Python's versions

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        logger = access_logger()
        if logger.isEnabledFor(logging.DEBUG):
            logger.debug('%s "%s" %s %s', self.address_string(), self.requestline,
                         getattr(code, "value", code), size)


def _check_port(host: str, port: int) -> None:
    """Fail before migrating and spawning anything when the port is taken."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            raise click.ClickException(
                f"cannot listen on {host}:{port} ({exc.strerror}). Another program uses the "
                "port: stop it, or choose another one (PORT=8081 make run, or --port)."
            ) from exc


class _Child:
    """One supervised child process (`python -m app worker|scheduler`)."""

    def __init__(self, args: list[str], env: dict[str, str]) -> None:
        self.args = args
        self.env = env
        self.proc: subprocess.Popen[bytes] | None = None
        self.started = 0.0
        self.quick_deaths = 0
        self.next_start = 0.0

    @property
    def name(self) -> str:
        return " ".join(self.args)

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [*CHILD_COMMAND, *self.args],
            env=self.env,
            stdin=subprocess.DEVNULL,
            # Its own process group: a Ctrl-C or a signal to the `make run` group reaches
            # this process only, which then sends each child exactly one SIGTERM (RQ
            # reads a second signal as "kill the running job").
            process_group=0,
            # And should this process be killed outright, the kernel sends the SIGTERM.
            preexec_fn=pdeathsig_preexec(),
        )
        self.started = time.monotonic()

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def send(self, sig: int) -> None:
        if self.alive():
            assert self.proc is not None
            try:
                self.proc.send_signal(sig)
            except ProcessLookupError:
                pass


class _Supervisor:
    def __init__(self, children: list[_Child]) -> None:
        self.children = children
        self.stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="apg-supervisor", daemon=True)

    def start(self) -> None:
        for child in self.children:
            child.start()
        self._thread.start()

    def _run(self) -> None:
        while not self.stopping.wait(1.0):
            try:
                self._check()
            except Exception:  # keep supervising whatever happens
                log.exception("supervisor: could not check the child processes")

    def _check(self) -> None:
        now = time.monotonic()
        for child in self.children:
            if child.alive() or self.stopping.is_set():
                continue
            if child.next_start == 0.0:
                assert child.proc is not None
                lived = now - child.started
                child.quick_deaths = child.quick_deaths + 1 if lived < 10 else 0
                delay = min(60.0, 2.0 ** child.quick_deaths) if child.quick_deaths else 1.0
                log.warning("`python -m app %s` (pid %s) exited with code %s; starting it "
                            "again in %.0fs", child.name, child.proc.pid,
                            child.proc.returncode, delay)
                child.next_start = now + delay
            elif now >= child.next_start:
                child.next_start = 0.0
                child.start()

    def stop(self, grace: float = GRACE_SECONDS) -> None:
        self.stopping.set()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(timeout=5)
        for child in self.children:
            child.send(signal.SIGTERM)
        deadline = time.monotonic() + grace
        while any(c.alive() for c in self.children) and time.monotonic() < deadline:
            time.sleep(0.1)
        busy = [c for c in self.children if c.alive()]
        if busy:
            log.warning("%d child process(es) still busy after %.0fs: cold shutdown",
                        len(busy), grace)
            for child in busy:
                child.send(signal.SIGTERM)  # RQ: a second signal kills the job and exits
            deadline = time.monotonic() + 10
            while any(c.alive() for c in busy) and time.monotonic() < deadline:
                time.sleep(0.1)
        for child in self.children:
            if child.alive():
                assert child.proc is not None
                child.proc.kill()
            if child.proc is not None:
                child.proc.wait()


def _wait_for_workers(app: Flask, expected: int, timeout: float = 20.0) -> None:
    """Serve only once the workers have registered, so the first /health a user or a
    load balancer sees already counts them (a slow start is reported, not fatal)."""
    from rq import Worker

    from app.runtime.redis_conn import get_redis

    deadline = time.monotonic() + timeout
    while expected and time.monotonic() < deadline:
        if len(Worker.all(connection=get_redis(app))) >= expected:
            return
        time.sleep(0.1)
    if expected:
        log.warning("not all %d workers registered within %.0fs", expected, timeout)


def run_up(app: Flask, host: str, port: int, workers: int, scheduler: bool = True) -> None:
    _check_port(host, port)
    prepare(app)
    env = dict(os.environ)
    env["REDIS_URL"] = app.config["REDIS_URL"]
    env["DATABASE_URL"] = app.config["SQLALCHEMY_DATABASE_URI"]
    children = [_Child(["worker"], env) for _ in range(workers)]
    if scheduler:
        children.append(_Child(["scheduler"], env))
    supervisor = _Supervisor(children)

    stopping = False

    def on_sigterm(*_: Any) -> None:
        nonlocal stopping
        if stopping:
            return  # already shutting down; let it finish
        stopping = True
        raise SystemExit(0)

    signal.signal(signal.SIGTERM, on_sigterm)
    # Bound before the children start: a port taken meanwhile fails here, not later.
    server = make_server(host, port, app, threaded=True,
                         request_handler=AccessLogRequestHandler)
    supervisor.start()
    _wait_for_workers(app, workers)
    redis_url = app.config["REDIS_URL"]
    log.info(
        "%s is up: http://%s:%s/ (log in at /login/; REST API under /api/v1/, Swagger at "
        "/swagger/v1); %d worker(s), %d scheduler; database %s; Redis %s%s",
        app.config.get("APP_NAME", "APG Workflow Orchestration"), host, server.port,
        workers, 1 if scheduler else 0,
        _display_url(app.config["SQLALCHEMY_DATABASE_URI"]), _display_url(redis_url),
        " (embedded)" if started_here(redis_url) else "",
    )
    try:
        server.serve_forever()  # returns on Ctrl-C; SIGTERM raises SystemExit through it
    finally:
        stopping = True
        server.server_close()
        log.info("stopping: waiting for the workers and the scheduler to exit")
        supervisor.stop()
        if started_here(redis_url):
            # Socket.IO's listener thread (it has no stop) would report the Redis we are
            # about to stop on purpose as "Cannot receive from redis... retrying".
            logging.getLogger("socketio.server").setLevel(logging.CRITICAL)
        stop_embedded()
        log.info("stopped")
