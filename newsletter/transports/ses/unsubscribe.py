"""SES subscription management (?unsubscribe=provider&contact_list=NAME&topic=NAME): SendEmail with
ListManagementOptions, one recipient a call, the contact list's unsubscribes, and preflight() (docs/providers/ses.md).
"""

from __future__ import annotations

import email.utils
import json
from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import quote

from newsletter.errors import NewsletterError
from newsletter.message import HostedUnsubscribe, Mailbox, Outgoing
from newsletter.transports._http import short
from newsletter.transports.base import (
    UNSUBSCRIBE_OPTION,
    Dsn,
    Outcome,
    TransportError,
    not_built_for,
)
from newsletter.transports.ses.api import SHARED_HEADERS, _error_outcomes, _headers, _tag, mailbox
from newsletter.transports.ses.sync import SesSuppressions
from newsletter.transports.ses.webhooks import TAG, _json_object, _list

# Subscription management (unsubscribe=provider): SendEmail, one recipient a call, and SES's placeholder.
SEND_EMAIL_PATH = "/v2/email/outbound-emails"
# Only SendEmail takes ListManagementOptions, one recipient a call: docs/providers/ses.md (subscription management)
UNSUBSCRIBE_PLACEHOLDER = "{{amazonSESUnsubscribeUrl}}"
PLACEHOLDER_MAX = 2  # "You can include the placeholder two times maximum"
PROVIDER_HEADERS = ("List-Unsubscribe", "List-Unsubscribe-Post")  # SES writes them ("overrides them")
LIST_NAME_MAX = 128


# Subscription management: SendEmail with ListManagementOptions, one recipient a call


def hosted_unsubscribe(region: str, contact_list: str, topic: str | None) -> HostedUnsubscribe:
    """What unsubscribe=provider gives an SES transport: SES's placeholder, for this region's list and topic."""
    where = f"contact list {contact_list}" + (f", topic {topic}" if topic else ", every topic") + f", {region}"
    return HostedUnsubscribe(
        provider="ses",
        url=UNSUBSCRIBE_PLACEHOLDER,
        description=(
            f"Amazon SES subscription management ({where}): SES's unsubscribe page, List-Unsubscribe and "
            "List-Unsubscribe-Post; one SendEmail per message"
        ),
        fields={"region": region, "contact_list": contact_list, "topic": topic},
    )


def hosted_problem(messages: Sequence[Outgoing], hosted: HostedUnsubscribe) -> str | None:
    """Why these messages cannot go out with SES's subscription management (one line), or None.

    Each must have been built for it (SES's placeholder as the link, no List-Unsubscribe of ours), and carry the
    placeholder in its HTML and in its text, at most twice in all (SES replaces "only the first two occurrences").
    """
    for message in messages:
        if problem := not_built_for(message, hosted, "SES"):
            return problem
    first = messages[0]
    in_html, in_text = first.html.count(hosted.url), first.text.count(hosted.url)
    if not in_html or not in_text:
        part = "HTML" if not in_html else "text"
        return (
            f"the issue's {part} part has no %%unsubscribe_url%%, so SES would add no unsubscribe link (nor its "
            "List-Unsubscribe header); keep it in the footer template"
        )
    if in_html + in_text > PLACEHOLDER_MAX:
        return (
            f"the issue holds %%unsubscribe_url%% {in_html + in_text} times; SES replaces only the first "
            f"{PLACEHOLDER_MAX}, the others would reach readers as {hosted.url}: keep one in the HTML, one in the text"
        )
    return None


def build_send_email_payload(
    message: Outgoing, hosted: HostedUnsubscribe, *, configuration_set: str | None = None
) -> dict[str, Any]:
    """The SendEmail body for one message with SES's subscription management (see the module doc).

    The recipient's own text and HTML, each with SES's placeholder as it stands; no List-Unsubscribe of ours.
    """
    utf8 = "UTF-8"
    headers = _headers(
        [
            (name, value)
            for name, value in message.headers.items()
            if name in SHARED_HEADERS and name not in PROVIDER_HEADERS and value
        ]
    )
    simple: dict[str, Any] = {
        "Subject": {"Data": message.subject, "Charset": utf8},
        "Body": {"Text": {"Data": message.text, "Charset": utf8}, "Html": {"Data": message.html, "Charset": utf8}},
    }
    if headers:
        simple["Headers"] = headers
    payload: dict[str, Any] = {
        "FromEmailAddress": mailbox(message.sender),
        "Destination": {"ToAddresses": [mailbox(message.recipient)]},
    }
    reply_to = message.headers.get("Reply-To")
    if reply_to:
        name, address = email.utils.parseaddr(reply_to)
        payload["ReplyToAddresses"] = [mailbox(Mailbox(name, address or reply_to))]
    payload["Content"] = {"Simple": simple}
    payload["EmailTags"] = [{"Name": TAG, "Value": _tag(message.key)}]
    if configuration_set:
        payload["ConfigurationSetName"] = configuration_set
    options = {"ContactListName": str(hosted.fields["contact_list"])}
    if hosted.fields.get("topic"):
        options["TopicName"] = str(hosted.fields["topic"])
    payload["ListManagementOptions"] = options
    return payload


def parse_send_email_response(
    status: int, headers: Mapping[str, str], body: bytes, messages: Sequence[Outgoing]
) -> list[Outcome]:
    """One Outcome per message (a SendEmail call carries one) from SendEmail's answer, {"MessageId": …} when sent."""
    if 200 <= status < 300:
        try:
            message_id = json.loads(body).get("MessageId")
        except (ValueError, AttributeError):
            message_id = None
        if isinstance(message_id, str) and message_id:
            return [Outcome.sent(message_id)] * len(messages)
        return [Outcome.retry(f"SES {status}: an answer without MessageId: {short(body)}")] * len(messages)
    return _error_outcomes(status, headers, body, messages)


def contact_list_problem(body: bytes, contact_list: str, topic: str | None) -> str | None:
    """What in a GetContactList answer stops SES's subscription management from working as asked, or None."""
    data = _json_object(body, "the GetContactList answer")
    topics = {
        str(item.get("TopicName")): item.get("DefaultSubscriptionStatus")
        for item in _list(data.get("Topics"))
        if isinstance(item, dict)
    }
    if topic is None:
        return None
    if topic not in topics:
        known = ", ".join(sorted(topics)) or "none"
        return (
            f"the SES contact list {contact_list} has no topic {topic} (its topics: {known}); add it "
            "(UpdateContactList) or fix ?topic="
        )
    if topics[topic] != "OPT_IN":
        return (
            f"the SES topic {topic} is OPT_OUT by default, so SES would mail only contacts who opted in to it inside "
            "SES; give the list a topic whose default is OPT_IN (a topic's default cannot be changed)"
        )
    return None


class SesHostedUnsubscribe(SesSuppressions):
    """SesTransport's preflight()."""

    async def preflight(self) -> None:
        """With unsubscribe=provider, refuse a contact list or topic that SES would not manage as asked: read
        GetContactList; NewsletterError saying what to change, TransportError when SES cannot be asked."""
        if self.hosted_unsubscribe is None:
            return
        contact_list = str(self.hosted_unsubscribe.fields["contact_list"])
        topic = self.hosted_unsubscribe.fields.get("topic")
        path = f"/v2/email/contact-lists/{quote(contact_list, safe='')}"
        body = await self._call("GET", path, b"", "GetContactList", contact_list)
        try:
            problem = contact_list_problem(body, contact_list, str(topic) if topic else None)
        except ValueError as exc:
            raise TransportError(f"SES GetContactList: an answer this transport cannot read: {exc}") from None
        if problem:
            raise NewsletterError(f"ses+api://…?unsubscribe=provider: {problem}")


def _hosted_settings(dsn: Dsn, region: str) -> HostedUnsubscribe | None:
    """SES's subscription management when the DSN asks for it (unsubscribe=provider&contact_list=…&topic=…)."""
    unsubscribe = dsn.option("unsubscribe", "own", UNSUBSCRIBE_OPTION)
    contact_list = dsn.options.get("contact_list", "").strip()
    topic = dsn.options.get("topic", "").strip() or None
    if unsubscribe == "own":
        given = [name for name in ("contact_list", "topic") if dsn.options.get(name)]
        if given:
            raise NewsletterError(
                f"ses+api://…?{given[0]}=: only with unsubscribe=provider (SES's subscription management); add "
                "&unsubscribe=provider or remove it"
            )
        return None
    if not contact_list:
        raise NewsletterError(
            "ses+api://…?unsubscribe=provider needs the SES contact list: "
            "&contact_list=NAME (and &topic=NAME for one list's topic), e.g. "
            "ses+api://ACCESS_KEY_ID:SECRET@default?region=ca-central-1&unsubscribe=provider&contact_list=infolettre"
            "&topic=alliances"
        )
    for name, value in (("contact_list", contact_list), ("topic", topic)):
        if value is not None and (
            len(value) > LIST_NAME_MAX or not value.isascii() or not value.isprintable() or "/" in value
        ):
            raise NewsletterError(
                f"ses+api://…?{name}=: not an SES {name.replace('_', ' ')} name (printable ASCII without /, at most "
                f"{LIST_NAME_MAX} characters)"
            )
    return hosted_unsubscribe(region, contact_list, topic)
