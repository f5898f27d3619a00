"""What one returned email is: a bounce (RFC 3464 delivery status notification, or the prose of a server that
writes none), a complaint (RFC 5965 ARF), an auto-reply (RFC 3834, or the headers and subjects responders write),
a challenge-response request, or unknown, with the recipients it is about and how severe each failure is.

A pure function of the message's bytes: no store, no network. It reads the MIME structure with the standard
library's email package and the header values itself (raw, then RFC 2047-decoded), so that a header the modern
policy cannot parse, or a charset nobody knows, makes the message harder to read but never raises: odd input is
"unknown" with the reason why, and only bytes that are no message at all raise BounceParseError. The prose rules
(severity, failed recipients in text, auto-reply and challenge signs) are in heuristics.py.
"""

from __future__ import annotations

import email
import email.policy
import re
from collections.abc import Iterator
from dataclasses import dataclass
from email.header import decode_header, make_header
from email.message import Message
from typing import Literal

from newsletter.bounces import heuristics
from newsletter.bounces.heuristics import Severity

__all__ = ["BounceParseError", "Failure", "Kind", "Report", "Severity", "classify"]

Kind = Literal["bounce", "complaint", "auto-reply", "challenge", "unknown"]

# RFC 5965 feedback types that are a person's (or their provider's) complaint about the mail. "auth-failure"
# (RFC 6591) reports the sender's authentication and "not-spam" undoes a complaint: neither is one.
COMPLAINT_TYPES = frozenset({"abuse", "fraud", "virus", "other", "opt-out", "unsubscribe"})
REPORT_PARTS = ("message/delivery-status", "message/global-delivery-status")
ORIGINAL_PARTS = ("message/rfc822", "message/global", "text/rfc822-headers", "message/global-headers")
ENVELOPE_HEADERS = ("delivered-to", "x-original-to", "envelope-to", "x-envelope-to")


class BounceParseError(ValueError):
    """Bytes that are no email message at all; str() is one line saying why."""


@dataclass(frozen=True)
class Failure:
    """One recipient a report is about."""

    address: str | None  # the failed recipient as the report names it (Final-Recipient, else found in the text)
    original: str | None  # Original-Recipient when given (RFC 3464)
    action: str  # failed, delayed, delivered, relayed, expanded (RFC 3464), "failed" inferred; "complained" (ARF)
    status: str | None  # the enhanced status code, "5.1.1" (RFC 3463), else None
    diagnostic: str  # the server's words (Diagnostic-Code or the sentence found), one line, at most 300 chars
    severity: Severity
    sender_problem: bool  # 5.7.x policy / blocklist / spam rejection / auth (SPF, DMARC): the sender's


@dataclass(frozen=True)
class Report:
    """What one returned email is."""

    kind: Kind
    failures: tuple[Failure, ...]  # a bounce's recipients; a complaint's complainant (severity soft, never hard)
    complainant: str | None  # ARF (RFC 5965): Original-Rcpt-To, else Removal-Recipient, else the original's To
    original_message_ids: tuple[str, ...]  # Message-ID(s) of the message that bounced
    original_list_ids: tuple[str, ...]  # List-Id of the original, same sources
    envelope_recipients: tuple[str, ...]  # where this report was delivered to (Delivered-To, …, VERP To)
    subject: str
    sender: str
    date: str | None
    message_id: str | None
    why: str  # for "unknown": why it could not be classified; else a short summary


def classify(raw: bytes) -> Report:
    """What the returned email `raw` is. Raises BounceParseError only for bytes that are no message at all."""
    data = bytes(raw)
    _refuse_unreadable(data)
    message = _parse(data)
    try:
        return _Reading(message).report()
    except Exception as exc:  # a message nobody foresaw is reported, never raised
        try:  # the modern policy's parse tree can be what broke: read the message the old way once more
            return _Reading(email.message_from_bytes(data, policy=email.policy.compat32)).report()
        except Exception:
            headers = _Headers(message)
            return _unknown(headers, f"could not be read: {type(exc).__name__}: {heuristics.one_line(str(exc), 120)}")


def _refuse_unreadable(data: bytes) -> None:
    if not data.strip():
        raise BounceParseError("empty message")
    # A message starts with a header field (after an mbox "From " line, as a mail store may leave it).
    if not re.match(rb"(From [^\r\n]*\r?\n)?[\x21-\x39\x3b-\x7e]+[ \t]*:", data.lstrip(b"\r\n")):
        raise BounceParseError("not an email message: it does not start with a header field")


def _parse(data: bytes) -> Message:
    # compat32: the headers stay raw text, which _Headers decodes once; the default policy parses every header
    # into an object each time it is read (a Content-Type is read a dozen times a message), which cost two thirds
    # of a scan's time (bench/bounce_scan.py), and chokes on input compat32 reads.
    try:
        return email.message_from_bytes(data, policy=email.policy.compat32)
    except Exception as exc:
        raise BounceParseError(f"not a readable email message: {type(exc).__name__}") from None


def _decode(value: str) -> str:
    """A raw header value unfolded and RFC 2047-decoded, as well as it can be."""
    value = re.sub(r"\r?\n[ \t]+", " ", str(value)).strip()
    if "=?" not in value:
        return value
    try:
        return str(make_header(decode_header(value)))
    except Exception:  # an unknown charset or broken encoded word: the raw text
        return value


def _raw_items(message: Message) -> list[tuple[str, str]]:
    try:
        return [(name, str(value)) for name, value in message.raw_items()]
    except Exception:
        return []


class _Headers:
    """A message's header fields, decoded once: the first of each name, and all of them."""

    def __init__(self, message: Message) -> None:
        self.all: dict[str, list[str]] = {}
        for name, value in _raw_items(message):
            self.all.setdefault(name.strip().lower(), []).append(_decode(value))
        self.first = {name: values[0] for name, values in self.all.items()}

    def get(self, name: str) -> str:
        return self.first.get(name, "")


def _bare_address(value: str) -> str | None:
    """The address in "rfc822; <a@b>", "<a@b>", "Name <a@b>" or "a@b", if it is one."""
    value = value.split(";", 1)[1] if ";" in value.split("@", 1)[0] else value
    match = heuristics.ADDRESS.search(value)
    if match is None or ".." in match.group(1):
        return None
    return match.group(1)


def _addresses(value: str) -> list[str]:
    return [m.group(1) for m in heuristics.ADDRESS.finditer(value) if ".." not in m.group(1)]


def _content_type(part: Message) -> str:
    try:
        return part.get_content_type()
    except Exception:
        return "text/plain"


def _payload_text(part: Message) -> str:
    """A leaf part's text: its transfer encoding undone, its charset applied, or UTF-8, or Latin-1."""
    try:
        payload = part.get_payload(decode=True)
    except Exception:
        payload = None
    if payload is None:
        raw = part.get_payload()
        return raw if isinstance(raw, str) else ""
    if not isinstance(payload, bytes):
        return str(payload)
    try:
        charset = part.get_content_charset() or "utf-8"
    except Exception:  # a charset parameter the parser cannot read
        charset = "utf-8"
    for name in (charset, "utf-8"):
        try:
            return payload.decode(name)
        except (LookupError, UnicodeDecodeError, ValueError):
            continue
    return payload.decode("latin-1")


def _children(part: Message) -> list[Message]:
    payload = part.get_payload()
    if isinstance(payload, list):
        return [child for child in payload if isinstance(child, Message)]
    return []


def _leaves(part: Message) -> Iterator[Message]:
    """The parts of the report itself, depth first, not descending into a returned message."""
    yield part
    content_type = _content_type(part)
    if content_type in ORIGINAL_PARTS or content_type in REPORT_PARTS or content_type == "message/feedback-report":
        return
    for child in _children(part):
        yield from _leaves(child)


def _field_blocks(part: Message) -> list[dict[str, str]]:
    """The field groups of a message/delivery-status or message/feedback-report part, names lower-cased."""
    children = _children(part)
    if children:  # the parser has read each group as a header block
        texts = ["\n".join(f"{name}: {value}" for name, value in _raw_items(child)) for child in children]
    else:
        texts = re.split(r"\r?\n[ \t]*\r?\n", _payload_text(part))
    blocks = []
    for text in texts:
        block: dict[str, str] = {}
        for match in re.finditer(r"(?m)^([A-Za-z][\w-]*)[ \t]*:(.*(?:\r?\n[ \t]+.*)*)", text):
            block.setdefault(match.group(1).lower(), " ".join(match.group(2).split()))
        if block:
            blocks.append(block)
    return blocks


def _action(value: str) -> str:
    """An Action field's value as RFC 3464 names it; the misspellings seen ("failure", "error") read as failed."""
    word = value.split()[0].lower() if value.split() else ""
    for action in ("failed", "delayed", "delivered", "relayed", "expanded"):
        if word.startswith(action[:5]):
            return action
    return "failed" if word else ""


def _headers_of_original(part: Message) -> _Headers | None:
    if _content_type(part) in ("text/rfc822-headers", "message/global-headers"):
        text = _payload_text(part)
        try:
            return _Headers(email.message_from_string(text, policy=email.policy.compat32))
        except Exception:
            return None
    children = _children(part)
    if children:
        return _Headers(children[0])
    text = _payload_text(part)  # an unparsed message/rfc822 body
    return _Headers(email.message_from_string(text, policy=email.policy.compat32)) if text else None


def _unique(values: list[str]) -> tuple[str, ...]:
    seen: dict[str, str] = {}
    for value in values:
        seen.setdefault(value.lower(), value)
    return tuple(seen.values())


def _unknown(headers: _Headers, why: str) -> Report:
    return Report(
        kind="unknown",
        failures=(),
        complainant=None,
        original_message_ids=(),
        original_list_ids=(),
        envelope_recipients=(),
        subject=headers.get("subject"),
        sender=headers.get("from"),
        date=headers.get("date") or None,
        message_id=headers.get("message-id") or None,
        why=why,
    )


class _Reading:
    """One message being classified."""

    def __init__(self, message: Message) -> None:
        self.message = message
        self.headers = _Headers(message)
        self.subject = self.headers.get("subject")
        self.sender = self.headers.get("from")
        self.parts = list(_leaves(message))
        texts, htmls = [], []
        for part in self.parts:
            if part.is_multipart() or part.get("content-disposition", "").lower().startswith("attachment"):
                continue
            content_type = _content_type(part)
            if content_type == "text/plain":
                texts.append(_payload_text(part))
            elif content_type == "text/html":
                htmls.append(heuristics.html_to_text(_payload_text(part)))
        self.full_text = "\n".join(texts or htmls)
        self.text = heuristics.own_words(self.full_text)

    def _make(self, kind: Kind, failures: tuple[Failure, ...], why: str) -> Report:
        originals = [
            h
            for part in self.parts
            if _content_type(part) in ORIGINAL_PARTS
            if (h := _headers_of_original(part)) is not None
        ]
        message_ids = [h.get("message-id") for h in originals if h.get("message-id")]
        list_ids = [h.get("list-id") for h in originals if h.get("list-id")]
        message_ids += re.findall(r"(?im)^[ \t>]*(?:original-)?message-id:[ \t]*(<[^>\s]+>)", self.full_text)
        list_ids += re.findall(r"(?im)^[ \t>]*list-id:[ \t]*(.*<[^>\s]+>)", self.full_text)
        for part in self.parts:
            if _content_type(part) in REPORT_PARTS + ("message/feedback-report",):
                for block in _field_blocks(part):
                    if "original-message-id" in block:
                        message_ids.append(block["original-message-id"])
        complainant = None
        if kind == "complaint":
            complainant = next((f.address for f in failures if f.address), None)
        return Report(
            kind=kind,
            failures=failures,
            complainant=complainant,
            original_message_ids=_unique([m.strip() for m in message_ids]),
            original_list_ids=_unique([i.strip() for i in list_ids]),
            envelope_recipients=self._envelope_recipients(),
            subject=self.subject,
            sender=self.sender,
            date=self.headers.get("date") or None,
            message_id=self.headers.get("message-id") or None,
            why=why,
        )

    def _envelope_recipients(self) -> tuple[str, ...]:
        found: list[str] = []
        for name in ENVELOPE_HEADERS:
            for value in self.headers.all.get(name, []):
                found += _addresses(value)
        found += [a for a in _addresses(self.headers.get("to")) if "+" in a.partition("@")[0]]
        return _unique(found)

    def report(self) -> Report:
        """The kind, in this order: a feedback report, a delivery status part, a challenge from a person's filter,
        a mail system's prose naming failed recipients, an auto-reply, a challenge; else unknown."""
        for part in self.parts:
            if _content_type(part) == "message/feedback-report":
                return self._complaint(part)
        if _content_type(self.message) == "multipart/report":
            report_type = str(self.message.get_param("report-type", "", header="content-type") or "").lower()
            if report_type == "feedback-report":
                return self._make("unknown", (), "a feedback report without its message/feedback-report part")
        for part in self.parts:
            if _content_type(part) in REPORT_PARTS:
                failures = self._dsn_failures(part)
                if failures:
                    return self._bounce(failures, "RFC 3464")
        if heuristics.looks_like_bounce(self.sender, self.subject, self.text):
            for part in self.parts:  # a report forwarded as an attachment, as some gateways send them
                for inner in (c for c in _children(part) if _content_type(part) == "message/rfc822"):
                    for report in (p for p in _leaves(inner) if _content_type(p) in REPORT_PARTS):
                        failures = self._dsn_failures(report)
                        if failures:
                            return self._bounce(failures, "RFC 3464, forwarded")
        challenge = heuristics.challenge_sign(self.headers.first, self.subject, self.full_text)
        if challenge and not heuristics.BOUNCE_SENDER.search(self.sender):  # a person's filter, not a mail system
            return self._make("challenge", (), f"challenge-response: {challenge}")
        failed_header = self.headers.get("x-failed-recipients")
        if (
            failed_header
            or heuristics.looks_like_bounce(self.sender, self.subject, self.text)
            or any(_content_type(part) in REPORT_PARTS for part in self.parts)
        ):
            failures = self._text_failures(_addresses(failed_header))
            if failures:
                return self._bounce(failures, "the server's text")
        if challenge:
            return self._make("challenge", (), f"challenge-response: {challenge}")
        auto_reply = heuristics.auto_reply_sign(self.headers.first, self.subject, self.full_text)
        if auto_reply:
            return self._make("auto-reply", (), f"auto-reply: {auto_reply}")
        return self._make("unknown", (), "not a delivery report, complaint, auto-reply or challenge")

    def _bounce(self, failures: tuple[Failure, ...], source: str) -> Report:
        if all(f.severity == "delivered" for f in failures):
            return self._make("unknown", failures, "a delivery report of success only (delivered, relayed)")
        counts: dict[str, int] = {}
        for failure in failures:
            counts[failure.severity] = counts.get(failure.severity, 0) + 1
        summary = ", ".join(f"{n} {severity}" for severity, n in counts.items())
        return self._make("bounce", failures, f"bounce ({source}): {summary}")

    def _dsn_failures(self, part: Message) -> tuple[Failure, ...]:
        blocks = _field_blocks(part)
        recipients = [b for b in blocks if "final-recipient" in b or "original-recipient" in b]
        if not recipients:
            recipients = [b for b in blocks if "action" in b or "status" in b]  # a group without its recipient
            if recipients and not any(_bare_address(b.get("final-recipient", "")) for b in recipients):
                return ()  # nobody named: the text may name them
        named = [
            _bare_address(b.get("final-recipient", "")) or _bare_address(b.get("original-recipient", ""))
            for b in recipients
        ]
        text_found = heuristics.failed_recipients(self.text, self._own_addresses())
        failures: list[Failure] = []
        for block, address in zip(recipients, named, strict=True):
            original = _bare_address(block.get("original-recipient", ""))
            status_field = block.get("status", "")
            status_match = heuristics.ENHANCED_CODE.search(status_field)
            status = ".".join(status_match.groups()) if status_match else None
            diagnostic = re.sub(r"^\s*[\w-]+\s*;\s*", "", block.get("diagnostic-code", ""))
            words = " ".join(filter(None, [diagnostic, status_field.partition(" ")[2]]))
            if status is None or status.endswith(".0.0"):  # a generic code: the report's text may say more
                words += "\n" + self._context_for(address, text_found, len(recipients) == 1)
            if address is None and len(recipients) == 1 and len(text_found) == 1:
                address = text_found[0].address
            action = _action(block.get("action", ""))
            if not action:
                action = "delayed" if status and status.startswith("4.") and self._says_delay() else "failed"
            verdict = heuristics.decide(action, status, words)
            if any(f.address == address and f.original == original for f in failures):
                continue  # the same recipient reported again (an alias loop lists it once a hop)
            failures.append(
                Failure(
                    address=address,
                    original=original,
                    action=action,
                    status=verdict.status,
                    diagnostic=heuristics.one_line(diagnostic or self._sentence(words)),
                    severity=verdict.severity,
                    sender_problem=verdict.sender_problem,
                )
            )
        return tuple(failures)

    def _context_for(self, address: str | None, found: list[heuristics.Found], alone: bool) -> str:
        for item in found:
            if address and item.address.lower() == address.lower():
                return item.context
        return self.text if alone else ""

    def _text_failures(self, named: list[str]) -> tuple[Failure, ...]:
        found = heuristics.failed_recipients(self.text, self._own_addresses(), named)
        if named and not found:
            found = [heuristics.Found(a, "") for a in named]
        delayed = self._says_delay()
        failures: list[Failure] = []
        for item in found:
            words = item.context
            first = heuristics.decide("delayed" if delayed else "failed", None, words)
            if (
                first.status is None
                and heuristics.basic_code(words) is None
                and (first.severity == "soft" and len(found) == 1)
            ):
                words = words + "\n" + self.text  # its own lines say nothing: the whole text speaks for it
            verdict = heuristics.decide("delayed" if delayed else "failed", None, words)
            failures.append(
                Failure(
                    address=item.address,
                    original=None,
                    action="delayed" if delayed else "failed",
                    status=verdict.status,
                    diagnostic=heuristics.one_line(self._sentence(words)),
                    severity=verdict.severity,
                    sender_problem=verdict.sender_problem,
                )
            )
        if not failures and heuristics.looks_like_bounce(self.sender, self.subject, self.text) and self.text.strip():
            verdict = heuristics.decide("delayed" if delayed else "failed", None, self.text)
            # Nobody named: a failure without an address, for review; never hard, since nobody can be removed.
            severity: Severity = "soft" if verdict.severity == "hard" else verdict.severity
            failures.append(
                Failure(
                    None,
                    None,
                    "delayed" if delayed else "failed",
                    verdict.status,
                    heuristics.one_line(self._sentence(self.text)),
                    severity,
                    verdict.sender_problem,
                )
            )
        return tuple(failures)

    def _says_delay(self) -> bool:
        return heuristics.says_delay(self.subject) or heuristics.says_delay(self.text)

    def _own_addresses(self) -> list[str]:
        """The report's own sender and recipients, and where it was delivered: never a failed recipient."""
        own = _addresses(self.sender) + _addresses(self.headers.get("to")) + _addresses(self.headers.get("cc"))
        own += _addresses(self.headers.get("return-path"))
        return own + list(self._envelope_recipients())

    @staticmethod
    def _sentence(words: str) -> str:
        """The line of `words` that gives the reason: one with a code or a known phrase, else the first."""
        lines = [line.strip() for line in words.splitlines() if line.strip()]
        for line in lines:
            if heuristics.ENHANCED_CODE.search(line) or heuristics.basic_code(line):
                return line
        return lines[0] if lines else ""

    def _complaint(self, part: Message) -> Report:
        blocks = _field_blocks(part)
        fields = {k: v for block in blocks for k, v in block.items()}
        # RFC 5965 requires Feedback-Type; a report without it is still someone's report about the mail: abuse.
        feedback_type = (fields.get("feedback-type", "").split() or ["abuse"])[0].lower()
        if feedback_type not in COMPLAINT_TYPES:
            return self._make("unknown", (), f"a feedback report of type {feedback_type}, not a complaint")
        complainant = _bare_address(fields.get("original-rcpt-to", "")) or _bare_address(
            fields.get("removal-recipient", "")
        )
        if complainant is None:
            for original in self.parts:
                if _content_type(original) in ORIGINAL_PARTS:
                    headers = _headers_of_original(original)
                    if headers is not None and (complainant := _bare_address(headers.get("to"))):
                        break
        failures: tuple[Failure, ...] = ()
        if complainant:
            diagnostic = heuristics.one_line(
                f"Feedback-Type: {feedback_type}; User-Agent: {fields.get('user-agent', '')}"
            )
            failures = (Failure(complainant, None, "complained", None, diagnostic, "soft", False),)
        who = complainant or "a recipient it does not name"
        return self._make("complaint", failures, f"complaint (RFC 5965, {feedback_type}) by {who}")
