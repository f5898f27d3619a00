"""mailgun+api://KEY:DOMAIN@default[?region=eu&unsubscribe=provider]: Mailgun's /v3/DOMAIN/messages, one
request a batch, recipient-variables filling each message.

What Mailgun does and why the code does what it does: docs/providers/mailgun.md.
"""

from __future__ import annotations

import base64
import email.utils
import json
from collections.abc import Mapping, Sequence
from typing import ClassVar
from urllib.parse import quote

from newsletter.errors import NewsletterError
from newsletter.message import HostedUnsubscribe, Mailbox, Outgoing
from newsletter.render import Verbatim, escape_value
from newsletter.transports._http import ApiRequest, api_base_url, short
from newsletter.transports.base import (
    UNSUBSCRIBE_OPTION,
    Dsn,
    Outcome,
    TransportError,
)
from newsletter.transports.mailgun.sync import NAME, MailgunSuppressions, _json
from newsletter.transports.mailgun.unsubscribe import (
    _BAD_ADDRESS_CHARS,
    MailgunHostedUnsubscribe,
    hosted_problem,
    hosted_unsubscribe,
    list_tag,
)
from newsletter.transports.mailgun.webhooks import KEY_VARIABLE

MAX_BATCH = 1000  # "The maximum number of recipients allowed for batch is 1,000" (batch-sending page)
REGIONS = {"us": "api.mailgun.net", "eu": "api.eu.mailgun.net"}
# Mailgun writes these itself: one batch is one Mailgun message, answered with one id.
MAILGUN_HEADERS = frozenset({"date", "message-id"})
# RFC 5322 specials: a display name holding one is quoted, which Mailgun gets wrong for non-ASCII names.
_SPECIALS = frozenset('()<>[]:;@\\,."')
KEY_RECIPIENT_VARIABLE = "newsletter_key"


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
            reason = (
                f"{NAME} takes no address whose local part is not ASCII (its 400 would refuse the whole batch); "
                "send to this subscriber through smtp:// with a server offering SMTPUTF8"
            )
            outcomes.append(Outcome.failed(reason))
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


class MailgunTransport(MailgunHostedUnsubscribe, MailgunSuppressions):
    scheme: ClassVar[str] = "mailgun+api"
    max_batch: ClassVar[int] = MAX_BATCH
    default_host: ClassVar[str] = REGIONS["us"]
    name: ClassVar[str] = NAME
    one_content: ClassVar[bool] = True

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
