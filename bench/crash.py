"""Duplicates after a hard crash: `newsletter send` SIGKILLed at random points, then run again, N times.

    .venv/bin/python bench/crash.py [--kills 20] [--members 400] [--connections 4] [--seed 1]

Each round: a fresh workspace whose list has `members` subscribers, a real SMTP server (aiosmtpd, in this process,
5 ms per message), `send --no-dry-run` killed with SIGKILL once a random number of messages are in, then the same
command again until the campaign is finished. It prints, per round, where the kill fell and how many subscribers
got the issue twice, and checks the bound the README states for SMTP: at most two per connection, nobody missing.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from example import ASSET_BASE_URL, copy_example  # noqa: E402
from smtp_server import RunningSmtp, SmtpSink  # noqa: E402

from newsletter.sending.wiring import open_store  # noqa: E402
from newsletter.subscribers import add  # noqa: E402
from newsletter.workspace import Workspace  # noqa: E402

SLUG = "2024-11-forum-des-alliances"


def workspace(folder: Path, members: int, connections: int) -> Path:
    copy_example(folder)
    with (folder / "newsletter.toml").open("a") as config:
        config.write(f"\n[sending]\nlease = 2\nconcurrency = {connections}\n")
    store = open_store(Workspace.discover(folder))
    for number in range(members):
        add(store, "bench", f"abonne{number:04d}@example.org", None)
    store.close()
    return folder


def one_round(members: int, connections: int, kill_after: int) -> tuple[int, int, int]:
    """(messages in when killed, subscribers who got it twice, subscribers who never got it)."""
    with tempfile.TemporaryDirectory() as scratch:
        folder = workspace(Path(scratch), members, connections)
        sink = SmtpSink(delay=0.005)
        with RunningSmtp(sink) as server:
            command = [
                sys.executable,
                "-m",
                "newsletter",
                "send",
                SLUG,
                "--list",
                "bench",
                "--no-dry-run",
                "--json",
                "--transport",
                server.dsn(pool=str(connections)),
            ]
            environment = {**os.environ, "PYTHONPATH": str(ROOT)}
            process = subprocess.Popen(
                command, cwd=folder, env=environment, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
            )
            while len(sink.received) < kill_after and process.poll() is None:
                time.sleep(0.001)
            process.send_signal(signal.SIGKILL)
            process.wait()
            killed_at = len(sink.received)
            done = subprocess.run(command, cwd=folder, env=environment, capture_output=True, text=True)
            assert done.returncode == 0 and json.loads(done.stdout)["pending"] == 0, done.stderr
        counts = sink.per_recipient()
        return killed_at, sum(n - 1 for n in counts.values()), members - len(counts)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kills", type=int, default=20)
    parser.add_argument("--members", type=int, default=400)
    parser.add_argument("--connections", type=int, default=4)
    parser.add_argument("--seed", type=int, default=1)
    arguments = parser.parse_args()
    os.environ.update(
        NEWSLETTER_SECRET_KEY="bench-secret-key-0123456789abcdef", NEWSLETTER_ASSET_BASE_URL=ASSET_BASE_URL
    )
    os.environ.pop("NEWSLETTER_DATABASE_URL", None)
    chooser = random.Random(arguments.seed)
    bound = 2 * arguments.connections
    worst = 0
    for number in range(1, arguments.kills + 1):
        killed_at, twice, missing = one_round(
            arguments.members, arguments.connections, chooser.randint(1, arguments.members - 1)
        )
        worst = max(worst, twice)
        print(f"round {number:2d}: killed after {killed_at:3d} messages; {twice} sent twice, {missing} missing")
        assert missing == 0 and twice <= bound, "the bound does not hold"
    print(
        f"{arguments.kills} kills over {arguments.connections} SMTP connections: at most {worst} sent twice "
        f"(bound {bound}: two per connection), nobody missing"
    )


if __name__ == "__main__":
    main()
