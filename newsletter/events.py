"""An event section's calendar file: the .ics (RFC 5545) its "add to calendar" link downloads.

The rendered issue carries one per event section, named by its index (event-3.ics for sections[3]); build writes
it beside index.html, a campaign freezes it with the rest of what it sends, and the archive (`newsletter archive`
and `serve`'s /archive/<slug>/) publishes the frozen copy. icalendar writes the format: it folds lines at 75
octets, ends them with CRLF, escapes commas, semicolons and backslashes in text, and makes the VTIMEZONE.
"""

from __future__ import annotations

import datetime as dt
import email.utils
import re
from typing import overload
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo

import icalendar

from newsletter.config import Config
from newsletter.i18n import format_day, translate
from newsletter.issue import Event

CALENDAR_NAME = re.compile(r"event-\d+\.ics")  # the only names the archive writes or serves


def calendar_name(index: int) -> str:
    return f"event-{index}.ics"


@overload
def resolve(moment: dt.datetime, zone: dt.tzinfo | None) -> dt.datetime: ...
@overload
def resolve(moment: dt.date, zone: dt.tzinfo | None) -> dt.date: ...


def resolve(moment: dt.datetime | dt.date, zone: dt.tzinfo | None) -> dt.datetime | dt.date:
    """A start or end as a moment in time: a naive time is in zone (None: the machine's, as `send --at` reads it).
    A date (a day-long event) stays a date."""
    if not isinstance(moment, dt.datetime) or moment.tzinfo is not None:
        return moment
    return moment.replace(tzinfo=zone) if zone is not None else moment.astimezone()


def calendar_domain(config: Config, sender: str | None) -> str:
    """The domain that makes an event's UID unique to this publisher: its website's, else the From address's."""
    host = urlsplit(config.publisher.website or "").hostname
    address = email.utils.parseaddr(sender or "")[1] or config.publisher.email or ""
    return host or address.rpartition("@")[2].lower() or "newsletter.invalid"


def event_calendar(
    event: Event,
    *,
    lang: str,
    zone: dt.tzinfo | None,
    uid: str,
    stamp: dt.datetime,
    description: str | None,
    url: str | None,
) -> str:
    """The VCALENDAR of one event, as text with CRLF line ends.

    A naive time is written in the workspace's zone (TZID with its VTIMEZONE) when newsletter.toml names one; one
    written with its offset, or in the machine's zone, is written in UTC. A day-long event is DTSTART;VALUE=DATE,
    its DTEND the day after its last (RFC 5545 3.6.1: the end is exclusive). `description` is the event's text as
    plain text; the registration link and deadline follow it. `stamp` is DTSTAMP: when the issue last changed, so
    that the same issue always gives the same bytes (an agent's confirmation code binds them).
    """
    calendar = icalendar.Calendar()
    calendar.add("prodid", f"-//newsletter//event//{lang.upper()}")
    calendar.add("version", "2.0")
    calendar.add("method", "PUBLISH")
    component = icalendar.Event()
    component.add("uid", uid)
    component.add("dtstamp", stamp.astimezone(dt.UTC).replace(microsecond=0))
    start, end = event.period()
    named_zone = isinstance(zone, ZoneInfo)
    if isinstance(start, dt.datetime):
        for name, moment in (("dtstart", start), ("dtend", end)):
            if isinstance(moment, dt.datetime):
                named = named_zone and moment.tzinfo is None
                moment = moment.replace(tzinfo=zone) if named else resolve(moment, zone).astimezone(dt.UTC)
                component.add(name, moment.replace(microsecond=0))
    else:
        last = end if isinstance(end, dt.date) else start
        component.add("dtstart", start)
        component.add("dtend", last + dt.timedelta(days=1))
    component.add("summary", event.title)
    location = ", ".join(part for part in (event.place, event.address) if part)
    if location:
        component.add("location", location)
    lines = [description] if description else []
    if event.registration:
        lines.append(translate(lang, "event_link", label=translate(lang, "event_register"), url=event.registration))
    if event.deadline:
        lines.append(translate(lang, "event_deadline", date=format_day(event.deadline, lang)))
    if lines:
        component.add("description", "\n\n".join(lines))
    if url:
        component.add("url", url)
    calendar.add_component(component)
    if named_zone:
        last_day = end if isinstance(end, dt.date) else start
        calendar.add_missing_timezones(
            first_date=dt.date(start.year, 1, 1), last_date=dt.date(last_day.year + 1, 12, 31)
        )
    return calendar.to_ical().decode("utf-8")
