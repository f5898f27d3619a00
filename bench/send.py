"""Sending speed and memory: our smtp transport against postfix's own smtp-source, workers on one PostgreSQL
campaign, and a million through null://.

    .venv/bin/python bench/send.py [--recipients 20000] [--connections 4] [--workers 1,2,4] [--million 1000000]

1. N recipients (default 20,000) sent with `newsletter send` (the library call: ledger, runner, smtp transport)
   into postfix's smtp-sink on 127.0.0.1, beside smtp-source sending as many messages of the same size over the
   same number of connections into the same sink; messages per second of each, and the ratio.
2. The time to build one recipient's message (placeholders, headers, MIME bytes), in µs.
3. 1, 2 and 4 `newsletter worker` processes (each with its connections) sharing one scheduled campaign of N into
   smtp-sink, the ledger on a throwaway PostgreSQL server: messages per second from the campaign's start to its
   end, so that the scaling shows.
4. A list of a million subscribers sent through null:// (which builds every message and discards it) by a
   separate process, which reports its own peak resident memory: it stays flat, the ledger being claimed a batch
   at a time. Then the same list made bilingual (`langs = ["fr", "en"]`, every other member reading English) and
   the example issue given its English translation (tests/fixtures/2024-11-forum-des-alliances.en.yaml): one
   campaign, each member their version, beside the one-language send of the same run.
Installs Debian's postfix package when smtp-sink is missing (never starting the postfix daemon).
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import platform
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))  # example.py, also when the null:// step imports this file as bench.send

import sqlalchemy as sa  # noqa: E402
from example import ASSET_BASE_URL, copy_example  # noqa: E402

from newsletter.sending.runner import Pacing  # noqa: E402
from newsletter.sending.send import send  # noqa: E402
from newsletter.sending.wiring import open_store  # noqa: E402
from newsletter.store import ListRow, MembershipStatus, Store, memberships, now, subscribers  # noqa: E402
from newsletter.workspace import Workspace  # noqa: E402

SLUG = "2024-11-forum-des-alliances"
SECRET = "bench-secret-key-0123456789abcdef"


def ensure_postfix_tools() -> bool:
    if shutil.which("smtp-sink") or Path("/usr/sbin/smtp-sink").exists():
        return True
    sudo = [] if os.geteuid() == 0 else ["sudo"]
    print("installing Debian's postfix for smtp-sink and smtp-source (the daemon is not started)…")
    subprocess.run(
        [*sudo, "debconf-set-selections"], input=b"postfix postfix/main_mailer_type select No configuration\n"
    )
    done = subprocess.run(
        [*sudo, "apt-get", "install", "-y", "-qq", "postfix"],
        env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"},
        capture_output=True,
    )
    return done.returncode == 0 and Path("/usr/sbin/smtp-sink").exists()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def workspace_with_list(folder: Path, count: int, *, bilingual: bool = False) -> Workspace:
    """A copy of the example workspace whose list 'bench' has `count` subscribers (bulk-inserted); bilingual: the
    list in French and English, every other member reading English, and the issue with its English version."""
    copy_example(folder)
    if bilingual:
        translation = ROOT / "tests" / "fixtures" / f"{SLUG}.en.yaml"
        shutil.copy(translation, folder / "issues" / SLUG / "issue.en.yaml")
        with (folder / "newsletter.toml").open("a", encoding="utf-8") as toml:
            toml.write('\n[lists.bench]\nlangs = ["fr", "en"]\n')
    workspace = Workspace.discover(folder)
    store = open_store(workspace)
    at, subscribed = now(), MembershipStatus.SUBSCRIBED
    with store.transaction() as connection:
        list_id = store.ensure_list("bench", connection=connection)
        for start in range(0, count, 50_000):
            rows = range(start, min(count, start + 50_000))
            connection.execute(
                subscribers.insert(),
                [
                    {
                        "id": i + 1,
                        "email": f"abonne{i}@example.org",
                        "email_key": f"abonne{i}@example.org",
                        "name": f"Abonné·e {i}",
                        "fields": {},
                        "created_at": at,
                        "lang": "en" if bilingual and i % 2 else None,
                    }
                    for i in rows
                ],
            )
            connection.execute(
                memberships.insert(),
                [{"subscriber_id": i + 1, "list_id": list_id, "status": subscribed, "updated_at": at} for i in rows],
            )
        assert connection.execute(sa.select(sa.func.count()).select_from(subscribers)).scalar() == count
        if connection.dialect.name == "postgresql":  # the ids were given: move the sequence past them
            connection.exec_driver_sql(
                "SELECT setval(pg_get_serial_sequence('subscribers', 'id'), max(id)) FROM subscribers"
            )
    store.close()
    return workspace


def send_through(workspace: Workspace, dsn: str, connections: int) -> tuple[float, dict]:
    started = time.perf_counter()
    summary = asyncio.run(
        send(
            workspace,
            workspace.root / "issues" / SLUG,
            "bench",
            dsn_text=dsn,
            dry_run=False,
            pacing=Pacing(concurrency=connections),
        )
    )
    return time.perf_counter() - started, summary.counts


def measure_smtp(recipients: int, connections: int) -> None:
    if not ensure_postfix_tools():
        print("smtp-sink is not available and postfix could not be installed: SMTP figures skipped")
        return
    port = free_port()
    user = ["-u", "nobody"] if os.geteuid() == 0 else []
    sink = subprocess.Popen(["/usr/sbin/smtp-sink", *user, f"127.0.0.1:{port}", "1024"], stderr=subprocess.DEVNULL)
    time.sleep(0.3)
    try:
        with tempfile.TemporaryDirectory() as folder:
            workspace = workspace_with_list(Path(folder), recipients)
            seconds, counts = send_through(
                workspace, f"smtp://127.0.0.1:{port}?tls=none&pool={connections}", connections
            )
            size = len(next(iter(build_messages(workspace, 1))))
        ours = counts["sent"] / seconds
        started = time.perf_counter()
        subprocess.run(
            [
                "/usr/sbin/smtp-source",
                "-s",
                str(connections),
                "-m",
                str(recipients),
                "-l",
                str(size),
                "-f",
                "bulletin@example.org",
                "-t",
                "abonne@example.org",
                f"127.0.0.1:{port}",
            ],
            check=True,
            stdout=subprocess.DEVNULL,
        )
        theirs = recipients / (time.perf_counter() - started)
    finally:
        sink.terminate()
        sink.wait()
    print(
        f"smtp: {counts['sent']} of {recipients} sent ({counts['failed']} failed) in {seconds:.1f} s "
        f"= {ours:.0f} msg/s over {connections} connections (messages of {size / 1024:.0f} KB)"
    )
    print(f"smtp-source, same sink, {connections} connections, same size: {theirs:.0f} msg/s")
    print(f"ratio newsletter / smtp-source: {ours / theirs:.2f}")


def build_messages(workspace: Workspace, count: int):
    from newsletter.message import Recipient
    from newsletter.sending.send import prepare

    prepared = prepare(workspace, workspace.root / "issues" / SLUG, "null://", "bench", real=True)
    campaign = prepared.freeze(ListRow(1, "bench", "bench")).campaign(1, prepared.signer)
    return (campaign.build(Recipient(i, f"abonne{i}@example.org", f"Abonné·e {i}")).to_bytes() for i in range(count))


def measure_build(count: int = 20_000) -> None:
    with tempfile.TemporaryDirectory() as folder:
        workspace = workspace_with_list(Path(folder), 1)
        messages = build_messages(workspace, count)
        next(messages)
        started = time.perf_counter()
        for _ in messages:
            pass
        elapsed = time.perf_counter() - started
    print(f"one message built (placeholders, headers, MIME bytes): {elapsed / (count - 1) * 1e6:.0f} µs")


def peak_kb() -> int:
    """This process's peak resident memory in KB. VmHWM, which exec resets: ru_maxrss would also count the memory
    of the parent this process was forked from (the bench holds a million-row list when it starts the send)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    except OSError:
        pass
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def measure_million(count: int) -> None:
    for bilingual in (False, True):
        measure_million_once(count, bilingual=bilingual)


def measure_million_once(count: int, *, bilingual: bool) -> None:
    what = "bilingual " if bilingual else ""
    with tempfile.TemporaryDirectory() as folder:
        started = time.perf_counter()
        workspace_with_list(Path(folder), count, bilingual=bilingual)
        half = " (half of them reading English)" if bilingual else ""
        made = time.perf_counter() - started
        print(f"a {what}list of {count:,} subscribers{half} made in {made:.0f} s (bulk insert)")
        code = (
            "import asyncio, sys, time; from pathlib import Path; sys.path.insert(0, sys.argv[2]);"
            "from newsletter.workspace import Workspace; from newsletter.sending.send import send;"
            "from bench.send import peak_kb;"
            "w = Workspace.discover(Path(sys.argv[1])); t = time.perf_counter();"
            f"s = asyncio.run(send(w, w.root / 'issues' / '{SLUG}', 'bench', dsn_text='null://', dry_run=False));"
            "print(s.counts['sent'], time.perf_counter() - t, peak_kb())"
        )
        done = subprocess.run(
            [sys.executable, "-c", code, folder, str(ROOT)],
            capture_output=True,
            text=True,
            env={**os.environ, "NEWSLETTER_SECRET_KEY": SECRET},
        )
        if done.returncode:
            print(done.stderr)
            return
        sent, seconds, peak_kb = done.stdout.split()
    print(
        f"null://{' in two languages' if bilingual else ''}: {int(sent):,} sent in {float(seconds):.0f} s = "
        f"{int(sent) / float(seconds):.0f} msg/s (ledger included); peak memory of the sending process "
        f"{int(peak_kb) / 1024:.0f} MB"
    )


def measure_workers(recipients: int, connections: int, counts: list[int]) -> None:
    """k worker processes on one PostgreSQL campaign into smtp-sink, for each k."""
    sys.path.insert(0, str(ROOT / "tests"))
    from postgres_server import PostgresServer

    if not ensure_postfix_tools():
        return
    try:
        server = PostgresServer().start()
    except FileNotFoundError as exc:
        print(f"workers: skipped ({exc})")
        return
    port = free_port()
    user = ["-u", "nobody"] if os.geteuid() == 0 else []
    sink = subprocess.Popen(["/usr/sbin/smtp-sink", *user, f"127.0.0.1:{port}", "1024"], stderr=subprocess.DEVNULL)
    try:
        for count in counts:
            url = server.new_database()
            os.environ["NEWSLETTER_DATABASE_URL"] = url
            Store.open(url, upgrade=True).close()
            with tempfile.TemporaryDirectory() as folder:
                workspace = workspace_with_list(Path(folder), recipients)
                at = (now() + dt.timedelta(seconds=3)).isoformat()
                summary = asyncio.run(
                    send(workspace, workspace.root / "issues" / SLUG, "bench", dsn_text="null://", dry_run=False, at=at)
                )
                environment = {
                    **os.environ,
                    "NEWSLETTER_TRANSPORT": f"smtp://127.0.0.1:{port}?tls=none&pool={connections}",
                    "PYTHONPATH": str(ROOT),
                }
                workers = [
                    subprocess.Popen(
                        [sys.executable, "-m", "newsletter", "worker", "--json"],
                        cwd=folder,
                        env=environment,
                        stdout=subprocess.PIPE,
                        stderr=subprocess.DEVNULL,
                    )
                    for _ in range(count)
                ]
                store = Store.open(url)
                while (row := store.campaign(summary.campaign)).status != "finished":
                    time.sleep(0.2)
                for worker in workers:
                    worker.send_signal(signal.SIGTERM)
                shares = [json.loads(worker.communicate()[0])["sent"] for worker in workers]
                seconds = (row.finished_at - row.started_at).total_seconds()
                store.close()
            print(
                f"{count} worker{'s' if count > 1 else ''} × {connections} connections, PostgreSQL ledger: "
                f"{recipients} in {seconds:.1f} s = {recipients / seconds:.0f} msg/s (each sent {shares})"
            )
    finally:
        os.environ.pop("NEWSLETTER_DATABASE_URL", None)
        sink.terminate()
        sink.wait()
        server.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipients", type=int, default=20_000)
    parser.add_argument("--connections", type=int, default=4)
    parser.add_argument("--workers", default="1,2,4", help="worker counts on one PostgreSQL campaign ('' to skip)")
    parser.add_argument("--million", type=int, default=1_000_000, help="size of the null:// list (0 to skip)")
    arguments = parser.parse_args()
    os.environ.update(NEWSLETTER_SECRET_KEY=SECRET, NEWSLETTER_ASSET_BASE_URL=ASSET_BASE_URL)
    os.environ.pop("NEWSLETTER_DATABASE_URL", None)
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}")
    measure_build()
    measure_smtp(arguments.recipients, arguments.connections)
    if arguments.workers:
        measure_workers(arguments.recipients, arguments.connections, [int(n) for n in arguments.workers.split(",")])
    if arguments.million:
        measure_million(arguments.million)


if __name__ == "__main__":
    main()
