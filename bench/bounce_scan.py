"""`newsletter bounces scan` of a mailbox of 10,000 returned messages on a throwaway Dovecot (tests/imap_server.py)
on 127.0.0.1, over IMAPS, beside imaplib fetching the same messages with no parsing (the reference), in the same run.

    .venv/bin/python bench/bounce_scan.py [--messages 10000]

1. A workspace whose SQLite store has `messages` members on one list, sent a campaign through null://.
2. One returned message per member, delivered into the server's Maildir as a delivery agent does: to the return
   path of that member's message (VERP), as mail servers write them: 70 % hard bounces (Postfix's RFC 3464 DSN),
   20 % soft ones (mailbox full), 5 % auto-replies, 5 % letters that are none of these (left for review). A
   second folder holds a quarter as many, for the memory of a smaller scan beside it.
3. The reference, in a process of its own: imaplib, UID FETCH of BODY.PEEK[] by 250, nothing parsed (the readers
   of bench/imap_fetch.py); then `newsletter bounces scan --json` on the same folder: every message fetched,
   classified, matched, recorded with what it does in one transaction each, and moved to Processed (95 % of them).
   Its time, its ratio to the reference, its peak resident memory (VmHWM) beside that of the scan of the smaller
   folder: the same, whatever the folder's size, is the flat memory the issue asks for.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "bench"))

from bounce_messages import dsn, vacation  # noqa: E402
from imap_fetch import run as fetch  # noqa: E402
from imap_server import DovecotServer  # noqa: E402
from processes import SECRET, mb, newsletter, workspace  # noqa: E402

from newsletter.store import Store  # noqa: E402
from newsletter.tokens import TokenSigner  # noqa: E402

LIST = "alliances"


def returned(number: int, to: str, address: str) -> bytes:
    kind = number % 20
    if kind < 14:
        return dsn(to, address)
    if kind < 18:
        return dsn(to, address, "4.2.2", diagnostic="452 4.2.2 <{recipient}>: mailbox full")
    if kind < 19:
        return vacation(to)
    return f"From: {address}\r\nTo: {to}\r\nSubject: Re: le bulletin\r\n\r\nMerci ! ({number})\r\n".encode()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=10_000)
    options = parser.parse_args()
    count, small = options.messages, options.messages // 4

    server = DovecotServer(oauth2=False, password="bench-password").start()
    with tempfile.TemporaryDirectory(prefix="nl-bounce-bench-") as folder:
        root = workspace(Path(folder))
        os.environ.update(server.environ(), NEWSLETTER_SECRET_KEY=SECRET)
        for variable in ("NEWSLETTER_DATABASE_URL", "NEWSLETTER_TRANSPORT"):
            os.environ.pop(variable, None)
        rows = "\n".join(["courriel,nom", *(f"membre{i}@example.org,Membre {i}" for i in range(count + small))])
        (root / "membres.csv").write_text(rows + "\n", encoding="utf-8")
        with (root / "newsletter.toml").open("a", encoding="utf-8") as toml:
            toml.write(f'\n[bounces]\nreturn_path = "bounces+{{token}}@crdbsl.org"\nmailbox = "{server.url("A")}"\n')
        newsletter(root, "subscribers", "import", "membres.csv", "--list", LIST)
        newsletter(
            root, "send", "2024-11-forum-des-alliances", "--list", LIST, "--no-dry-run", "--transport", "null://"
        )
        store = Store.open(f"sqlite:///{root / 'subscribers' / 'newsletter.db'}")
        signer = TokenSigner(SECRET)
        campaign = store.latest_campaign("2024-11-forum-des-alliances", store.list_id(LIST))
        assert campaign is not None
        started = time.perf_counter()
        for number in range(count + small):
            address = f"membre{number}@example.org"
            subscriber = store.find_subscriber(address)
            assert subscriber is not None
            to = f"bounces+{signer.sign_return_path(campaign.id, subscriber)}@crdbsl.org"
            server.deliver(returned(number, to, address), "A" if number < count else "B")
        delivered = time.perf_counter() - started
        store.close()

        fetch("imaplib-all", server, "A")  # Dovecot builds its index at the first session: every reader finds it
        reference = min((fetch("imaplib-batches", server, "A") for _ in range(3)), key=lambda r: r["seconds"])
        seconds, peak, out = newsletter(root, "bounces", "scan", "--json", stdout=subprocess.PIPE)
        report = json.loads(out)
        toml = (root / "newsletter.toml").read_text(encoding="utf-8")
        (root / "newsletter.toml").write_text(toml.replace(server.url("A"), server.url("B")), encoding="utf-8")
        small_seconds, small_peak, small_out = newsletter(root, "bounces", "scan", "--json", stdout=subprocess.PIPE)
        server.stop()

    print(
        f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}; "
        f"Dovecot on 127.0.0.1 over IMAPS, SQLite store ({count + small:,} members, one campaign)"
    )
    print(f"{count:,} returned messages written into the Maildir in {delivered:.1f} s")
    print(
        f"reference (imaplib, UID FETCH by 250, nothing parsed): {reference['count']:,} messages in "
        f"{reference['seconds']:.2f} s, peak {mb(reference['peak_kb'])}"
    )
    decided = ", ".join(f"{n:,} {kind}" for kind, n in sorted(report["decided"].items()))
    print(
        f"bounces scan: {report['read']:,} messages in {seconds:.1f} s = {report['read'] / seconds:,.0f} messages/s, "
        f"peak {mb(peak)}; {decided}; {report['memberships_changed']:,} memberships changed, {report['moved']:,} "
        f"moved, {len(report['left']):,} left"
    )
    print(f"ratio scan / reference: {seconds / reference['seconds']:.1f}; the issue's bound: 60 s")
    small_report = json.loads(small_out)
    print(
        f"bounces scan of {small_report['read']:,} messages: {small_seconds:.1f} s, peak {mb(small_peak)} "
        f"(the {count:,}-message scan's peak is {peak / small_peak:.2f} × this one's)"
    )


if __name__ == "__main__":
    main()
