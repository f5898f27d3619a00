"""Managing a list: add, tag, remove, export, and apply a provider's suppressions. Importing is importing.py's,
reading another mailer's export sources.py's."""

from __future__ import annotations

import asyncio
import csv
import itertools
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, TextIO

from newsletter.addresses import clean_name, normalize_address
from newsletter.errors import NewsletterError
from newsletter.fields import field_key, tag_key
from newsletter.i18n import parse_language
from newsletter.store import Member, MembershipStatus, Store
from newsletter.transports.base import SuppressionSource, Transport

if TYPE_CHECKING:
    from newsletter.sending.welcome import WelcomeIssue


def add(
    store: Store,
    list_slug: str,
    address: str,
    name: str | None,
    *,
    list_name: str | None = None,
    source: str = "cli",
    fields: dict[str, str] | None = None,
    tags: Sequence[str] = (),
    lang: str | None = None,
) -> str:
    """Subscribe one address to a list (created if needed, named list_name), with fields (merged by key into theirs),
    tags (added) and the language they read in (fr, en, or a name of one: français, English…; None leaves theirs);
    return added, updated, unchanged or refused."""
    found = add_welcomed(
        store, list_slug, address, name, list_name=list_name, source=source, fields=fields, tags=tags, lang=lang
    )
    return found[0]


def add_welcomed(
    store: Store,
    list_slug: str,
    address: str,
    name: str | None,
    *,
    welcome: WelcomeIssue | None = None,
    list_name: str | None = None,
    source: str = "cli",
    fields: dict[str, str] | None = None,
    tags: Sequence[str] = (),
    lang: str | None = None,
) -> tuple[str, bool]:
    """add(), and with the list's welcome (sending/welcome.py) the person's welcome email, in their language, queued
    in the same transaction when they were added to the list (never for one already on it): (the result, whether
    queued)."""
    try:
        normalized = normalize_address(address)
    except ValueError as exc:
        raise NewsletterError(f"'{address}' is not a valid address: {exc}") from None
    try:
        code = parse_language(lang) if lang is not None else None
    except ValueError as exc:
        raise NewsletterError(f"--lang: {exc}") from None
    with store.transaction() as connection:
        list_id = store.ensure_list(list_slug, list_name, connection=connection)
        result = store.subscribe(
            list_id, normalized, clean_name(name), fields or {}, source, tags=tags, lang=code, connection=connection
        )
        queued = False
        if welcome is not None and result == "added":
            queued = bool(welcome.queue(store, list_id, [normalized], connection=connection))
        return result, queued


def event_line(event: dict) -> str:
    """One event of a person's record as `subscribers show` prints it, with the consent it records: when and how
    they agreed (an import's opt-in and confirmation, a sign-up's double opt-in), and why they left."""
    line = f"{event['at']:%Y-%m-%d %H:%M} {event['kind']} ({event['source']}) {event['list'] or ''}".rstrip()
    detail = event.get("detail") or {}
    said = []
    consent = detail.get("consent") or {}
    if not isinstance(consent, dict):  # a sign-up's request holds the sentence the person agreed to, not dates
        consent = {}
    for name, label in (("opted_in_at", "opted in"), ("confirmed_at", "confirmed")):
        if consent.get(name):
            ip = consent.get(name.replace("_at", "_ip_hash"))
            said.append(f"{label} {consent[name].replace('T', ' ')[:16]}" + (f" from IP #{ip[:8]}" if ip else ""))
    if consent.get("joined_at") and not said:
        said.append(f"joined {consent['joined_at'][:10]}")
    if event["source"] == "double-opt-in":
        asked = (detail.get("requested") or {}).get("ip_hash")
        said.append("confirmed by the sign-up's email link" + (f", asked from IP #{asked[:8]}" if asked else ""))
    if detail.get("reason"):
        said.append(f"reason: {detail['reason']}")
    if detail.get("lang") and event["kind"] == "updated":  # the preferences page's switch
        before = f" (was {detail['lang_before']})" if detail.get("lang_before") else ""
        said.append(f"language set to {detail['lang']}{before}")
    if detail.get("status") or detail.get("diagnostic"):  # a bounce or a complaint read from the mailbox
        words = " ".join(str(detail[k]) for k in ("status", "diagnostic") if detail.get(k))
        said.append(f"campaign {detail['campaign']}: {words}" if detail.get("campaign") else words)
    if detail.get("soft_bounces"):
        said.append(
            f"after {detail['soft_bounces']} soft bounces (campaigns {', '.join(map(str, detail['campaigns']))})"
        )
    if detail.get("sender_problem"):
        said.append("the sender's problem (a policy refusal), not counted against them")
    if detail.get("file"):
        origin = f"{detail['from']} export " if detail.get("from") else ""
        said.append(f"from {origin}{detail['file']}:{detail.get('line', '?')}")
    return f"{line}: {'; '.join(said)}" if said else line


def welcome_line(delivery: dict) -> str:
    """A person's welcome email as `subscribers show` prints it: sent when, pending (and its next try), or failed
    and why."""
    line = f"welcome email of {delivery['list']} ({delivery['issue']}, campaign {delivery['campaign']}): "
    at = f"{delivery['updated_at']:%Y-%m-%d %H:%M} UTC"
    status, error = delivery["status"], delivery.get("error")
    if status == "sent":
        return line + f"sent {at}"
    if status == "pending":
        later = delivery.get("next_attempt_at")
        tried = f"tried {delivery['attempts']} times, next {later:%Y-%m-%d %H:%M} UTC: {error}" if later else ""
        return line + (f"pending ({tried})" if tried else "pending: `newsletter serve` or a worker sends it")
    return line + f"{status} {at}" + (f": {error}" if error else "")


def field_options(pairs: Sequence[str]) -> dict[str, str]:
    """--field NAME=VALUE options as fields; NewsletterError naming a malformed one."""
    fields = {}
    for pair in pairs:
        name, equals, value = pair.partition("=")
        if not equals or not field_key(name):
            raise NewsletterError(f"--field {pair!r}: write it NAME=VALUE, e.g. --field Municipalité=Rimouski")
        fields[name.strip()] = value.strip()
    return fields


def retag(store: Store, address: str, tags: Sequence[str], *, remove: bool = False) -> list[str]:
    """Add tags to a person (or take them off); return those that changed. NewsletterError when nobody is held."""
    subscriber_id = store.find_subscriber(address.strip())
    if subscriber_id is None:
        raise NewsletterError(f"{address} is not on any list")
    if not [t for t in tags if tag_key(t)]:
        raise NewsletterError("name at least one tag")
    return store.untag(subscriber_id, tags) if remove else store.tag(subscriber_id, tags)


def remove(store: Store, list_slug: str, address: str, *, source: str = "cli") -> bool:
    """Mark an address unsubscribed from a list (the record and its history stay); False if it already was."""
    list_id = store.list_id(list_slug)
    with store.transaction() as connection:
        subscriber_id = store.find_subscriber(address.strip(), connection=connection)
        if subscriber_id is None:
            raise NewsletterError(f"{address} is not on any list")
        unsubscribed = MembershipStatus.UNSUBSCRIBED
        return store.set_status(subscriber_id, list_id, unsubscribed, source, connection=connection)


@dataclass
class SyncReport:
    seen: int = 0
    changed: int = 0
    kinds: dict[str, int] = field(default_factory=dict)

    def to_json(self) -> dict:
        return {"seen": self.seen, "changed": self.changed, "kinds": self.kinds}


async def sync_suppressions(store: Store, transport: Transport, *, list_id: int | None = None) -> SyncReport:
    """Apply a provider's suppression list to the store: bounces and complaints to every list of each address,
    unsubscribes to the list `list_id` (the one sent through this provider) or, without it, to every list.

    For people who run no server to receive webhooks; running it again changes nothing more.
    """
    if not isinstance(transport, SuppressionSource):
        raise NewsletterError(
            f"{transport.scheme}:// keeps no suppression list that newsletter can read; run `newsletter serve` "
            "and configure the provider's webhooks instead"
        )
    report = SyncReport()
    async for event in transport.suppressions():
        report.seen += 1
        report.kinds[event.kind] = report.kinds.get(event.kind, 0) + 1
        detail = {"provider": transport.scheme, "detail": event.detail}
        scope = list_id if event.kind == "unsubscribed" else None
        report.changed += await asyncio.to_thread(
            store.apply_event, event.kind, event.email, None, "sync", detail, list_id=scope
        )
    return report


# What an export writes before the fields: everything an import reads back as the same list.
EXPORT_COLUMNS = ["email", "name", "status", "joined_at", "opted_in_at", "confirmed_at", "tags", "lang"]


def export_csv(
    store: Store,
    list_slug: str,
    out: TextIO,
    status: str | None = None,
    *,
    progress: Callable[[int, int], None] | None = None,
) -> int:
    """Write a list as UTF-8 CSV (EXPORT_COLUMNS, then the fields by the names they were written with); return how
    many rows. `subscribers import` reads it back as the same list: statuses, join dates, consent dates, tags
    (comma-separated, quoted as Mailchimp writes them), languages (empty for none) and fields.

    Two streaming passes (the field names first, reading only the fields), so a list of any size never sits in
    memory; each page of members costs one more query for its consent dates. progress: called every few thousand
    rows with (rows written, rows in all).
    """
    list_id = store.list_id(list_slug)
    extra_keys = store.member_field_names(list_id, status)
    total = store.count_members(list_id, status) if progress is not None else 0
    writer = csv.writer(out)
    writer.writerow(EXPORT_COLUMNS + extra_keys)
    count = 0
    for page in _pages(store.iter_members(list_id, status, tags=True), 2000):
        consent = store.consent_among(list_id, [m.subscriber_id for m in page])
        for member in page:
            fields, dates = member.fields, consent.get(member.subscriber_id, {})
            joined = member.joined_at.isoformat() if member.joined_at else ""
            tags = ",".join(f'"{tag}"' for tag in member.tags)
            head = [member.email, member.name or "", member.status, joined]
            head += [dates.get("opted_in_at", ""), dates.get("confirmed_at", ""), tags, member.lang or ""]
            writer.writerow(head + [fields.get(k, "") for k in extra_keys])
            count += 1
            if progress is not None and not count % 5000:
                progress(count, total)
    if progress is not None:
        progress(count, total)
    return count


def _pages(members: Iterator[Member], size: int) -> Iterator[list[Member]]:
    while page := list(itertools.islice(members, size)):
        yield page
