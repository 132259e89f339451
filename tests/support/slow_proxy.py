"""A TCP proxy on loopback that lets bytes through slowly (``rate`` bytes a second in
each direction): a peer on a slow link, so that a transfer lasts long enough for a test
to cancel it or to see its timeout stop it."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress

CHUNK = 16 * 1024


def _pump(src: socket.socket, dst: socket.socket, rate: int, stop: threading.Event) -> None:
    try:
        while not stop.is_set():
            data = src.recv(CHUNK)
            if not data:
                break
            dst.sendall(data)
            time.sleep(len(data) / rate)
    except OSError:
        pass  # either side went away: the other is closed below
    finally:
        for s in (src, dst):
            with suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)


@contextmanager
def slow_proxy(upstream_port: int, rate: int) -> Iterator[int]:
    """A proxy to ``127.0.0.1:upstream_port``; yields its own port."""
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(0.2)
    stop = threading.Event()
    sockets: list[socket.socket] = []

    def serve() -> None:
        while not stop.is_set():
            try:
                client, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", upstream_port))
            sockets.extend((client, upstream))
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=_pump, args=(a, b, rate, stop), daemon=True).start()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield listener.getsockname()[1]
    finally:
        stop.set()
        listener.close()
        thread.join(5)
        for s in sockets:
            with suppress(OSError):
                s.close()
