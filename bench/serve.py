"""`newsletter serve` under load, measured with wrk beside a bare Starlette endpoint on the same uvicorn.

    .venv/bin/python bench/serve.py [--subscribers 60000] [--connections 50] [--seconds 10]

1. A bare Starlette app (one POST route answering "ok") served by uvicorn as its own process: wrk's requests per
   second with C connections. That is the ceiling of this machine for one uvicorn worker.
2. `newsletter serve` as its own process over a list of N subscribers: wrk sends RFC 8058 one-click POSTs (exactly
   as Gmail does), each token once, for the same time with the same connections; requests per second, its ratio
   to the bare endpoint, and the check that every POST answered 200 was recorded in the store.
3. The same for POST /subscribe: a distinct address per request, on a list open to sign-up, the confirmation
   emails going to null://.
On SQLite, then on a throwaway PostgreSQL server (Debian's package). Installs Debian's wrk when it is missing.
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "bench"), str(ROOT / "tests")]

from send import SECRET, free_port, workspace_with_list  # noqa: E402

from newsletter.sending.wiring import open_store  # noqa: E402
from newsletter.store import Store  # noqa: E402
from newsletter.tokens import TokenSigner  # noqa: E402

BARE_APP = """
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Route

async def ok(request):
    await request.body()
    return PlainTextResponse("ok")

app = Starlette(routes=[Route("/ok", ok, methods=["POST"])])
"""

# Each wrk thread walks its own slice of the paths file, one request per line, never the same line twice.
WRK_SCRIPT = """
local paths, bodies = {}, {}
for line in io.lines("%(paths)s") do
  local path, body = line:match("([^\\t]*)\\t(.*)")
  paths[#paths + 1], bodies[#bodies + 1] = path, body
end
local counter = 0
function setup(thread)
  thread:set("first", counter)
  counter = counter + 1
end
function init(args)
  index = first
  step = %(threads)d
end
function request()
  index = index + step
  if index > #paths then index = index - #paths end
  return wrk.format("POST", paths[index], {["Content-Type"] = "application/x-www-form-urlencoded",
                                             ["User-Agent"] = "bench"}, bodies[index])
end
done = function(summary, latency, requests)
  io.write(string.format("non2xx=%%d\\n", summary.errors.status))
end
"""


QUIET_UVICORN = ("--log-level", "warning", "--no-access-log")


def ensure_wrk() -> str | None:
    if found := shutil.which("wrk"):
        return found
    sudo = [] if os.geteuid() == 0 else ["sudo"]
    print("installing Debian's wrk…")
    subprocess.run(
        [*sudo, "apt-get", "install", "-y", "-qq", "wrk"],
        capture_output=True,
        env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"},
    )
    return shutil.which("wrk")


def wait_until_up(port: int) -> None:
    for _ in range(400):
        try:
            httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1)
            return
        except httpx.TransportError:
            time.sleep(0.05)


def run_wrk(port: int, lines: list[str], connections: int, seconds: int) -> tuple[float, int, int]:
    """(requests per second, requests, non-2xx answers) of wrk POSTing these `path<TAB>body` lines."""
    with tempfile.TemporaryDirectory() as folder:
        paths = Path(folder) / "paths.tsv"
        paths.write_text("\n".join(lines) + "\n")
        script = Path(folder) / "post.lua"
        script.write_text(WRK_SCRIPT % {"paths": paths, "threads": 2})
        done = subprocess.run(
            ["wrk", "-t2", f"-c{connections}", f"-d{seconds}s", "-s", str(script), f"http://127.0.0.1:{port}"],
            capture_output=True,
            text=True,
            check=True,
        )
    rate = float(re.search(r"Requests/sec:\s+([\d.]+)", done.stdout).group(1))
    requests = int(re.search(r"(\d+) requests in", done.stdout).group(1))
    non_2xx = int(re.search(r"non2xx=(\d+)", done.stdout).group(1))
    return rate, requests, non_2xx


def bare(connections: int, seconds: int) -> float:
    with tempfile.TemporaryDirectory() as folder:
        (Path(folder) / "bare.py").write_text(BARE_APP)
        port = free_port()
        server = subprocess.Popen(
            [sys.executable, "-m", "uvicorn", "bare:app", "--port", str(port), *QUIET_UVICORN],
            cwd=folder,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            for _ in range(400):
                try:
                    httpx.post(f"http://127.0.0.1:{port}/ok", timeout=1)
                    break
                except httpx.TransportError:
                    time.sleep(0.05)
            rate, _, _ = run_wrk(port, ["/ok\tx"], connections, seconds)
        finally:
            server.terminate()
            server.wait()
    return rate


def measure(engine: str, database: str | None, count: int, connections: int, seconds: int) -> list:
    """[(what, requests per second, what was checked)] for one-click and for sign-ups on this engine."""
    with tempfile.TemporaryDirectory() as folder:
        environment = {**os.environ, "NEWSLETTER_SECRET_KEY": SECRET, "NEWSLETTER_TRANSPORT": "null://"}
        if database:
            os.environ["NEWSLETTER_DATABASE_URL"] = environment["NEWSLETTER_DATABASE_URL"] = database
            Store.open(database, upgrade=True).close()
        workspace = workspace_with_list(Path(folder), count)
        with (Path(folder) / "newsletter.toml").open("a") as config:
            config.write(
                textwrap.dedent("""
                [serve]
                signups_per_block = 1000000  # wrk comes from one address

                [lists.bench]
                subscribe = true
                """)
            )
        signer = TokenSigner(SECRET)
        clicks = [f"/u/{signer.sign(i, 'bench')}\tList-Unsubscribe=One-Click" for i in range(1, count + 1)]
        signups = [f"/subscribe/bench\temail=nouveau{i}%40example.org&name=N" for i in range(count)]
        port = free_port()
        server = subprocess.Popen(
            [sys.executable, "-m", "newsletter", "serve", "--port", str(port)],
            cwd=folder,
            env=environment,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            wait_until_up(port)
            click_rate, clicked, click_errors = run_wrk(port, clicks, connections, seconds)
            signup_rate, signed, signup_errors = run_wrk(port, signups, connections, seconds)
        finally:
            server.terminate()
            server.wait()
        store = open_store(workspace)
        list_id = store.list_id("bench")
        recorded = store.count_members(list_id, "unsubscribed")
        pending = store.count_members(list_id, "pending")
        store.close()
        os.environ.pop("NEWSLETTER_DATABASE_URL", None)
    clicks_ok, signups_ok = min(clicked, count) - click_errors, min(signed, count) - signup_errors
    return [
        (
            f"{engine}: one-click",
            click_rate,
            f"{clicks_ok} answered 200 (non-2xx {click_errors}), {recorded} unsubscribes recorded",
        ),
        (
            f"{engine}: POST /subscribe",
            signup_rate,
            f"{signups_ok} answered 200 (non-2xx {signup_errors}), {pending} sign-ups recorded",
        ),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--subscribers", type=int, default=60_000)
    parser.add_argument("--connections", type=int, default=50)
    parser.add_argument("--seconds", type=int, default=10)
    arguments = parser.parse_args()
    if ensure_wrk() is None:
        print("wrk is not available and could not be installed")
        return
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}")
    # This machine's speed moves from one minute to the next: the reference is the mean of a run before and after.
    before = bare(arguments.connections, arguments.seconds)
    print(f"bare Starlette POST endpoint, same uvicorn, wrk {arguments.connections} connections: {before:.0f}/s")
    results = [measure("sqlite", None, arguments.subscribers, arguments.connections, arguments.seconds)]
    from postgres_server import PostgresServer

    try:
        server = PostgresServer().start()
    except FileNotFoundError as exc:
        print(f"postgresql: skipped ({exc})")
    else:
        try:
            results.append(
                measure(
                    "postgresql", server.new_database(), arguments.subscribers, arguments.connections, arguments.seconds
                )
            )
        finally:
            server.stop()
    after = bare(arguments.connections, arguments.seconds)
    print(f"bare Starlette again, after: {after:.0f}/s; the reference is their mean, {(before + after) / 2:.0f}/s")
    mean = (before + after) / 2
    for line in results:
        for what, rate, rest in line:
            print(f"{what} {rate:.0f}/s = {rate / mean:.0%} of bare Starlette; {rest}")


if __name__ == "__main__":
    main()
