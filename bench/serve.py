"""One-click unsubscribes per second against `newsletter serve`, on SQLite and on PostgreSQL.

    .venv/bin/python bench/serve.py [--subscribers 5000] [--clients 50]

Starts `newsletter serve` as its own process on 127.0.0.1 over a list of N subscribers, sends each one's RFC 8058
one-click POST (exactly as Gmail does) from C concurrent clients, and prints requests per second and the number
of unsubscribes the store recorded, which must equal N. PostgreSQL is a throwaway cluster from Debian's package
(tests/postgres_server.py); it is skipped when the package is absent.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "bench"), str(ROOT / "tests")]

from send import SECRET, free_port, workspace_with_list  # noqa: E402

from newsletter.sending import open_store  # noqa: E402
from newsletter.store import Store  # noqa: E402
from newsletter.tokens import TokenSigner  # noqa: E402


async def click_all(base: str, tokens: list[str], clients: int) -> list[int]:
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    semaphore = asyncio.Semaphore(clients)
    headers = {"Content-Type": "application/x-www-form-urlencoded", "User-Agent": "bench"}
    async with httpx.AsyncClient(base_url=base, limits=limits, timeout=60) as client:

        async def click(token: str) -> int:
            async with semaphore:
                response = await client.post(f"/u/{token}", content=b"List-Unsubscribe=One-Click", headers=headers)
                return response.status_code

        return await asyncio.gather(*(click(t) for t in tokens))


def measure(engine: str, database: str | None, count: int, clients: int) -> None:
    with tempfile.TemporaryDirectory() as folder:
        environment = {**os.environ, "NEWSLETTER_SECRET_KEY": SECRET}
        if database:
            os.environ["NEWSLETTER_DATABASE_URL"] = environment["NEWSLETTER_DATABASE_URL"] = database
            Store.open(database, upgrade=True).close()
        workspace = workspace_with_list(Path(folder), count)
        signer = TokenSigner(SECRET)
        tokens = [signer.sign(i, "bench") for i in range(1, count + 1)]
        port = free_port()
        server = subprocess.Popen(
            [sys.executable, "-m", "newsletter", "serve", "--port", str(port)],
            cwd=folder, env=environment, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        try:
            for _ in range(300):
                try:
                    httpx.get(f"http://127.0.0.1:{port}/healthz")
                    break
                except httpx.TransportError:
                    time.sleep(0.05)
            started = time.perf_counter()
            codes = asyncio.run(click_all(f"http://127.0.0.1:{port}", tokens, clients))
            seconds = time.perf_counter() - started
        finally:
            server.terminate()
            server.wait()
        store = open_store(workspace)
        recorded = store.count_members(store.list_id("bench"), "unsubscribed")
        store.close()
        os.environ.pop("NEWSLETTER_DATABASE_URL", None)
    ok = sum(code == 200 for code in codes)
    print(f"{engine}: {count} one-click POSTs from {clients} clients in {seconds:.1f} s = {count / seconds:.0f}/s; "
          f"{ok} answered 200; {recorded} unsubscribes recorded")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--subscribers", type=int, default=5000)
    parser.add_argument("--clients", type=int, default=50)
    arguments = parser.parse_args()
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}")
    measure("sqlite", None, arguments.subscribers, arguments.clients)
    from postgres_server import PostgresServer

    try:
        server = PostgresServer().start()
    except FileNotFoundError as exc:
        print(f"postgresql: skipped ({exc})")
        return
    try:
        measure("postgresql", server.new_database(), arguments.subscribers, arguments.clients)
    finally:
        server.stop()


if __name__ == "__main__":
    main()
