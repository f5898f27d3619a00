"""Who a returned message is about, and what it does to them: the step between classify.py (what the message
says) and the store (what changes).

A report is matched, most reliable first, by
1. the return path's token (VERP, `[bounces] return_path`): the address the report was delivered to names the
   campaign and the subscriber, signed, whatever the report kept of the message; a token that does not verify
   matches nobody (it was forged or altered);
2. the Message-ID it quotes of the message that bounced (`<campaign-subscriber.digest@domain>`), whose digest is
   checked against the campaign's list, and only when the address the report names is that subscriber's (a quoted
   Message-ID alone is easy to make up), except in a complaint, whose recipient feedback loops redact;
3. the address the report names, when a campaign sent that address a message (the latest one is taken to be it).

A match becomes one effect: a hard bounce, a soft one (whose count decides), a deferral, a delivery, or a
complaint. Where several recipients of one report are the one person (an alias expanded), the mildest verdict
wins: a wrong hard bounce removes someone who should not be, the worst outcome a scan can have.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

from newsletter.bounces.classify import Failure, Report
from newsletter.store import BounceEffect, Store
from newsletter.store.bounces import Recipient
from newsletter.tokens import TokenSigner

OUR_MESSAGE_ID = re.compile(r"<?([1-9][0-9]*)-([1-9][0-9]*)\.([0-9a-f]{12})@[^>\s]+>?")
SEVERITY_ORDER = {"delivered": 0, "deferred": 1, "soft": 2, "hard": 3}


@dataclass(frozen=True)
class Match:
    recipient: Recipient
    campaign_id: int | None
    how: str  # "return path", "message id", "address"


@dataclass(frozen=True)
class Decision:
    """What one report does: its effects, or why it is left in the mailbox for a person to look at."""

    effects: tuple[BounceEffect, ...] = ()
    left: str | None = None  # why nobody was matched or nothing decided
    how: str | None = None  # how it was matched


class ReturnPath:
    """The `[bounces] return_path` template ("bounces+{token}@example.org"), and the token in an address."""

    def __init__(self, template: str):
        local, _, self.domain = template.lower().rpartition("@")
        self.prefix, _, self.suffix = local.partition("{token}")

    def token(self, address: str) -> str | None:
        """The token in an address made from this template, or None when the address is not one."""
        local, _, domain = address.strip().strip("<>").lower().rpartition("@")
        if domain != self.domain or not local.startswith(self.prefix) or not local.endswith(self.suffix):
            return None
        token = local[len(self.prefix) : len(local) - len(self.suffix) if self.suffix else None]
        return token or None


def message_id_digest(list_slug: str, campaign_id: int, subscriber_id: int) -> str:
    """The digest message.Campaign.build puts in a Message-ID (it tells one of ours from a look-alike)."""
    return hashlib.sha256(f"{list_slug}:{campaign_id}-{subscriber_id}".encode()).hexdigest()[:12]


def match(report: Report, store: Store, signer: TokenSigner, return_path: ReturnPath | None) -> Match | str:
    """The person and campaign a report is about, or why there is none."""
    addresses = {a.lower() for f in report.failures for a in (f.address, f.original) if a}
    if report.complainant:
        addresses.add(report.complainant.lower())
    if return_path is not None:
        for address in report.envelope_recipients:
            token = return_path.token(address)
            if token is None:
                continue
            found = signer.verify_return_path(token)
            if found is None:
                return f"its return path {address} carries a token that does not verify (forged or altered)"
            campaign_id, subscriber_id = found
            recipient = store.recipient(subscriber_id)
            if recipient is None:
                return f"its return path names subscriber {subscriber_id}, who is no longer in the store"
            sent = store.sent_campaign(campaign_id, subscriber_id)
            return Match(recipient, campaign_id if sent is not None else None, "return path")
    for message_id in report.original_message_ids:
        found_id = OUR_MESSAGE_ID.fullmatch(message_id.strip())
        if found_id is None:
            continue
        campaign_id, subscriber_id = int(found_id.group(1)), int(found_id.group(2))
        sent = store.sent_campaign(campaign_id, subscriber_id)
        recipient = store.recipient(subscriber_id)
        if sent is None or recipient is None or sent.list_slug is None:
            continue
        if message_id_digest(sent.list_slug, campaign_id, subscriber_id) != found_id.group(3):
            continue
        # Feedback loops redact the complainant (the Message-ID is then all they keep of the recipient).
        if addresses and recipient.email.lower() not in addresses and report.kind != "complaint":
            named = ", ".join(sorted(addresses))
            return f"it quotes our message to {recipient.email} but names {named}: matched by neither"
        return Match(recipient, campaign_id, "message id")
    if not addresses:
        return "it names no recipient and quotes none of our messages"
    for address in sorted(addresses):
        recipient = store.recipient_by_address(address)
        if recipient is None:
            continue
        latest = store.latest_sent_campaign(recipient.subscriber_id)
        if latest is None:
            return f"{recipient.email} was never sent a campaign"
        return Match(recipient, latest, "address")
    return f"no subscriber has the address {', '.join(sorted(addresses))}"


def decide(report: Report, store: Store, signer: TokenSigner, return_path: ReturnPath | None) -> Decision:
    """What a bounce or a complaint does; a report of another kind decides nothing (the caller files it)."""
    if report.kind == "bounce" and not report.failures:
        return Decision(left="a bounce that names no failed recipient")
    found = match(report, store, signer, return_path)
    if isinstance(found, str):
        return Decision(left=found)
    person, campaign = found.recipient.subscriber_id, found.campaign_id
    if report.kind == "complaint":
        feedback = report.failures[0].diagnostic if report.failures else "Feedback-Type: abuse"
        said = {"diagnostic": feedback, "matched_by": found.how}
        return Decision((BounceEffect(person, campaign, "complained", said),), how=found.how)
    failure = _verdict(report.failures, found.recipient.email)
    detail: dict[str, object] = {
        "status": failure.status,
        "diagnostic": failure.diagnostic,
        "severity": failure.severity,
        "action": failure.action,
        "matched_by": found.how,
    }
    if failure.severity == "hard" and not failure.sender_problem:
        effect = BounceEffect(person, campaign, "bounced", detail)
    elif failure.severity in ("hard", "soft"):
        effect = BounceEffect(person, campaign, "soft-bounce", {**detail, "severity": "soft"}, failure.sender_problem)
    elif failure.severity == "deferred":
        effect = BounceEffect(person, campaign, "deferred", detail)
    else:
        effect = BounceEffect(person, campaign, "delivered", detail)
    return Decision((effect,), how=found.how)


def _verdict(failures: tuple[Failure, ...], email: str) -> Failure:
    """The failure that is about this address, else the mildest of them."""
    email = email.lower()
    own = [f for f in failures if email in {(f.address or "").lower(), (f.original or "").lower()}]
    return min(own or failures, key=lambda f: SEVERITY_ORDER.get(f.severity, 1))
