"""Run an ASGI app with uvicorn in a thread, on a free port of 127.0.0.1, for the duration of a block."""

from __future__ import annotations

import socket
import threading
import time
from contextlib import contextmanager

import uvicorn


@contextmanager
def serving(app):
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    # no proxy headers, as `newsletter serve` runs without [serve] trusted_proxies (uvicorn would trust 127.0.0.1)
    config = uvicorn.Config(app, lifespan="off", log_level="warning", access_log=False, proxy_headers=False)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    for _ in range(500):  # until it listens (a bounded wait, not a timing assertion)
        if server.started:
            break
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()
