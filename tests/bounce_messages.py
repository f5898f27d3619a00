"""Returned mail for the scan tests, shaped as the servers send it: an RFC 3464 delivery status notification
(Postfix's wording) quoting the headers of the message that bounced, an RFC 5965 complaint, an auto-reply."""

from __future__ import annotations

import email.utils
import itertools
import mailbox
from pathlib import Path

_numbers = itertools.count(1)


def dsn(
    to: str,
    recipient: str,
    status: str = "5.1.1",
    *,
    action: str = "failed",
    diagnostic: str = "550 5.1.1 <{recipient}>: Recipient address rejected: User unknown in virtual mailbox table",
    original_headers: bytes = b"",
) -> bytes:
    """A Postfix bounce delivered to `to` (the return path: bounces+TOKEN@… with VERP) about `recipient`."""
    number = next(_numbers)
    boundary = f"B{number}.1733300000/mail.example.net"
    diagnostic = diagnostic.format(recipient=recipient)
    head = (
        f"Return-Path: <>\r\nDelivered-To: {to}\r\nDate: {email.utils.formatdate()}\r\n"
        f"From: MAILER-DAEMON@mail.example.net (Mail Delivery System)\r\nSubject: Undelivered Mail Returned to "
        f"Sender\r\nTo: {to}\r\nAuto-Submitted: auto-replied\r\nMIME-Version: 1.0\r\n"
        f"Message-Id: <{number}.bounce@mail.example.net>\r\n"
        f'Content-Type: multipart/report; report-type=delivery-status; boundary="{boundary}"\r\n\r\n'
    )
    human = (
        "This is the mail system at host mail.example.net.\r\n\r\nI'm sorry to have to inform you that your "
        "message could not\r\nbe delivered to one or more recipients.\r\n\r\n"
        f"<{recipient}>: host mx.example.net said: {diagnostic}\r\n"
    )
    report = (
        "Reporting-MTA: dns; mail.example.net\r\nArrival-Date: Wed,  4 Dec 2026 10:00:00 -0500 (EST)\r\n\r\n"
        f"Final-Recipient: rfc822; {recipient}\r\nOriginal-Recipient: rfc822;{recipient}\r\nAction: {action}\r\n"
        f"Status: {status}\r\nRemote-MTA: dns; mx.example.net\r\nDiagnostic-Code: smtp; {diagnostic}\r\n"
    )
    parts = [
        f"--{boundary}\r\nContent-Description: Notification\r\nContent-Type: text/plain; charset=us-ascii\r\n\r\n"
        f"{human}\r\n",
        f"--{boundary}\r\nContent-Description: Delivery report\r\nContent-Type: message/delivery-status\r\n\r\n"
        f"{report}\r\n",
    ]
    if original_headers:
        parts.append(
            f"--{boundary}\r\nContent-Description: Undelivered Message Headers\r\n"
            f"Content-Type: text/rfc822-headers\r\n\r\n"
        )
    body = "".join(parts).encode() + (original_headers + b"\r\n" if original_headers else b"")
    return head.encode() + body + f"--{boundary}--\r\n".encode()


def complaint(to: str, original_headers: bytes, complainant: str = "") -> bytes:
    """An ARF report (RFC 5965) from a mailbox provider's feedback loop, the recipient redacted unless given."""
    number = next(_numbers)
    boundary = f"ARF{number}"
    rcpt = f"Original-Rcpt-To: {complainant}\r\n" if complainant else ""
    return (
        (
            f"From: feedback@fbl.example.com\r\nTo: {to}\r\nDelivered-To: {to}\r\nSubject: complaint about message\r\n"
            f"Date: {email.utils.formatdate()}\r\nMessage-ID: <{number}.arf@fbl.example.com>\r\nMIME-Version: 1.0\r\n"
            f'Content-Type: multipart/report; report-type=feedback-report; boundary="{boundary}"\r\n\r\n'
            f"--{boundary}\r\nContent-Type: text/plain\r\n\r\nThis is an email abuse report.\r\n\r\n"
            f"--{boundary}\r\nContent-Type: message/feedback-report\r\n\r\nFeedback-Type: abuse\r\n"
            f"User-Agent: ExampleFBL/1.0\r\nVersion: 1\r\n{rcpt}\r\n"
            f"--{boundary}\r\nContent-Type: text/rfc822-headers\r\n\r\n"
        ).encode()
        + original_headers
        + f"\r\n--{boundary}--\r\n".encode()
    )


def vacation(to: str) -> bytes:
    number = next(_numbers)
    return (
        f"From: Marie <marie@example.org>\r\nTo: {to}\r\nDelivered-To: {to}\r\nSubject: Réponse automatique : "
        f"Le bulletin\r\nDate: {email.utils.formatdate()}\r\nMessage-ID: <{number}.ooo@example.org>\r\n"
        "Auto-Submitted: auto-replied\r\nContent-Type: text/plain; charset=utf-8\r\nMIME-Version: 1.0\r\n\r\n"
        "Je suis absente du bureau jusqu'au 6 janvier.\r\n"
    ).encode()


def headers_of(raw: bytes) -> bytes:
    """A message's header block, as a bounce quotes it (text/rfc822-headers)."""
    return raw.split(b"\r\n\r\n", 1)[0] + b"\r\n"


def into_maildir(folder: Path, *messages: bytes) -> None:
    box = mailbox.Maildir(folder, create=True)
    for raw in messages:
        box.add(raw)
    box.close()


def maildir_count(folder: Path) -> int:
    return sum(1 for part in ("new", "cur") for p in (folder / part).glob("*") if p.is_file())
