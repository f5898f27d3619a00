"""mailgun+api://KEY:DOMAIN@default?region=eu: Mailgun's batch sending, one request for up to 1000 recipients.

Endpoint: POST https://api.mailgun.net/v3/{domain}/messages (api.eu.mailgun.net for a domain created in the EU
region, `?region=eu`), multipart/form-data, HTTP Basic auth `api:KEY`. The DSN's user is the API key, its password
the sending domain. Mailgun has no idempotency key: the runner's ledger is what prevents a double send.

One batch is ONE message with one `to` field per recipient and `recipient-variables`, a JSON object keyed by each
plain address (which also makes Mailgun send each recipient a copy addressed to them alone). The campaign's text
and html are sent once, each %%placeholder%% rewritten as %recipient.VAR%:
  html_NAME   the value HTML-escaped, or the placeholder's fallback (template text, already escaped);
  text_NAME   the value as it is, or the fallback: Outgoing.html / Outgoing.text, exactly (RenderedIssue.fill);
  html_NAME-2 (and -3 …) when the same name appears with another fallback (`-` never occurs in a placeholder name).
Headers (List-Id, List-Unsubscribe, List-Unsubscribe-Post, Reply-To) go as `h:` fields. One whose value differs
between recipients, List-Unsubscribe above all, is sent as `h:List-Unsubscribe=%recipient.header_list_unsubscribe%`.
Mailgun's pages show %recipient.VAR% in the subject (a header) and say "h:" adds any MIME header, but no page
says in so many words that an h: value is substituted. django-anymail's `merge_headers` for Mailgun relies on it
(anymail/backends/mailgun.py, issue #374), and so does a pull request merged into Mailgun's own mailgun-ruby
(#97: List-Unsubscribe in batch messages, "each link is unique by user"). Not checked against the live API.
Date and Message-ID are left to Mailgun: the batch is one Mailgun message whose id comes back in the answer.
Tracking is off (o:tracking, o:tracking-clicks, o:tracking-opens = no: Law 25 s.9.1; with unsubscribe=provider the
last two only, see below). Each recipient's ledger key goes in `v:newsletter-key=%recipient.newsletter_key%`: a
custom variable filled from recipient-variables, which
Mailgun documents for exactly this ("events and webhooks associated with the recipient … will contain a
user-variable field"); recipient-variables themselves never reach a webhook. Mailgun also writes custom variables
into the delivered message's X-Mailgun-Variables header, so a recipient who reads the headers sees "12-345", the
campaign and subscriber ids our Message-ID carries with the other transports.

Answers: 200 {"id": "<…>", "message": "Queued. Thank you."} for the whole batch: every message sent with that id
(bounces only come later, by webhook or the events API). 400 {"message": "…"}: the whole batch is refused, every
message failed with Mailgun's words; one invalid `to` address is enough ("'to' parameter is not a valid
address. please check documentation", which does not say which), so addresses that cannot be valid are kept out
of the request and failed here as bounces. 404: Mailgun says it "can be temporal as our system is an
eventually-consistent system": retry. 401/403, 429 and 5xx are _http's.

Doc pages relied on:
  https://documentation.mailgun.com/docs/mailgun/user-manual/sending-messages/batch-sending (1000, recipient-variables)
  https://documentation.mailgun.com/docs/mailgun/api-reference/openapi-final/tag/Messages (fields, multipart)
  https://documentation.mailgun.com/docs/mailgun/user-manual/sending-messages/pass-sending-options (o:tracking)
  https://documentation.mailgun.com/docs/mailgun/quickstart-guide/responses (400 message, temporal 404, 429, 500)
  https://documentation.mailgun.com/en/latest/api-sending.html (h:X-My-Header, h:Reply-To, the 200 answer; o:, h:
    and v: fields together at most 16 kB)
  https://documentation.mailgun.com/docs/mailgun/user-manual/sending-messages (EU host, "not a valid address")
  https://documentation.mailgun.com/docs/mailgun/user-manual/sending-messages/send-attachments ("Attaching Metadata
    to Messages": v: fields, user-variables, and v:recipient-id=%recipient.id% filled per recipient)

Webhooks: Mailgun posts one JSON object per event, {"signature": {"timestamp", "token", "signature"},
"event-data": {…}}, and signs it in the body: signature = hex HMAC-SHA256(HTTP webhook signing key, timestamp +
token), the key read from NEWSLETTER_WEBHOOK_SECRET_MAILGUN. Only timestamp and token are signed, never the event:
verify_webhook refuses a timestamp older than 9 hours (Mailgun retries for 8, and a retry may carry the first
attempt's signature) or 5 minutes in the future. The server reserves each token it acts on (webhook_token) in
its store for as long as its timestamp would pass (WEBHOOK_TOKEN_KEPT), in the transaction that applies the
event, and refuses a token reserved before: otherwise a signature seen once could carry any event.
Mailgun takes 200 as done and 406 as refused for good; any other status makes it retry. Events:
failed with severity permanent -> bounced (temporary failures are retried by Mailgun and change nothing),
complained, unsubscribed (only sent when the domain's own unsubscribe tracking is on); accepted, delivered,
opened, clicked and the rest change nothing. The key is event-data["user-variables"]["newsletter-key"]; Mailgun
writes "user-variables": [] when a message has none. The legacy form-encoded webhooks (retired in 2023) are not read.
  https://documentation.mailgun.com/docs/mailgun/user-manual/webhooks/securing-webhooks (the algorithm, the
    signing key, parent-signature for subaccounts)
  https://documentation.mailgun.com/en/latest/user_manual.html#securing-webhooks (the earlier manual: "cache the
    token value locally and not honor any subsequent request with the same token", "check if the timestamp is
    not too far from the current time", no tolerance given)
  https://documentation.mailgun.com/docs/mailgun/user-manual/webhooks/webhook-payloads (one example per event)
  https://documentation.mailgun.com/docs/mailgun/user-manual/webhooks/webhook-retries (200, 406, 8 hours)
  https://documentation.mailgun.com/docs/mailgun/user-manual/events/event-types (failed: permanent, temporary)
  https://github.com/hookdeck/webhook-skills skills/mailgun-webhooks/references/verification.md ("The signature
    object is identical on every retry of the same event"; Mailgun's own pages do not say)
  https://help.mailgun.com/hc/en-us/articles/14048832145051-Legacy-Webhooks (legacy webhooks retired October 2023)

Suppressions (`newsletter subscribers sync`, for those who run no server for webhooks): Mailgun keeps three lists
per sending domain, read with GET /v3/{domain}/bounces, /complaints and /unsubscribes on the DSN's region host,
HTTP Basic `api:KEY`, `?limit=1000` (each list's documented maximum; the earlier manual said 10000). An answer is
{"items": […], "paging": {"first", "last", "next", "previous"}}: suppressions() follows `paging.next`, URL as
given, until a page has no items (Mailgun's last `next` still points somewhere: the page after the end, empty),
a page has no `next`, or a `next` repeats one already read. A `next` on another scheme, host or port, or another
path, is refused (TransportError), never followed: the request would carry the API key. Items and mapping:
  bounces       {address, code, error, created_at} -> bounced. Every entry: the list holds "delivery failures
                due to permanent recipient mailbox errors"; "soft bounces … are not added" (reference page), and
                "subsequent delivery attempts to an address found in a bounce list are prevented" (earlier
                manual): they come back as permanent failures (code 605 as Ghost met them, TryGhost/Ghost#16080),
                which parse_webhook reads as bounced too. A user reports full mailboxes listed all the same
                (simpleanalytics/roadmap#612): bounced here like the rest, Mailgun delivers to none of them until
                the entry is removed. Entries added through the API or a CSV import say what their author wrote.
                `code` is a string, a number in older examples; code and error both go in detail.
  complaints    {address, created_at} -> complained (feedback-loop spam reports).
  unsubscribes  {address, tags, created_at} -> unsubscribed. tags ["*"] is every message of the domain; a named
                tag only messages sent with that o:tag (with unsubscribe=provider, a list's slug: see below): such
                a record is still an unsubscribed event (key None: every list), its tags spelled out in detail for
                the event log.
detail holds Mailgun's words and created_at as written ("Fri, 18 Oct 2024 18:28:14 UTC"); at is that date, or
None (the import default "Mon, 01 Jan 0001 …" is no date). 401/403 -> TransportError (a Domain Sending Key may
only POST messages; an Analyst key has no access to suppressions); 404 -> TransportError naming domain and
region; 429, 5xx and connection errors -> the same page again after Retry-After or 1, 2, 4 s, then TransportError;
an answer that is not the documented JSON -> TransportError.
  https://documentation.mailgun.com/docs/mailgun/api-reference/send/mailgun/bounces/get-v3--domainid--bounces
    (limit max 1000, page, paging fields), and …/complaints/get-v3--domainid--complaints, the same for complaints
  https://documentation.mailgun.com/docs/mailgun/api-reference/openapi-final/tag/Bounces (what the list holds,
    the example answer), …/tag/Complaints, …/tag/Unsubscribe (tags: "use * to unsubscribe an address from all
    domain's correspondence", the example answers)
  https://documentation.mailgun.com/en/latest/api-suppressions.html (the earlier manual: suppression lists are
    per sending domain; bounces returned in alphabetical order)
  https://documentation.mailgun.com/docs/mailgun/user-manual/tracking-messages/tracking-unsubscribes
    (%unsubscribe_url% for the domain, %tag_unsubscribe_url% for the message's tags)
  https://documentation.mailgun.com/docs/mailgun/user-manual/api-key-mgmt/rbac-mgmt (Domain Sending Keys)
  The shape of real paging URLs (?page=next&address=…&limit=…) is from a recorded answer in a Mailgun client's
  tests (the reference pages show "<next page url>"); not checked against the live API.

Mailgun's hosted unsubscribe (`?unsubscribe=provider`; the default, `own`, is everything above): the footer's
link is Mailgun's %tag_unsubscribe_url%, written literally into the html and text sent once per batch (never as
a recipient variable: Mailgun substitutes its own variables in the content, and no page says it does so inside a
variable's value), and every batch carries o:tag=<the list's slug> (read from the List-Id, `<slug.domain>`).
  Why the tag variable: %unsubscribe_url% unsubscribes "from all messages sent by given domain", which would also
  block every other list sent from the domain and the confirmation of a later sign-up; %tag_unsubscribe_url% is
  "unsubscribe from all tags provided in the message", and a message carries one tag, its list: one list left,
  as with our own links (signed for one list). Mailgun then refuses that address only messages with that tag.
  Our List-Unsubscribe and List-Unsubscribe-Post are not sent (message.Campaign writes none): Mailgun writes its
  own when the domain's unsubscribe tracking is on (help article "Unsubscribe Handling Links": the domain-level
  setting works "through Mailgun's automatic addition of the necessary List-Unsubscribe and List-Unsubscribe-Post
  headers"). Which URL Mailgun puts in that header (the tag's or the domain's) is not documented, and the header
  itself is not checked against the live API.
  The trap: "Mailgun can automatically provide a customizable unsubscribe footer in each email you send"; the
  manual's way to place the link yourself is to enable the feature, "Remove text in the HTML and text footer so
  they won't be appended automatically", and insert a variable. preflight() reads GET /v3/domains/{domain}/tracking
  and refuses to send unless tracking.unsubscribe.active is true and both html_footer and text_footer are blank
  (else each message would carry two unsubscribe links). That call needs an account key, as sync does.
  Tracking: o:tracking-clicks=no and o:tracking-opens=no are still sent (Law 25), but not o:tracking=no. The API
  reference says o:tracking "toggles both click and open tracking", and Mailgun's tracking settings list
  unsubscribes as a third kind beside them; no page says whether o:tracking=no also turns off the unsubscribe
  variables. Not checked against the live API, so the two explicit flags are used, which keep tracking off either
  way and cannot disable the link.
  Suppressions: before each send `send` reads the unsubscribes list (suppressions() above). Tagged records become
  unsubscribed events without a key, and `subscribers sync` applies such an event to every list of the address:
  someone who leaves one list through Mailgun's page leaves every list in our store (Mailgun itself still
  delivers the other lists' messages to them).
  https://documentation.mailgun.com/docs/mailgun/user-manual/tracking-messages/tracking-unsubscribes (the three
    variables, "Remove text in the HTML and text footer", the DNS records needed first)
  https://help.mailgun.com/hc/en-us/articles/203306610-Unsubscribe-Handling-Links (domain or per-email handling,
    Mailgun's List-Unsubscribe and List-Unsubscribe-Post)
  https://documentation.mailgun.com/docs/mailgun/api-reference/send/mailgun/domain-tracking/get-v3-domains--name--tracking
    (tracking.unsubscribe.active, html_footer, text_footer)
  https://documentation.mailgun.com/docs/mailgun/api-reference/openapi-final/tag/Messages (o:tag, o:tracking:
    "Toggles both click and open tracking on a per-message basis")
"""

from __future__ import annotations

import asyncio
import base64
import email.utils
import hashlib
import hmac
import json
import re
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import ClassVar
from urllib.parse import quote, unquote, urlsplit

import httpx

from newsletter.errors import NewsletterError
from newsletter.message import HostedUnsubscribe, Mailbox, Outgoing
from newsletter.render import Verbatim, escape_value
from newsletter.transports._http import ApiRequest, ApiTransport, api_base_url, retry_after, short
from newsletter.transports.base import (
    UNSUBSCRIBE_OPTION,
    DeliveryEvent,
    Dsn,
    Outcome,
    TransportError,
    WebhookHandler,
    not_built_for,
)

NAME = "Mailgun"
MAX_BATCH = 1000  # "The maximum number of recipients allowed for batch is 1,000" (batch-sending page)
REGIONS = {"us": "api.mailgun.net", "eu": "api.eu.mailgun.net"}
# Mailgun writes these itself: one batch is one Mailgun message, answered with one id.
MAILGUN_HEADERS = frozenset({"date", "message-id"})
# Characters no deliverable address contains outside a quoted local part (which we do not accept either).
_BAD_ADDRESS_CHARS = re.compile(r'[\s<>,;"()\[\]\\\x00-\x1f\x7f]')
# RFC 5322 specials: a display name holding one is quoted, which Mailgun gets wrong for non-ASCII names.
_SPECIALS = frozenset('()<>[]:;@\\,."')
# The custom variable that carries a message's ledger key, and the recipient variable that fills it for each
# recipient (no placeholder variable can be called so: theirs start with html_, text_ or header_).
KEY_VARIABLE = "newsletter-key"
KEY_RECIPIENT_VARIABLE = "newsletter_key"
_LEDGER_KEY = re.compile(r"\d+-\d+")  # Outgoing.key: campaign id - subscriber id
# Mailgun retries a webhook "during 8 hours" (5 min, 10 min, 15 min, 1 h, 2 h, 4 h); an hour more for its queue.
WEBHOOK_MAX_AGE = 9 * 3600
WEBHOOK_MAX_SKEW = 300  # a timestamp ahead of our clock by more than this is refused too
# Seconds the server keeps a token it acted on: until no timestamp it may have been signed with would still pass.
WEBHOOK_TOKEN_KEPT = WEBHOOK_MAX_AGE + WEBHOOK_MAX_SKEW
# The suppression lists, in the order suppressions() reads them, and the event each entry becomes.
SUPPRESSION_LISTS = {"bounces": "bounced", "complaints": "complained", "unsubscribes": "unsubscribed"}
SUPPRESSION_PAGE_LIMIT = 1000  # "Maximum number of records to return (optional, default: 100, max: 1000)"
SUPPRESSION_RETRIES = 3  # after a 429, a 5xx or a connection error: the same page again, at most this often
SUPPRESSION_BACKOFF = (1.0, 2.0, 4.0)  # seconds before each retry when Mailgun sends no Retry-After
SUPPRESSION_MAX_WAIT = 60.0  # a longer Retry-After stops the sync: run it again later
_YEAR = re.compile(r"\b(\d{4})\b")
# Mailgun's hosted unsubscribe (unsubscribe=provider): its variable for "all tags provided in the message", one tag
# per message (the list's slug), and the headers it then writes itself.
TAG_UNSUBSCRIBE_URL = "%tag_unsubscribe_url%"
MAX_TAG = 128  # "Tags are case insensitive and should be ascii only. Maximum tag length is 128 characters."


def hosted_unsubscribe(domain: str) -> HostedUnsubscribe:
    """What unsubscribe=provider gives a Mailgun transport: the tag variable, for its sending domain's lists."""
    return HostedUnsubscribe(
        provider="mailgun",
        url=TAG_UNSUBSCRIBE_URL,
        description=(
            f"Mailgun's hosted unsubscribe for {domain} (%tag_unsubscribe_url%, each message tagged with its list; "
            "Mailgun writes List-Unsubscribe and keeps the unsubscribes list)"
        ),
        fields={"domain": domain},
    )


def list_tag(message: Outgoing) -> str | None:
    """The list's slug, the o:tag of its messages: the List-Id's <slug.sender-domain>, or None."""
    list_id = message.headers.get("List-Id") or ""
    inside = list_id[list_id.rfind("<") + 1 : list_id.rfind(">")] if "<" in list_id and ">" in list_id else ""
    suffix = "." + message.sender.domain
    slug = inside[: -len(suffix)] if inside.endswith(suffix) else ""
    return slug if slug and slug.isascii() and len(slug) <= MAX_TAG and not _BAD_ADDRESS_CHARS.search(slug) else None


def hosted_problem(messages: Sequence[Outgoing], hosted: HostedUnsubscribe) -> str | None:
    """Why these messages cannot go out with Mailgun's unsubscribe (one line), or None.

    Every message must have been built for it (the placeholder's value is Mailgun's variable, no List-Unsubscribe of
    ours), the issue must carry %%unsubscribe_url%% in its HTML and in its text, and the List-Id must name the list.
    """
    for message in messages:
        if problem := not_built_for(message, hosted, "Mailgun"):
            return problem
        if list_tag(message) is None:
            return f"{message.key} has no List-Id naming its list (<slug.{message.sender.domain}>) to tag it with"
    rendered = messages[0].body.rendered
    for kind, parts in (("HTML", rendered.html_parts), ("text", rendered.text_parts)):
        if not any(not isinstance(part, str) and part[0] == "unsubscribe_url" for part in parts):
            return (
                f"the issue's {kind} part has no %%unsubscribe_url%%, so it would carry no Mailgun unsubscribe link; "
                "keep it in the footer template"
            )
    return None


def build_payload(messages: Sequence[Outgoing], hosted: HostedUnsubscribe | None = None) -> list[tuple[str, str]]:
    """The form fields of one Mailgun batch, in order; repeated names (`to`) are repeated fields.

    Only the batch's members go in (see batch_members). Raise ValueError when the messages are not one campaign's
    (one body, sender and subject): a Mailgun batch is one message with per-recipient values. With `hosted`
    (unsubscribe=provider), a placeholder whose value is the same Verbatim text for every member (Mailgun's
    %tag_unsubscribe_url%) is written into the html and text as it stands, the batch is tagged with its list,
    and o:tracking (which might also cover unsubscribes) is left out; raise ValueError on a hosted_problem().
    """
    members = [messages[i] for i in batch_members(messages)]
    if not members:
        raise ValueError("no message of this batch can go to Mailgun")
    if len(members) > MAX_BATCH:
        raise ValueError(f"a Mailgun batch holds at most {MAX_BATCH} recipients, not {len(members)}")
    first = members[0]
    for message in members:
        if message.body is not first.body or message.sender != first.sender or message.subject != first.subject:
            raise ValueError(
                f"Mailgun batches one campaign's messages (one body, sender and subject); {message.key} differs "
                f"from {first.key}"
            )
    if hosted is not None:
        problem = hosted_problem(members, hosted)
        if problem:
            raise ValueError(problem)
    rendered = first.body.rendered
    # A value the same for every member and never escaped (a provider's own variable) goes in the content itself.
    verbatim = {
        name: value
        for name, value in first.values.items()
        if isinstance(value, Verbatim) and all(message.values.get(name) == value for message in members)
    }
    html_template, html_vars = _mailgun_template(rendered.html_parts, "html", verbatim)
    text_template, text_vars = _mailgun_template(rendered.text_parts, "text", verbatim)

    fields = [("from", _address(first.sender))]
    fields += [("to", _address(message.recipient)) for message in members]
    fields += [("subject", first.subject), ("text", text_template), ("html", html_template)]
    header_vars: dict[str, str] = {}  # header name -> recipient variable, for values that differ by recipient
    names = dict.fromkeys(name for message in members for name in message.headers)
    for name in (n for n in names if n.lower() not in MAILGUN_HEADERS):
        values = {message.headers.get(name) for message in members}
        if len(values) == 1 and None not in values:
            fields.append((f"h:{name}", values.pop() or ""))
        else:
            header_vars[name] = "header_" + name.lower().replace("-", "_")
            fields.append((f"h:{name}", f"%recipient.{header_vars[name]}%"))
    if hosted is None:
        fields += [("o:tracking", "no"), ("o:tracking-clicks", "no"), ("o:tracking-opens", "no")]
    else:
        fields += [("o:tag", list_tag(first) or ""), ("o:tracking-clicks", "no"), ("o:tracking-opens", "no")]
    # Each recipient's ledger key, which Mailgun echoes in its webhooks' user-variables (see parse_webhook).
    fields.append((f"v:{KEY_VARIABLE}", f"%recipient.{KEY_RECIPIENT_VARIABLE}%"))

    variables = {}
    for message in members:
        own = {KEY_RECIPIENT_VARIABLE: message.key}
        for (placeholder, fallback), var in html_vars.items():
            value = message.values.get(placeholder)
            own[var] = escape_value(value) if value else fallback  # the fallback is template text, already escaped
        for (placeholder, fallback), var in text_vars.items():
            own[var] = message.values.get(placeholder) or fallback
        for name, var in header_vars.items():
            own[var] = message.headers.get(name, "")
        variables[message.recipient.addr_spec] = own  # keyed as the `to` field writes it
    fields.append(("recipient-variables", json.dumps(variables, ensure_ascii=False)))
    return fields


def parse_response(status: int, headers: Mapping[str, str], body: bytes, messages: Sequence[Outgoing]) -> list[Outcome]:
    """Return one Outcome per message, in order, from Mailgun's answer to the batch's one request.

    Messages kept out of the request keep their local outcome; the members share Mailgun's verdict.
    """
    outcomes = local_outcomes(messages)
    members = [i for i, outcome in enumerate(outcomes) if outcome is None]
    answer = _json(body)
    said = answer.get("message") if isinstance(answer.get("message"), str) else None
    if 200 <= status < 300:
        provider_id = answer.get("id")
        if isinstance(provider_id, str) and provider_id:
            verdict = Outcome.sent(provider_id)
        else:  # e.g. 200 "Mailgun Magnificent API": the URL reached no messages endpoint
            verdict = Outcome.retry(
                f"{NAME} {status}: the answer names no message ({short(body)}); check the sending domain after "
                "the ':' in the DSN and its region (?region=eu for a domain created in the EU)"
            )
    elif status == 404:
        verdict = Outcome.retry(
            f"{NAME} 404: {said or short(body) or 'not found'}; Mailgun says a 404 can be temporary, if it lasts "
            "check the sending domain after the ':' in the DSN and its region (?region=eu for an EU domain)"
        )
    elif 400 <= status < 500:
        verdict = Outcome.failed(
            f"{NAME} {status}: {said or short(body) or 'request refused'} (the whole batch of {len(members)} "
            "was refused)"
        )
    else:
        verdict = Outcome.retry(f"{NAME} {status}: {short(body) or 'unexpected answer'}")
    for i in members:
        outcomes[i] = verdict
    return [outcome if outcome is not None else Outcome.retry(f"{NAME}: no answer") for outcome in outcomes]


def verify_webhook(
    headers: Mapping[str, str],
    body: bytes,
    secret: str,
    *,
    now: float | None = None,
    max_age: float = WEBHOOK_MAX_AGE,
    **_: object,
) -> bool:
    """True only if the body carries Mailgun's signature, made with `secret`, and fresh.

    secret: the account's "HTTP webhook signing key", as Mailgun's control panel names it (not the sending API
    key, which Mailgun's earlier pages told to use), which the server reads from NEWSLETTER_WEBHOOK_SECRET_MAILGUN.
    The signature is in the body, not in a header: {"signature": {"timestamp", "token", "signature"}, "event-data"}
    with signature = hex HMAC-SHA256(secret, timestamp + token). A subaccount's events also carry a
    "parent-signature" made with the primary account's key; either one may match `secret`.
    Refused: a timestamp more than `max_age` seconds old (9 hours: Mailgun retries a webhook for 8, and a
    retry may carry the first attempt's signature) or more than 5 minutes ahead of `now`. Mailgun signs only
    timestamp + token, not the event: this says nothing of a replay. The server reserves the token of each
    request it acts on (webhook_token gives it) and refuses one reserved before, or a signature seen once could
    carry any event for 9 hours.
    headers play no part. Never raises: anything malformed is False.
    """
    try:
        key = secret.strip().encode("utf-8")
        signed = json.loads(body).get("signature")
        timestamp, token = signed["timestamp"], signed["token"]
        if isinstance(timestamp, int) and not isinstance(timestamp, bool):
            timestamp = str(timestamp)
        if not key or not isinstance(timestamp, str) or not isinstance(token, str) or not token:
            return False
        if not timestamp.isascii() or not timestamp.isdigit():
            return False
        age = (time.time() if now is None else now) - int(timestamp)
        if age > max_age or age < -WEBHOOK_MAX_SKEW:
            return False
        expected = hmac.new(key, (timestamp + token).encode("utf-8"), hashlib.sha256).hexdigest().encode("ascii")
        offered = [signed.get("signature"), signed.get("parent-signature")]
        matches = [hmac.compare_digest(expected, value.encode("utf-8")) for value in offered if isinstance(value, str)]
        return any(matches)
    except Exception:  # malformed input of any kind (not JSON, not an object, a missing field…) is not authentic
        return False


def webhook_token(body: bytes) -> str | None:
    """The token of a webhook's signature: what the server reserves (for WEBHOOK_TOKEN_KEPT) to refuse a replay."""
    try:
        token = json.loads(body)["signature"]["token"]
    except (ValueError, TypeError, KeyError, RecursionError):
        return None
    return token if isinstance(token, str) and token else None


def parse_webhook(body: bytes, headers: Mapping[str, str] | None = None) -> list[DeliveryEvent]:
    """The membership change in one Mailgun webhook, as a list of at most one event (Mailgun posts one per request).

    failed with severity "permanent" is a bounce (Mailgun gives up on the address: a hard bounce, an address
    already suppressed, a message past its retries); complained and unsubscribed are themselves. Temporary
    failures, accepted, delivered, opened, clicked and anything else change nothing. The ledger key comes back
    in user-variables (build_payload's v:newsletter-key). Raise ValueError when the body is not Mailgun's JSON.
    """
    try:
        payload = json.loads(body)
    except ValueError as exc:
        raise ValueError(f"not JSON ({exc})") from None
    data = payload.get("event-data") if isinstance(payload, dict) else None
    if not isinstance(data, dict):
        raise ValueError("no event-data object: not a Mailgun webhook (legacy form-encoded webhooks are not read)")
    event = data.get("event")
    if event == "failed" and data.get("severity") == "permanent":
        status = data.get("delivery-status") if isinstance(data.get("delivery-status"), dict) else {}
        said = " ".join(str(status.get(k) or "") for k in ("code", "message")).strip() or status.get("description")
        kind, detail = "bounced", f"permanent failure ({data.get('reason') or 'no reason given'})"
        detail += f": {said}" if said else ""
    elif event == "complained":
        kind, detail = "complained", "spam complaint"
    elif event == "unsubscribed":
        kind, detail = "unsubscribed", "unsubscribed through Mailgun"
    else:
        return []
    recipient = data.get("recipient")
    if not isinstance(recipient, str) or "@" not in recipient:
        raise ValueError(f"a {event} event without a recipient address")
    return [
        DeliveryEvent(
            kind=kind,
            email=recipient.strip(),
            provider_id=_message_id(data),
            at=_when(data.get("timestamp")),
            detail=detail[:500],
            key=_ledger_key(data.get("user-variables")),
        )
    ]


def _message_id(data: dict) -> str | None:
    """The Message-ID as the sending answer gave it (<…>); webhooks give it without the brackets."""
    message = data.get("message")
    headers = message.get("headers") if isinstance(message, dict) else None
    found = headers.get("message-id") if isinstance(headers, dict) else None
    if not isinstance(found, str) or not found.strip():
        return None
    found = found.strip()
    return found if found.startswith("<") else f"<{found}>"


def _when(timestamp: object) -> datetime | None:
    if isinstance(timestamp, bool) or not isinstance(timestamp, int | float):
        return None
    try:
        return datetime.fromtimestamp(timestamp, tz=UTC)
    except (OverflowError, OSError, ValueError):
        return None


def _ledger_key(variables: object) -> str | None:
    """Our key from user-variables; Mailgun writes [] when a message has none, and a value left as
    %recipient.newsletter_key% (a recipient without the variable) is no key."""
    if not isinstance(variables, dict):
        return None
    key = variables.get(KEY_VARIABLE)
    return key if isinstance(key, str) and _LEDGER_KEY.fullmatch(key) else None


def parse_suppressions(body: bytes, endpoint: str) -> tuple[list[DeliveryEvent], str | None]:
    """The events on one page of a Mailgun suppression list, and the URL of the next page (None: the end).

    endpoint: "bounces", "complaints" or "unsubscribes". The next page is `paging.next` as Mailgun wrote it,
    unchecked (suppressions() checks its host); None when this page has no items or no next. Raise ValueError
    when the body is not the documented answer: not a JSON object, no items list, an item without an address.
    """
    kind = SUPPRESSION_LISTS.get(endpoint)
    if kind is None:
        raise ValueError(f"no Mailgun suppression list is called {endpoint!r}: {', '.join(SUPPRESSION_LISTS)}")
    try:
        answer = json.loads(body)
    except (ValueError, RecursionError) as exc:
        raise ValueError(f"not JSON ({exc})") from None
    if not isinstance(answer, dict):
        raise ValueError("not a JSON object")
    items = answer.get("items")
    if not isinstance(items, list):
        raise ValueError("no items list")
    events = []
    for item in items:
        if not isinstance(item, dict):
            raise ValueError(f"an item that is not an object: {item!r}"[:200])
        address = item.get("address")
        if not isinstance(address, str) or "@" not in address:
            raise ValueError(f"an item without an address: {item!r}"[:200])
        created = item.get("created_at")
        listed = f" (listed {created.strip()})" if isinstance(created, str) and created.strip() else ""
        if kind == "bounced":
            said = " ".join(str(item.get(k)).strip() for k in ("code", "error") if item.get(k) not in (None, ""))
            detail = f"hard bounce on Mailgun's bounces list: {said or 'no reason given'}{listed}"
        elif kind == "complained":
            detail = f"spam complaint on Mailgun's complaints list{listed}"
        else:
            detail = f"{_unsubscribed_from(item)} on Mailgun's unsubscribes list{listed}"
        events.append(DeliveryEvent(kind=kind, email=address.strip(), at=_listed_at(created), detail=detail[:500]))
    paging = answer.get("paging")
    following = paging.get("next") if isinstance(paging, dict) else None
    if following is not None and not isinstance(following, str):
        raise ValueError(f"paging.next is not a URL: {following!r}"[:200])
    if not events or not following or not following.strip():
        return events, None
    return events, following.strip()


def _unsubscribed_from(item: dict) -> str:
    """What an unsubscribes record covers, in words: all of the domain's mail ("*") or named tags only."""
    tags = item.get("tags")
    if isinstance(item.get("tag"), str):  # the earlier API's one tag per record
        tags = [item["tag"]]
    named = [tag for tag in tags if isinstance(tag, str) and tag] if isinstance(tags, list) else []
    if not named:
        return "unsubscribed (no tag given; Mailgun's default is *, all mail of the domain)"
    if "*" in named:
        others = [tag for tag in named if tag != "*"]
        return "unsubscribed from all mail of the domain (tags *" + "".join(f", {tag!r}" for tag in others) + ")"
    return "unsubscribed from Mailgun tag " + ", ".join(repr(tag) for tag in named) + " only"


def _listed_at(created: object) -> datetime | None:
    """created_at ("Fri, 18 Oct 2024 18:28:14 UTC") as a datetime, or None.

    The import default "Mon, 01 Jan 0001 00:00:00 UTC" is no date (the parser would read year 0001 as 2001).
    """
    if not isinstance(created, str) or not created.strip():
        return None
    try:
        when = email.utils.parsedate_to_datetime(created.strip())
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    year = _YEAR.search(created)
    if year is None or int(year.group(1)) != when.year:
        return None
    return when if when.tzinfo is not None else when.replace(tzinfo=UTC)


async def _pause(seconds: float) -> None:
    """Wait before retrying a suppression page (the tests replace it)."""
    await asyncio.sleep(seconds)


def batch_members(messages: Sequence[Outgoing]) -> list[int]:
    """The positions of the messages that go in the request (those without a local outcome)."""
    return [i for i, outcome in enumerate(local_outcomes(messages)) if outcome is None]


def local_outcomes(messages: Sequence[Outgoing]) -> list[Outcome | None]:
    """What is known before asking Mailgun: None for a batch member, else the message's Outcome.

    An address that cannot be valid is failed as a bounce (sent, it would make Mailgun refuse the whole batch);
    an address already in the batch waits for a later one, as recipient-variables are keyed by address.
    """
    outcomes: list[Outcome | None] = []
    seen: set[str] = set()
    for message in messages:
        address = message.recipient.address
        problem = address_problem(address)
        if problem:
            outcomes.append(Outcome.failed(f"{NAME}: '{address}' is not a valid address ({problem})", bounce=True))
        elif not _local_part(address).isascii():  # not a bounce: another transport may deliver it
            outcomes.append(Outcome.failed(
                f"{NAME} takes no address whose local part is not ASCII (its 400 would refuse the whole batch); "
                "send to this subscriber through smtp:// with a server offering SMTPUTF8"
            ))  # fmt: skip
        elif address.casefold() in seen:
            outcomes.append(
                Outcome.retry(f"{NAME}: {address} is twice in this batch (one copy per address); it goes in the next")
            )
        else:
            seen.add(address.casefold())
            outcomes.append(None)
    return outcomes


def address_problem(address: str) -> str | None:
    """Why an address cannot be delivered to, or None. Deliberately loose: only what no mailbox can be."""
    local, at, domain = address.rpartition("@")
    if not at or not local or not domain:
        return "it needs a name, an @ and a domain"
    if _BAD_ADDRESS_CHARS.search(address):
        return 'it contains a space, a control character or one of < > , ; " ( ) [ ] \\'
    if "." not in domain or domain.startswith(".") or domain.endswith(".") or ".." in domain:
        return f"'{domain}' is not a domain name"
    return None


def _local_part(address: str) -> str:
    return address.rpartition("@")[0]


def _mailgun_template(
    parts: list, kind: str, verbatim: Mapping[str, str] | None = None
) -> tuple[str, dict[tuple[str, str], str]]:
    """The template with each (name, fallback) placeholder as %recipient.VAR%, and the variable of each; a
    placeholder named in `verbatim` is its value as it stands (the same for every recipient, never escaped)."""
    variables: dict[tuple[str, str], str] = {}
    out = []
    for part in parts:
        if isinstance(part, str):
            out.append(part)
            continue
        if verbatim and verbatim.get(part[0]):
            out.append(verbatim[part[0]])
            continue
        var = variables.get(part)
        if var is None:
            variant = 1 + sum(1 for placeholder, _ in variables if placeholder == part[0])
            var = variables[part] = f"{kind}_{part[0]}" + (f"-{variant}" if variant > 1 else "")
        out.append(f"%recipient.{var}%")
    return "".join(out), variables


def _address(mailbox: Mailbox) -> str:
    """A `from` or `to` value: UTF-8 as it is, except where Mailgun is known to mangle it; an international
    domain in A-labels (local_outcomes keeps a local part that is not ASCII out of the request).

    Mailgun wraps a display name holding both non-ASCII characters and punctuation in stray quotes, giving an
    invalid header (django-anymail issue #270): such a name is sent RFC 2047-encoded instead.
    """
    name = " ".join(mailbox.name.split())  # no line break may reach a header
    if not name:
        return mailbox.addr_spec
    if name.isascii():
        return email.utils.formataddr((name, mailbox.addr_spec))
    if _SPECIALS.intersection(name):
        return Mailbox(name, mailbox.address).header()
    return f"{name} <{mailbox.addr_spec}>"


def _json(body: bytes) -> dict:
    try:
        answer = json.loads(body)
    except ValueError:
        return {}
    return answer if isinstance(answer, dict) else {}


class MailgunWebhooks(WebhookHandler):
    """POST /webhooks/mailgun: verify_webhook and parse_webhook above."""

    replay_tokens: ClassVar[bool] = True
    token_kept: ClassVar[timedelta] = timedelta(seconds=WEBHOOK_TOKEN_KEPT)

    def replay_token(self, body: bytes) -> str | None:
        return webhook_token(body)

    def verify(self, headers: Mapping[str, str], body: bytes, secret: str) -> bool:
        return verify_webhook(headers, body, secret)

    def parse(self, body: bytes, headers: Mapping[str, str]) -> list[DeliveryEvent]:
        return parse_webhook(body, headers)


class MailgunTransport(ApiTransport):
    scheme: ClassVar[str] = "mailgun+api"
    max_batch: ClassVar[int] = MAX_BATCH
    default_host: ClassVar[str] = REGIONS["us"]
    name: ClassVar[str] = NAME

    def __init__(self, dsn: Dsn, **kwargs):
        self.api_key, self.domain, region, unsubscribe = _settings(dsn)  # before the HTTP client exists
        super().__init__(dsn, **kwargs)
        self.base_url = api_base_url(dsn, REGIONS[region])
        self._authorization = "Basic " + base64.b64encode(f"api:{self.api_key}".encode()).decode("ascii")
        self.hosted_unsubscribe = hosted_unsubscribe(self.domain) if unsubscribe == "provider" else None

    @classmethod
    def from_dsn(cls, dsn: Dsn, **_: object) -> MailgunTransport:
        return cls(dsn)

    def build_request(self, messages: Sequence[Outgoing]) -> ApiRequest:
        return ApiRequest(
            path=f"/v3/{quote(self.domain, safe='')}/messages",
            headers={"Authorization": self._authorization, "Accept": "application/json"},
            # (None, value): a plain form field, no file name; httpx then sends multipart/form-data.
            files=[(field, (None, value)) for field, value in build_payload(messages, self.hosted_unsubscribe)],
        )

    def parse_response(
        self, status: int, headers: Mapping[str, str], body: bytes, messages: Sequence[Outgoing]
    ) -> list[Outcome]:
        return parse_response(status, headers, body, messages)

    async def send_batch(self, messages: Sequence[Outgoing]) -> list[Outcome]:
        outcomes = local_outcomes(messages)
        if all(outcome is not None for outcome in outcomes):  # no valid address: nothing to ask Mailgun
            return [outcome for outcome in outcomes if outcome is not None]
        members = [message for message, outcome in zip(messages, outcomes, strict=True) if outcome is None]
        if self.hosted_unsubscribe is not None:
            problem = hosted_problem(members, self.hosted_unsubscribe)
            if problem:
                raise TransportError(f"{NAME} (unsubscribe=provider): {problem}")
        # The members alone: a message that cannot be written is then told apart from one kept out (_http).
        answers = iter(await super().send_batch(members))
        return [outcome or next(answers) for outcome in outcomes]

    async def preflight(self) -> None:
        """With unsubscribe=provider, refuse a domain whose messages would lack Mailgun's link or carry two.

        Reads GET /v3/domains/{domain}/tracking: unsubscribe tracking must be active (else %tag_unsubscribe_url%
        stays as written) and its HTML and text footers blank (else Mailgun appends its own footer, a second
        link). Raise NewsletterError saying what to change; TransportError when Mailgun cannot be asked.
        """
        if self.hosted_unsubscribe is None:
            return
        where = f"{NAME}'s tracking settings for {self.domain}"
        url = f"{self.base_url}/v3/domains/{quote(self.domain, safe='')}/tracking"
        try:
            response = await self.client.get(
                url, headers={"Authorization": self._authorization, "Accept": "application/json"}
            )
        except httpx.TransportError as exc:
            raise TransportError(f"{where} could not be read ({type(exc).__name__} {exc}); try again".strip()) from None
        status, body = response.status_code, response.content
        said = _json(body).get("message")
        said = said if isinstance(said, str) and said else short(body)
        if status in (401, 403):
            raise TransportError(
                f"{NAME} refused the key reading {where} ({status}: {said}); unsubscribe=provider needs an account "
                "key (a Domain Sending Key may only send)"
            )
        if status == 404:
            raise TransportError(
                f"{NAME} 404 reading {where} ({said}); check the sending domain after the ':' in the DSN and its "
                "region (?region=eu for a domain created in the EU)"
            )
        if not 200 <= status < 300:
            raise TransportError(f"{NAME} {status} reading {where}: {said or 'no answer'}; try again")
        problem = tracking_problem(body, self.domain)
        if problem:
            raise NewsletterError(f"{NAME} (unsubscribe=provider): {problem}")

    async def suppressions(self) -> AsyncIterator[DeliveryEvent]:
        """Every address on the domain's bounces, complaints and unsubscribes lists, page after page.

        Raise TransportError when Mailgun refuses the key, does not know the domain, keeps failing, answers
        what is not its documented JSON, or gives a next page elsewhere than where the first one was asked.
        """
        for endpoint in SUPPRESSION_LISTS:
            path = f"/v3/{quote(self.domain, safe='')}/{endpoint}"
            url: str | None = f"{self.base_url}{path}?limit={SUPPRESSION_PAGE_LIMIT}"
            read: set[str] = set()
            while url is not None and url not in read:
                read.add(url)
                body = await self._suppression_page(url, endpoint)
                try:
                    events, following = parse_suppressions(body, endpoint)
                except ValueError as exc:
                    raise TransportError(
                        f"{NAME}'s {endpoint} list: the answer is not what Mailgun documents ({exc}): {short(body)}"
                    ) from None
                for event in events:
                    yield event
                url = self._next_page(following, path, endpoint) if following else None

    def _next_page(self, following: str, path: str, endpoint: str) -> str:
        """paging.next if it stays where the first page was asked (scheme, host, port and path), else refuse it."""
        ours, theirs = urlsplit(self.base_url), urlsplit(following)
        same_place = (theirs.scheme.lower(), theirs.netloc.lower()) == (ours.scheme.lower(), ours.netloc.lower())
        if not same_place or unquote(theirs.path) != unquote(path):
            where = f"{theirs.scheme}://{theirs.hostname or ''}{theirs.path}" if theirs.scheme else repr(following[:80])
            raise TransportError(
                f"{NAME}'s {endpoint} list gave its next page at {where}, not at {ours.netloc}{path}: refused, "
                "the request would carry the API key; nothing after this page was read"
            )
        return following

    async def _suppression_page(self, url: str, endpoint: str) -> bytes:
        """The body of one page; 429, 5xx and connection errors are tried again, anything else not 2xx raises."""
        headers = {"Authorization": self._authorization, "Accept": "application/json"}
        problem = ""
        for attempt in range(SUPPRESSION_RETRIES + 1):
            delay: float | None = None
            try:
                response = await self.client.get(url, headers=headers)
            except httpx.TransportError as exc:
                problem = f"{type(exc).__name__} {exc}".strip()
            else:
                status, body = response.status_code, response.content
                if 200 <= status < 300:
                    return body
                said = _json(body).get("message")
                said = said if isinstance(said, str) and said else short(body)
                if status in (401, 403):
                    raise TransportError(
                        f"{NAME} refused the credentials reading the {endpoint} list ({status}: {said}); check the "
                        "API key before the ':' in NEWSLETTER_TRANSPORT or --transport. A Domain Sending Key may only "
                        "send: sync needs an account key (or a role with access to suppressions)"
                    )
                if status == 404:
                    raise TransportError(
                        f"{NAME} 404 reading the {endpoint} list ({said}); check the sending domain after the ':' in "
                        "the DSN and its region (?region=eu for a domain created in the EU)"
                    )
                if status != 429 and status < 500:
                    raise TransportError(f"{NAME} {status} reading the {endpoint} list: {said or 'request refused'}")
                problem, delay = f"{status}: {said}", retry_after(response.headers)
            if attempt == SUPPRESSION_RETRIES:
                break
            wait = delay if delay is not None else SUPPRESSION_BACKOFF[min(attempt, len(SUPPRESSION_BACKOFF) - 1)]
            if wait > SUPPRESSION_MAX_WAIT:
                raise TransportError(
                    f"{NAME} asks to wait {wait:.0f} s before reading the {endpoint} list again ({problem}); run "
                    "`newsletter subscribers sync` again later"
                )
            await _pause(wait)
        raise TransportError(
            f"{NAME} kept failing on the {endpoint} list ({SUPPRESSION_RETRIES + 1} attempts, the last {problem}); "
            "run `newsletter subscribers sync` again later"
        )


def tracking_problem(body: bytes, domain: str) -> str | None:
    """What in a GET /v3/domains/{domain}/tracking answer stops Mailgun's hosted unsubscribe working alone, or None."""
    tracking = _json(body).get("tracking")
    unsubscribe = tracking.get("unsubscribe") if isinstance(tracking, dict) else None
    if not isinstance(unsubscribe, dict):
        return f"the tracking settings of {domain} are not the documented answer: {short(body)}"
    settings = f"Sending > Domain settings > Tracking > Unsubscribes for {domain}"
    if unsubscribe.get("active") is not True:
        return (
            f"unsubscribe tracking is off for {domain}, so %tag_unsubscribe_url% would reach readers as written; "
            f"turn it on in {settings} (its DNS tracking record first), or send without unsubscribe=provider"
        )
    footers = [kind for kind in ("html_footer", "text_footer") if str(unsubscribe.get(kind) or "").strip()]
    if footers:
        return (
            f"Mailgun appends its unsubscribe footer ({' and '.join(footers)}) to every message of {domain}, a "
            f"second link beside the footer's: empty the HTML and text footers in {settings}"
        )
    return None


def _settings(dsn: Dsn) -> tuple[str, str, str, str]:
    """(API key, sending domain, region, unsubscribe) from the DSN; raise NewsletterError saying what to write."""
    example = "mailgun+api://KEY:mg.example.org@default?region=eu"
    if not dsn.user:
        raise NewsletterError(
            f"mailgun+api:// needs the API key before the ':' and the sending domain after it, e.g. {example}"
        )
    domain = (dsn.password or "").strip()
    if not domain:
        raise NewsletterError(
            f"mailgun+api:// needs the sending domain after the API key and a ':', e.g. {example} (the domain "
            "as Mailgun's Sending > Domains lists it)"
        )
    if "/" in domain or "@" in domain or " " in domain or "." not in domain:
        # The value is not repeated: a key written where the domain goes must not end up in a log.
        raise NewsletterError(
            f"mailgun+api://KEY:DOMAIN@…: what follows the ':' is not a sending domain; write the API key, a ':' "
            f"and the domain as Mailgun lists it, e.g. {example}"
        )
    region = dsn.option("region", "us", tuple(REGIONS))
    return dsn.user, domain, region, dsn.option("unsubscribe", "own", UNSUBSCRIBE_OPTION)
