"""The states a membership, a ledger row and a campaign can be in: three enums, stored as their plain strings.

A membership's UNCONFIRMED and a ledger row's PENDING are both "pending" in the database (the schema predates
the names); the enums keep the two meanings apart in the code.
"""

from __future__ import annotations

import enum


class MembershipStatus(enum.StrEnum):
    """A subscriber's standing on one list. Nothing turns the last four back into SUBSCRIBED but the subscriber
    (an undo, or a confirmed sign-up)."""

    SUBSCRIBED = "subscribed"
    UNCONFIRMED = "pending"  # signed up through a form, not confirmed yet: never mailed but the confirmation
    UNSUBSCRIBED = "unsubscribed"
    BOUNCED = "bounced"
    COMPLAINED = "complained"
    NONSUBSCRIBED = "nonsubscribed"  # imported as never having opted in (Mailchimp's "nonsubscribed"): never mailed


class DeliveryStatus(enum.StrEnum):
    """A ledger row (one campaign, one subscriber): PENDING until it is final."""

    PENDING = "pending"  # to send, or to try again at next_attempt_at
    SENT = "sent"
    FAILED = "failed"
    SKIPPED = "skipped"  # no longer subscribed when its turn came


class CampaignStatus(enum.StrEnum):
    """A campaign's; campaigns.py's TRANSITIONS says which change into which, and what makes each change."""

    SCHEDULED = "scheduled"
    RUNNING = "running"
    PAUSED = "paused"
    FINISHED = "finished"
    CANCELLED = "cancelled"
    EXPIRED = "expired"
    AWAITING_APPROVAL = "awaiting-approval"  # frozen, no audience yet: a person must approve it first (approvals.py)
    DECLINED = "declined"  # a person declined it: never sent


def delivery_counts(found: dict[str, int]) -> dict[str, int]:
    """A campaign's ledger counts by status, every status present (0 when it has no row)."""
    return {**dict.fromkeys(DeliveryStatus, 0), **found}
