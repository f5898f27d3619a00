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
Tracking is off (o:tracking, o:tracking-clicks, o:tracking-opens = no: Law 25 s.9.1).

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
"""

from __future__ import annotations

import base64
import email.utils
import html
import json
import re
from collections.abc import Mapping, Sequence
from typing import ClassVar
from urllib.parse import quote

from newsletter.errors import NewsletterError
from newsletter.message import Mailbox, Outgoing
from newsletter.transports._http import ApiRequest, ApiTransport, api_base_url, short
from newsletter.transports.base import Dsn, Outcome

NAME = "Mailgun"
MAX_BATCH = 1000  # "The maximum number of recipients allowed for batch is 1,000" (batch-sending page)
REGIONS = {"us": "api.mailgun.net", "eu": "api.eu.mailgun.net"}
# Mailgun writes these itself: one batch is one Mailgun message, answered with one id.
MAILGUN_HEADERS = frozenset({"date", "message-id"})
# Characters no deliverable address contains outside a quoted local part (which we do not accept either).
_BAD_ADDRESS_CHARS = re.compile(r'[\s<>,;"()\[\]\\\x00-\x1f\x7f]')
# RFC 5322 specials: a display name holding one is quoted, which Mailgun gets wrong for non-ASCII names.
_SPECIALS = frozenset('()<>[]:;@\\,."')


def build_payload(messages: Sequence[Outgoing]) -> list[tuple[str, str]]:
    """The form fields of one Mailgun batch, in order; repeated names (`to`) are repeated fields.

    Only the batch's members go in (see batch_members). Raise ValueError when the messages are not one campaign's
    (one body, sender and subject): a Mailgun batch is one message with per-recipient values.
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
    rendered = first.body.rendered
    html_template, html_vars = _mailgun_template(rendered.html_parts, "html")
    text_template, text_vars = _mailgun_template(rendered.text_parts, "text")

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
    fields += [("o:tracking", "no"), ("o:tracking-clicks", "no"), ("o:tracking-opens", "no")]

    variables = {}
    for message in members:
        own = {}
        for (placeholder, fallback), var in html_vars.items():
            value = message.values.get(placeholder)
            own[var] = html.escape(value) if value else fallback  # the fallback is template text, already escaped
        for (placeholder, fallback), var in text_vars.items():
            own[var] = message.values.get(placeholder) or fallback
        for name, var in header_vars.items():
            own[var] = message.headers.get(name, "")
        variables[message.recipient.address] = own
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


def _mailgun_template(parts: list, kind: str) -> tuple[str, dict[tuple[str, str], str]]:
    """The template with each (name, fallback) placeholder as %recipient.VAR%, and the variable of each."""
    variables: dict[tuple[str, str], str] = {}
    out = []
    for part in parts:
        if isinstance(part, str):
            out.append(part)
            continue
        var = variables.get(part)
        if var is None:
            variant = 1 + sum(1 for placeholder, _ in variables if placeholder == part[0])
            var = variables[part] = f"{kind}_{part[0]}" + (f"-{variant}" if variant > 1 else "")
        out.append(f"%recipient.{var}%")
    return "".join(out), variables


def _address(mailbox: Mailbox) -> str:
    """A `from` or `to` value: UTF-8 as it is, except where Mailgun is known to mangle it.

    Mailgun wraps a display name holding both non-ASCII characters and punctuation in stray quotes, giving an
    invalid header (django-anymail issue #270): such a name is sent RFC 2047-encoded instead.
    """
    name = " ".join(mailbox.name.split())  # no line break may reach a header
    if not name:
        return mailbox.address
    if name.isascii():
        return email.utils.formataddr((name, mailbox.address))
    if _SPECIALS.intersection(name):
        return Mailbox(name, mailbox.address).header()
    return f"{name} <{mailbox.address}>"


def _json(body: bytes) -> dict:
    try:
        answer = json.loads(body)
    except ValueError:
        return {}
    return answer if isinstance(answer, dict) else {}


class MailgunTransport(ApiTransport):
    scheme: ClassVar[str] = "mailgun+api"
    max_batch: ClassVar[int] = MAX_BATCH
    default_host: ClassVar[str] = REGIONS["us"]
    name: ClassVar[str] = NAME

    def __init__(self, dsn: Dsn, **kwargs):
        self.api_key, self.domain, region = _settings(dsn)  # before the HTTP client exists
        super().__init__(dsn, **kwargs)
        self.base_url = api_base_url(dsn, REGIONS[region])
        self._authorization = "Basic " + base64.b64encode(f"api:{self.api_key}".encode()).decode("ascii")

    @classmethod
    def from_dsn(cls, dsn: Dsn, **_: object) -> MailgunTransport:
        return cls(dsn)

    def build_request(self, messages: Sequence[Outgoing]) -> ApiRequest:
        return ApiRequest(
            path=f"/v3/{quote(self.domain, safe='')}/messages",
            headers={"Authorization": self._authorization, "Accept": "application/json"},
            # (None, value): a plain form field, no file name; httpx then sends multipart/form-data.
            files=[(field, (None, value)) for field, value in build_payload(messages)],
        )

    def parse_response(
        self, status: int, headers: Mapping[str, str], body: bytes, messages: Sequence[Outgoing]
    ) -> list[Outcome]:
        return parse_response(status, headers, body, messages)

    async def send_batch(self, messages: Sequence[Outgoing]) -> list[Outcome]:
        outcomes = local_outcomes(messages)
        if all(outcome is not None for outcome in outcomes):  # no valid address: nothing to ask Mailgun
            return [outcome for outcome in outcomes if outcome is not None]
        return await super().send_batch(messages)


def _settings(dsn: Dsn) -> tuple[str, str, str]:
    """(API key, sending domain, region) from the DSN; raise NewsletterError saying what to write."""
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
    return dsn.user, domain, region
