"""Sign-ups through a form (double opt-in): the request and what the person saw and agreed to, the limit on
confirmations an address receives, the confirmation that subscribes them (their consent recorded), the
confirmations that never went (sent again by a running server), and the purge of sign-ups never confirmed.

A sign-up's own events (signup-requested, confirmation-claimed/-sent/-refused) are its whole record: the limit
counts them, a link confirms its own request, and a purge removes them.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Collection, Sequence
from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from newsletter.store.engine import _TIME, _Among, _aware, _Lookup, now
from newsletter.store.schema import (
    address_hash,
    deliveries,
    events,
    lists,
    memberships,
    subscriber_fields,
    subscriber_tags,
    subscribers,
    suppressions,
)
from newsletter.store.statuses import MembershipStatus
from newsletter.store.subscribers import _INSERT_MEMBERSHIPS, _INSERT_SUBSCRIBERS, _LOG_EVENTS, Subscribers

log = logging.getLogger("newsletter.store")
CLAIM_LEASE = dt.timedelta(minutes=10)  # a claimed confirmation still unsettled after this is found again
SIGNUPS_COUNTED = dt.timedelta(days=1)  # an address's sign-up limit counts its requests of this long back
# A sign-up's own events: what the person asked, and what became of their confirmation email.
_SIGNUP_KINDS = ("signup-requested", "confirmation-claimed", "confirmation-sent", "confirmation-refused")
# Nothing is sent to a member in one of these: subscribed already, or an address that bounced or complained.
_NOTHING_TO_CONFIRM = (MembershipStatus.SUBSCRIBED, MembershipStatus.BOUNCED, MembershipStatus.COMPLAINED)


@dataclass(frozen=True)
class SignupRequest:
    """Someone asked, through a form, to join a list."""

    list_id: int
    email: str  # as validated and normalised
    name: str | None
    detail: dict  # what they saw and agreed to: the consent sentence, the page, the user agent, a hash of the IP
    lang: str | None = None  # the language they chose on the form: theirs once they confirm


@dataclass(frozen=True)
class AskedSignup:
    """A sign-up request recorded, whose confirmation email is to go: to whom, and the request its link confirms."""

    subscriber_id: int
    request_id: int  # the request's signup-requested event


@dataclass(frozen=True)
class SignupConfirmation:
    """Whom a confirmation link subscribes (or has), and in which language its pages speak to them."""

    email: str
    lang: str | None  # chosen on the form with that request, else the one held; None: the list's first


@dataclass(frozen=True)
class UnsentConfirmation:
    """A sign-up whose confirmation email never went."""

    subscriber_id: int
    list_id: int
    list_slug: str
    email: str
    name: str | None
    request_id: int  # the request its link confirms
    lang: str | None = None  # the language chosen on the form, else the one held: the email's


# request_signups' statements (a group of sign-ups). A subscriber has few rows, found by the indexes that start
# with subscriber_id (see subscribers.py's apply_changes).
_SUBSCRIBER_IDS = _Lookup("SELECT email_key, id FROM subscribers WHERE email_key IN ({values}){lock}")
_STATUSES = _Lookup("SELECT subscriber_id, list_id, status FROM memberships WHERE subscriber_id IN ({values})")
_ASKED_SINCE = (  # per person, their sign-up requests since k_since, on every list: how many, the latest when
    sa.select(events.c.subscriber_id, sa.func.count().label("count"), sa.func.max(events.c.at).label("latest"))
    .where(
        _Among(events.c.subscriber_id, "k_ids"),
        events.c.kind == "signup-requested",
        events.c.at > sa.bindparam("k_since", type_=_TIME),
    )
    .group_by(events.c.subscriber_id)
)
_REQUESTED_AT = sa.select(events.c.id, events.c.subscriber_id, events.c.list_id).where(
    _Among(events.c.subscriber_id, "k_ids"),
    events.c.kind == "signup-requested",
    events.c.at == sa.bindparam("k_at", type_=_TIME),
)


def _last_asked(list_id: int) -> sa.Subquery:
    """(subscriber_id, at) of each person's last sign-up request for a list."""
    return (
        sa.select(events.c.subscriber_id, sa.func.max(events.c.at).label("at"))
        .where(events.c.list_id == list_id, events.c.kind == "signup-requested")
        .group_by(events.c.subscriber_id)
        .subquery()
    )


class Signups(Subscribers):
    def request_signups(
        self, requests: Sequence[SignupRequest], *, every: dt.timedelta, connection: Connection | None = None
    ) -> list[AskedSignup | None]:
        """Sign-ups through a form; for each, the subscriber to send a confirmation
        to and the request it confirms, or None to send nothing.

        A new address becomes a pending (unconfirmed) member; whoever left or was erased stays as they are until
        they confirm. Nothing is sent to a member already subscribed, to a bounced or complained address, or past
        the address's limit, which counts its confirmations across every list, so that nobody's address can be
        made to receive them by the dozen from the open lists: with n requests of this address in the last day
        (SIGNUPS_COUNTED), the next needs every · 2^(n-1) since the latest (10 minutes, then 20, 40, 80…: at
        most 8 in any day, about 6 a day for good). A request held back leaves no trace (the person may ask again
        later) and is counted in the log, never named. Each request is an event (signup-requested) holding what
        the person saw and agreed to; its confirmation copies it; and those events are what the limit counts, so
        that it holds across processes, restarts and servers. A handful of statements serve the whole group; the
        subscribers' rows are locked (FOR UPDATE on PostgreSQL), so that two servers never both send to one
        address, nor both count without the other.
        """
        with self._writing(connection) as writing:
            return self._request_signups(writing, requests, every)

    def _request_signups(
        self, connection: Connection, requests: Sequence[SignupRequest], every: dt.timedelta
    ) -> list[AskedSignup | None]:
        at = now()
        keys = list({r.email.lower() for r in requests})
        ids = dict(_SUBSCRIBER_IDS(connection, keys))
        new = {r.email.lower(): r.email for r in requests if r.email.lower() not in ids}
        if new:  # one executemany, then their ids (SQLite's RETURNING would take a statement per row)
            no_fields: dict = {}  # one object for the batch: _Many writes it once
            _INSERT_SUBSCRIBERS(connection, [(email, key, None, no_fields, at, None) for key, email in new.items()])
            ids.update(_SUBSCRIBER_IDS(connection, list(new)))
        wanted = {(ids[r.email.lower()], r.list_id) for r in requests}
        people = sorted({subscriber_id for subscriber_id, _ in wanted})
        statuses = {
            (subscriber_id, list_id): status
            for subscriber_id, list_id, status in _STATUSES(connection, people)
            if (subscriber_id, list_id) in wanted
        }
        found = connection.execute(_ASKED_SINCE, {"k_ids": people, "k_since": at - SIGNUPS_COUNTED})
        asked = {subscriber_id: (count, _aware(latest)) for subscriber_id, count, latest in found}
        chosen: list[tuple[int, int] | None] = []
        joined, logged, held, in_group = [], [], 0, set()
        for request in requests:
            subscriber_id = ids[request.email.lower()]
            pair = (subscriber_id, request.list_id)
            count, latest = asked.get(subscriber_id, (0, None))
            if statuses.get(pair) in _NOTHING_TO_CONFIRM or pair in in_group:
                chosen.append(None)  # nothing to confirm, or a second request in the same group
                continue
            if latest is not None and at - latest < every * 2 ** min(count - 1, 16):
                held += 1
                chosen.append(None)
                continue
            if pair not in statuses:
                statuses[pair] = MembershipStatus.UNCONFIRMED
                joined.append((subscriber_id, request.list_id, MembershipStatus.UNCONFIRMED, at, at))
            asked[subscriber_id] = (count + 1, at)
            in_group.add(pair)
            logged.append(
                (
                    at,
                    subscriber_id,
                    request.list_id,
                    "signup-requested",
                    "form",
                    {**request.detail, "name": request.name, **({"lang": request.lang} if request.lang else {})},
                )
            )
            chosen.append(pair)
        if held:
            log.info("sign-ups held back by their address's limit, no confirmation sent: %d", held)
        if joined:
            _INSERT_MEMBERSHIPS(connection, joined)
        if not logged:
            return [None] * len(requests)
        _LOG_EVENTS(connection, logged)
        # The requests' ids, for their links: the rows stamped with this group's instant (one per person and list).
        requesting = sorted({pair[0] for pair in chosen if pair})
        request_ids = {
            (row.subscriber_id, row.list_id): row.id
            for row in connection.execute(_REQUESTED_AT, {"k_ids": requesting, "k_at": at})
        }
        return [AskedSignup(pair[0], request_ids[pair]) if pair else None for pair in chosen]

    def _confirming(
        self, connection: Connection, subscriber_id: int, list_id: int, request_id: int | None, *, lock: bool = False
    ) -> tuple[sa.Row, dict, bool] | None:
        """What a confirmation link for sign-up request `request_id` may do: (the membership's status, address and
        name; the request's detail; whether that request is confirmed already), or None when it may do nothing.

        A link confirms its own request, once that request is the person's latest for the list and nothing has
        changed the membership since, but that request's own confirmation: a later request, an unsubscribe (and
        a resubscribe), a bounce, a complaint, a purge or an erasure make it void. request_id None: a link made
        before links named their request, taken for the latest request on the same terms.
        """
        # lock (a confirmation): the membership locked first (PostgreSQL; SQLite's writer is one at a time), so that
        # two servers confirming one link at once take turns and the second reads the first's confirmation whole,
        # status and event, not the status from before it and the event from after (which voided the link).
        membership = (
            sa.select(memberships.c.status, subscribers.c.email, subscribers.c.name, subscribers.c.lang)
            .join(subscribers, subscribers.c.id == memberships.c.subscriber_id)
            .where(memberships.c.subscriber_id == subscriber_id, memberships.c.list_id == list_id)
        )
        row = connection.execute(membership.with_for_update(of=memberships) if lock else membership).first()
        if row is None or row.status in (MembershipStatus.BOUNCED, MembershipStatus.COMPLAINED):
            return None
        latest = connection.execute(
            sa.select(events.c.id, events.c.detail)
            .where(
                events.c.subscriber_id == subscriber_id,
                events.c.list_id == list_id,
                events.c.kind == "signup-requested",
            )
            .order_by(events.c.id.desc())
            .limit(1)
        ).first()
        if latest is None or request_id not in (None, latest.id):
            return None  # another request's link, or one who never asked through a form: only undo brings them back
        since = connection.execute(
            sa.select(events.c.kind, events.c.source)
            .where(
                events.c.subscriber_id == subscriber_id,
                events.c.list_id == list_id,
                events.c.kind.in_(list(MembershipStatus)),
                events.c.id > latest.id,
            )
            .order_by(events.c.id)
        ).all()
        if not since:
            return row, latest.detail, row.status == MembershipStatus.SUBSCRIBED
        if [tuple(change) for change in since] == [
            (MembershipStatus.SUBSCRIBED, "double-opt-in")
        ] and row.status == MembershipStatus.SUBSCRIBED:
            return row, latest.detail, True  # confirmed by this request's link, and nothing since: done
        return None

    def confirmable(
        self, subscriber_id: int, list_id: int, request_id: int | None, *, connection: Connection | None = None
    ) -> SignupConfirmation | None:
        """Whom a confirmation link for this request would subscribe (or has), or None if it may not."""
        with self._reading(connection) as reading:
            found = self._confirming(reading, subscriber_id, list_id, request_id)
        if found is None:
            return None
        row, requested, _ = found
        return SignupConfirmation(row.email, requested.get("lang") or row.lang)

    def confirm_signup(
        self,
        subscriber_id: int,
        list_id: int,
        detail: dict,
        *,
        request_id: int | None,
        connection: Connection | None = None,
    ) -> SignupConfirmation | None:
        """The person confirmed by the link of sign-up request `request_id`: subscribe them (consent recorded),
        idempotently, as long as _confirming lets that link (its own request, nothing changed since). The
        language chosen on the form with that request becomes theirs (never before they confirm: whoever types
        someone's address in a form changes nothing of theirs).

        Returns whom, or None when the link cannot subscribe (another request's, unsubscribed since, bounced,
        complained, gone).
        """
        with self._writing(connection) as writing:
            found = self._confirming(writing, subscriber_id, list_id, request_id, lock=True)
            if found is None:
                return None
            row, requested, done = found
            chosen = requested.get("lang")
            if done:
                return SignupConfirmation(row.email, chosen or row.lang)
            consent = {"requested": requested, "confirmed": detail}
            self.set_status(
                subscriber_id, list_id, MembershipStatus.SUBSCRIBED, "double-opt-in", consent, connection=writing
            )
            changed = {}
            if not row.name and requested.get("name"):
                changed["name"] = requested["name"]
            if chosen and chosen != row.lang:  # the request's event, copied into the confirmation's, says so
                changed["lang"] = chosen
            if changed:
                writing.execute(subscribers.update().where(subscribers.c.id == subscriber_id).values(**changed))
            writing.execute(suppressions.delete().where(suppressions.c.email_hash == address_hash(row.email)))
            return SignupConfirmation(row.email, chosen or row.lang)

    def confirmations_done(
        self, done: Sequence[tuple[int, int, str | None]], *, connection: Connection | None = None
    ) -> None:
        """Record what became of confirmation emails, (subscriber, list, None once the mail server took it, else
        why it refused it for good): either way the request is not sent again (unsent_confirmations)."""
        at = now()
        logged = [
            (at, subscriber_id, list_id, "confirmation-sent", "serve", {})
            if refused is None
            else (at, subscriber_id, list_id, "confirmation-refused", "serve", {"reason": refused[:300]})
            for subscriber_id, list_id, refused in done
        ]
        with self._writing(connection) as writing:
            _LOG_EVENTS(writing, logged)

    def unsent_confirmations(
        self,
        since: dt.datetime,
        until: dt.datetime,
        skip: Collection[tuple[int, int]] = (),
        *,
        connection: Connection | None = None,
    ) -> tuple[dt.datetime, list[UnsentConfirmation]]:
        """Sign-ups requested between `since` and `until` whose confirmation email never went (the server stopped
        before it sent it, or the mail server could not be reached), each once (its latest request), and not to
        someone since subscribed, bounced or complained; `skip`: (subscriber, list) pairs the caller is sending.

        They are claimed in the same transaction, as confirmation-claimed events stamped with the instant
        returned, so that two servers never both send one (on PostgreSQL the second waits for the first's claim,
        an advisory lock). finish_claims settles them once tried; a claim left unsettled (its server killed while
        sending) lapses after CLAIM_LEASE, and its email is found again."""
        claimed_at = now()
        with self._writing(connection, durable=True) as connection:
            if connection.dialect.name == "postgresql":
                connection.exec_driver_sql("SELECT pg_advisory_xact_lock(hashtext('newsletter-unsent-confirmations'))")
            done = sa.alias(events, "done")
            rows = connection.execute(
                sa.select(
                    events.c.id,
                    events.c.subscriber_id,
                    events.c.list_id,
                    events.c.detail,
                    lists.c.slug,
                    subscribers.c.email,
                    subscribers.c.lang,
                )
                .join(
                    memberships,
                    sa.and_(
                        memberships.c.subscriber_id == events.c.subscriber_id, memberships.c.list_id == events.c.list_id
                    ),
                )
                .join(subscribers, subscribers.c.id == events.c.subscriber_id)
                .join(lists, lists.c.id == events.c.list_id)
                .where(
                    events.c.kind == "signup-requested",
                    events.c.at > since,
                    events.c.at <= until,
                    memberships.c.status.not_in(_NOTHING_TO_CONFIRM),
                    ~sa.select(done.c.id)
                    .where(
                        done.c.subscriber_id == events.c.subscriber_id,
                        done.c.list_id == events.c.list_id,
                        done.c.at >= events.c.at,
                        sa.or_(
                            done.c.kind.in_(("confirmation-sent", "confirmation-refused")),
                            sa.and_(done.c.kind == "confirmation-claimed", done.c.at > claimed_at - CLAIM_LEASE),
                        ),
                    )
                    .exists(),
                )
                .order_by(events.c.id)
            ).all()
            latest = {
                (row.subscriber_id, row.list_id): row for row in rows if (row.subscriber_id, row.list_id) not in skip
            }
            unsent = [
                UnsentConfirmation(
                    row.subscriber_id,
                    row.list_id,
                    row.slug,
                    row.email,
                    row.detail.get("name"),
                    row.id,
                    row.detail.get("lang") or row.lang,
                )
                for row in latest.values()
            ]
            _LOG_EVENTS(
                connection,
                [(claimed_at, u.subscriber_id, u.list_id, "confirmation-claimed", "serve", {}) for u in unsent],
            )
        return claimed_at, unsent

    def finish_claims(
        self,
        claimed_at: dt.datetime,
        claimed: Sequence[int],
        done: Sequence[tuple[int, int, str | None]],
        *,
        connection: Connection | None = None,
    ) -> None:
        """Settle the claims that unsent_confirmations stamped claimed_at, for these subscribers, once tried: each
        claim goes, and what became of the emails that went or were refused is recorded (confirmations_done); one
        that could not go this time is found again by a later look."""
        with self._writing(connection, durable=True) as connection:
            for start in range(0, len(claimed), 500):
                connection.execute(
                    events.delete().where(
                        events.c.kind == "confirmation-claimed",
                        events.c.at == claimed_at,
                        events.c.subscriber_id.in_(claimed[start : start + 500]),
                    )
                )
            if done:
                self.confirmations_done(done, connection=connection)

    def unconfirmed(
        self, list_id: int, *, connection: Connection | None = None
    ) -> list[tuple[str, dt.datetime, dt.datetime]]:
        """Sign-ups of a list waiting for their confirmation: (address, when first asked, when last asked: the
        link of that request is the one still valid), oldest first."""
        asked = _last_asked(list_id)
        with self._reading(connection) as connection:
            rows = connection.execute(
                sa.select(subscribers.c.email, memberships.c.updated_at, asked.c.at)
                .join(memberships, memberships.c.subscriber_id == subscribers.c.id)
                .outerjoin(asked, asked.c.subscriber_id == subscribers.c.id)
                .where(memberships.c.list_id == list_id, memberships.c.status == MembershipStatus.UNCONFIRMED)
                .order_by(memberships.c.updated_at, subscribers.c.id)
            ).all()
        return [(row.email, _aware(row.updated_at), _aware(row.at or row.updated_at)) for row in rows]

    def purge_unconfirmed(
        self, list_id: int, before: dt.datetime, *, connection: Connection | None = None
    ) -> tuple[list[str], int]:
        """Sign-ups of a list never confirmed whose last request came before `before` (their link has expired):
        their membership and their requests go (what they saw, their user agent, the hash of their IP), and the
        person too when nothing else is held about them (no other list, delivery, event, tag or field). Returns the
        addresses and how many people went whole. A confirmation that commits first keeps its person: the
        memberships are locked as they are read (FOR UPDATE on PostgreSQL; SQLite's write lock is whole)."""
        last_asked = _last_asked(list_id)
        erased = 0
        with self._writing(connection) as connection:
            rows = connection.execute(
                sa.select(subscribers.c.id, subscribers.c.email)
                .join(memberships, memberships.c.subscriber_id == subscribers.c.id)
                .outerjoin(last_asked, last_asked.c.subscriber_id == subscribers.c.id)
                .where(
                    memberships.c.list_id == list_id,
                    memberships.c.status == MembershipStatus.UNCONFIRMED,
                    sa.func.coalesce(last_asked.c.at, memberships.c.updated_at) < before,
                )
                .order_by(subscribers.c.id)
                .with_for_update(of=memberships)
            ).all()
            for start in range(0, len(rows), 500):
                ids = [row.id for row in rows[start : start + 500]]
                connection.execute(
                    memberships.delete().where(memberships.c.list_id == list_id, memberships.c.subscriber_id.in_(ids))
                )
                connection.execute(
                    events.delete().where(
                        events.c.list_id == list_id, events.c.kind.in_(_SIGNUP_KINDS), events.c.subscriber_id.in_(ids)
                    )
                )
                held = [
                    sa.select(table.c.subscriber_id).where(table.c.subscriber_id == subscribers.c.id).exists()
                    for table in (memberships, deliveries, events, subscriber_tags, subscriber_fields)
                ]
                erased += connection.execute(
                    subscribers.delete().where(subscribers.c.id.in_(ids), *(~found for found in held))
                ).rowcount
        return [row.email for row in rows], erased
