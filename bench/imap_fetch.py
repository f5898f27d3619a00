"""Reading the bounce mailbox over IMAP: open_mailbox(...).messages() beside imaplib alone, the reference, on a
throwaway Dovecot (tests/imap_server.py) on 127.0.0.1, over IMAPS.

    .venv/bin/python bench/imap_fetch.py [--messages 10000] [--runs 3]

1. `messages` DSNs of about 900 bytes, each a little different, written into the server's Maildir as a delivery agent
   does; one session then selects the folder and lists it, so that Dovecot's index is built before any timing.
2. Each reader in a process of its own, which reports its time and its peak resident memory (VmHWM) as it ends:
   - imaplib, one UID FETCH 1:* of BODY.PEEK[] for the whole folder (what a short script does: memory grows
     with the folder);
   - imaplib, UID FETCH of BODY.PEEK[] by ranges of 250 UIDs, nothing parsed (the reference: the same batches as
     ours, and nothing else);
   - open_mailbox(...).messages(): the listing of UIDs and sizes, then batches of 250, every response parsed into
     MailboxMessage;
   - a process that only logs in and selects the folder, for the memory every one of them starts with.
   Each the best of `runs` runs, their order alternated; the ratio is ours over the reference.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from imap_server import DovecotServer  # noqa: E402

FOLDER = "Bounces"

# Run in a child process: argv is the reader, the URL, the host, the port, the user and the CA file; the
# password comes in NEWSLETTER_BOUNCES_PASSWORD, as for the mailbox itself.
CHILD = r"""
import imaplib, json, os, ssl, sys, time
sys.path.insert(0, os.environ["NEWSLETTER_ROOT"])
reader, url, host, port, user, ca = sys.argv[1:7]
password = os.environ["NEWSLETTER_BOUNCES_PASSWORD"]
from newsletter.bounces.mailbox import open_mailbox
count = size = 0
started = time.perf_counter()
if reader == "mailbox":
    with open_mailbox(url, {"NEWSLETTER_BOUNCES_PASSWORD": password, "SSL_CERT_FILE": ca}) as mailbox:
        for message in mailbox.messages():
            count += 1
            size += len(message.raw)
else:
    imap = imaplib.IMAP4_SSL(host, int(port), ssl_context=ssl.create_default_context(cafile=ca))
    imap.login(user, password)
    imap.select('"' + url.rpartition("/")[2] + '"')
    if reader == "imaplib-all":
        typ, data = imap.uid("FETCH", "1:*", "(BODY.PEEK[])")
        for item in data:
            if isinstance(item, tuple):
                count += 1
                size += len(item[1])
        del data
    elif reader == "imaplib-batches":
        typ, data = imap.uid("SEARCH", "ALL")
        uids = [int(uid) for uid in data[0].split()]
        for start in range(0, len(uids), 250):
            batch = uids[start : start + 250]
            typ, data = imap.uid("FETCH", f"{batch[0]}:{batch[-1]}", "(BODY.PEEK[])")
            for item in data:
                if isinstance(item, tuple):
                    count += 1
                    size += len(item[1])
    imap.logout()
seconds = time.perf_counter() - started
peak = next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmHWM:"))
print(json.dumps({"count": count, "bytes": size, "seconds": seconds, "peak_kb": peak}))
"""

READERS = ["imaplib-all", "imaplib-batches", "mailbox", "login"]


def bounce(number: int) -> bytes:
    return (
        b"Return-Path: <>\r\nFrom: Mail Delivery System <MAILER-DAEMON@mx.example.net>\r\n"
        b"To: bounces+c12-" + str(number).encode() + b"@crdbsl.org\r\n"
        b"Subject: Undelivered Mail Returned to Sender\r\nMIME-Version: 1.0\r\n"
        b'Content-Type: multipart/report; report-type=delivery-status; boundary="b"\r\n\r\n'
        b"--b\r\nContent-Type: text/plain\r\n\r\nThis is the mail system at host mx.example.net.\r\n"
        b"I'm sorry to have to inform you that your message could not be delivered to one or more recipients.\r\n"
        b"\r\n--b\r\nContent-Type: message/delivery-status\r\n\r\nReporting-MTA: dns; mx.example.net\r\n\r\n"
        b"Final-Recipient: rfc822; membre" + str(number).encode() + b"@example.org\r\nAction: failed\r\n"
        b"Status: 5.1.1\r\nDiagnostic-Code: smtp; 550 5.1.1 <membre" + str(number).encode() + b"@example.org>: "
        b"Recipient address rejected: User unknown in virtual mailbox table\r\n\r\n"
        b"--b\r\nContent-Type: text/rfc822-headers\r\n\r\nFrom: Bulletin <bulletin@crdbsl.org>\r\n"
        b"To: membre" + str(number).encode() + b"@example.org\r\nSubject: Le bulletin de novembre\r\n"
        b"Message-ID: <c12." + str(number).encode() + b"@crdbsl.org>\r\n\r\n--b--\r\n"
    )


def run(reader: str, server: DovecotServer, folder: str = FOLDER) -> dict:
    url = server.url(folder)
    environ = {**os.environ, "NEWSLETTER_BOUNCES_PASSWORD": server.password, "NEWSLETTER_ROOT": str(ROOT)}
    command = [sys.executable, "-c", CHILD, reader, url, server.host, str(server.tls_port), server.user]
    output = subprocess.run([*command, str(server.ca_file)], env=environ, capture_output=True, text=True, check=True)
    return json.loads(output.stdout)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=10_000)
    parser.add_argument("--runs", type=int, default=3)
    options = parser.parse_args()

    server = DovecotServer(oauth2=False, password="bench-password").start()  # ASCII, for imaplib's LOGIN
    try:
        started = time.perf_counter()
        for number in range(options.messages):
            server.deliver(bounce(number), FOLDER)
        delivered = time.perf_counter() - started
        # Dovecot moves new/ to cur/ and builds its index at the first session, and the files are read once:
        # every reader then finds the same warm server and page cache.
        run("imaplib-all", server)
        best: dict[str, dict] = {}
        for run_number in range(options.runs):
            order = READERS if run_number % 2 == 0 else READERS[::-1]
            for reader in order:
                result = run(reader, server)
                if reader != "login":
                    assert result["count"] == options.messages, (reader, result)
                if reader not in best or result["seconds"] < best[reader]["seconds"]:
                    best[reader] = result
    finally:
        server.stop()

    size = best["mailbox"]["bytes"] / options.messages
    print(
        f"{options.messages:,} messages of {size:,.0f} bytes on average over IMAPS from Dovecot on 127.0.0.1 "
        f"(written into its Maildir in {delivered:.2f} s); {platform.python_implementation()} "
        f"{platform.python_version()}, best of {options.runs}"
    )
    print()
    print("| reader | time | messages/s | peak memory (VmHWM) | above logging in alone |")
    print("|---|---|---|---|---|")
    login = best["login"]["peak_kb"]
    names = {
        "imaplib-all": "imaplib, one UID FETCH 1:* of the whole folder",
        "imaplib-batches": "imaplib, UID FETCH by 250, nothing parsed (reference)",
        "mailbox": "`open_mailbox(...).messages()`",
        "login": "logging in and selecting the folder only",
    }
    for reader in READERS:
        result = best[reader]
        rate = f"{result['count'] / result['seconds']:,.0f}" if result["count"] else "–"
        above = f"{(result['peak_kb'] - login) / 1024:,.1f} MB" if reader != "login" else "–"
        print(
            f"| {names[reader]} | {result['seconds'] * 1000:,.0f} ms | {rate} | "
            f"{result['peak_kb'] / 1024:,.1f} MB | {above} |"
        )
    ratio = best["mailbox"]["seconds"] / best["imaplib-batches"]["seconds"]
    print()
    print(f"ratio open_mailbox(...).messages() / the reference: {ratio:.2f}")


if __name__ == "__main__":
    main()
