"""The event section: its date line in French and English, both parts, its .ics, and where the .ics is published."""

from __future__ import annotations

import datetime as dt
import html
import os
import re
import textwrap
from pathlib import Path
from zoneinfo import ZoneInfo

import httpx
import icalendar
import pytest
from conftest import CONFIG, EXAMPLE_SLUG, render_folder
from test_send import SECRET, run
from test_send import workspace as workspace  # noqa: F401  (the fixture: example workspace and its list)
from web_server import serving

from newsletter.errors import IssueError
from newsletter.i18n import format_day, format_event_when, format_time
from newsletter.issue import load_issue

NBSP = "\u00a0"
D, T = dt.datetime, dt.date
TORONTO = ZoneInfo("America/Toronto")
ZONED = CONFIG.replace(
    'lang = "fr"\n', 'lang = "fr"\ntimezone = "America/Toronto"\nbase_url = "https://bulletin.example.org"\n'
)
ZONED += 'website = "https://crdbsl.org"\n'


def nb(text: str) -> str:
    """Write the expected strings with ~ for U+00A0, so the no-break spaces show in the test."""
    return text.replace("~", NBSP)


@pytest.mark.parametrize(
    ("start", "end", "french", "english"),
    [
        (
            D(2025, 2, 12, 9),
            D(2025, 2, 12, 12),
            "le mercredi 12~février 2025, de 9~h à 12~h",
            "Wednesday, February~12, 2025, 9:00~a.m. to 12:00~p.m.",
        ),
        (
            D(2025, 2, 12, 9, 30),
            D(2025, 2, 12, 17, 5),
            "le mercredi 12~février 2025, de 9~h~30 à 17~h~05",
            "Wednesday, February~12, 2025, 9:30~a.m. to 5:05~p.m.",
        ),
        (D(2025, 3, 1, 0), None, "le samedi 1er~mars 2025, à 0~h", "Saturday, March~1, 2025, 12:00~a.m."),
        (T(2025, 3, 1), None, "le samedi 1er~mars 2025", "Saturday, March~1, 2025"),
        (T(2025, 2, 12), T(2025, 2, 12), "le mercredi 12~février 2025", "Wednesday, February~12, 2025"),
        (
            T(2025, 2, 12),
            T(2025, 2, 14),
            "du mercredi 12 au vendredi 14~février 2025",
            "Wednesday, February~12 to Friday, February~14, 2025",
        ),
        (
            T(2025, 3, 1),
            T(2025, 3, 3),
            "du samedi 1er au lundi 3~mars 2025",
            "Saturday, March~1 to Monday, March~3, 2025",
        ),
        (
            T(2025, 4, 30),
            T(2025, 5, 2),
            "du mercredi 30~avril au vendredi 2~mai 2025",
            "Wednesday, April~30 to Friday, May~2, 2025",
        ),
        (
            T(2025, 12, 30),
            T(2026, 1, 2),
            "du mardi 30~décembre 2025 au vendredi 2~janvier 2026",
            "Tuesday, December~30, 2025 to Friday, January~2, 2026",
        ),
        (
            D(2025, 2, 12, 9),
            D(2025, 2, 13, 17),
            "du mercredi 12~février 2025 à 9~h au jeudi 13~février 2025 à 17~h",
            "Wednesday, February~12, 2025, 9:00~a.m. to Thursday, February~13, 2025, 5:00~p.m.",
        ),
    ],
)
def test_the_date_line_in_french_and_english(start, end, french, english):
    assert format_event_when(start, end, "fr") == nb(french)
    assert format_event_when(start, end, "en") == nb(english)


def test_days_and_times_on_their_own():
    assert format_day(T(2025, 2, 5), "fr") == nb("5~février 2025")
    assert format_day(T(2025, 2, 1), "fr", weekday=True) == nb("samedi 1er~février 2025")
    assert format_day(T(2025, 2, 5), "en") == nb("February~5, 2025")
    times = [dt.time(h, m) for h, m in ((0, 0), (9, 30), (12, 0), (23, 59))]
    assert [format_time(time, "fr") for time in times] == [nb(t) for t in ("0~h", "9~h~30", "12~h", "23~h~59")]
    assert [format_time(time, "en") for time in times] == [
        nb(t) for t in ("12:00~a.m.", "9:30~a.m.", "12:00~p.m.", "11:59~p.m.")
    ]


EVENT = """\
subject: Le forum régional arrive bientôt
preheader: Inscrivez-vous avant le 5 février
lang: {lang}
sections:
  - type: heading
    text: À l'agenda
  - type: event
    title: Forum régional 2025
    start: 2025-02-12 09:00
    end: 12:00
    place: Salle Desjardins, Cégep de Rimouski
    address: 60, rue de l'Évêché Ouest; Rimouski (Québec)
    registration: https://crdbsl.org/forum/inscription
    deadline: 2025-02-05
    text: |
      Une matinée pour **échanger** sur les priorités régionales et le plan d'action concerté du Bas-Saint-Laurent.
      Voir [le programme](https://crdbsl.org/forum/programme).
"""


def visible_text(page: str) -> str:
    """The text a reader sees in the body of the HTML: tags out, entities read, runs of ASCII spaces as one
    (U+00A0 kept: it is what this checks)."""
    body = page[page.index("<body") :]
    return re.sub(r"[ \t\r\n]+", " ", html.unescape(re.sub(r"<[^>]+>", " ", body)))


def test_the_event_in_the_html_part_in_french(make_issue):
    rendered = render_folder(make_issue(EVENT.format(lang="fr"), config=ZONED))
    seen = visible_text(rendered.html)
    for fact in (
        "Forum régional 2025",
        nb("Quand~: le mercredi 12~février 2025, de 9~h à 12~h"),
        nb("Où~: Salle Desjardins, Cégep de Rimouski 60, rue de l'Évêché Ouest; Rimouski (Québec)"),
        "Une matinée pour échanger sur les priorités régionales",
        "S'inscrire",
        nb("Inscription avant le 5~février 2025"),
        "Ajouter à mon agenda",
    ):
        assert fact in seen, fact
    assert seen.index("Quand") < seen.index("Où") < seen.index("Une matinée") < seen.index("S'inscrire")
    assert re.search(r"""<a href="https://crdbsl.org/forum/inscription"[^>]*>S'inscrire</a>""", rendered.html)
    assert '<a href="https://bulletin.example.org/archive/test-issue/event-1.ics"' in rendered.html
    assert "<strong>échanger</strong>" in rendered.html  # its text is Markdown
    assert list(rendered.calendars) == ["event-1.ics"]


def test_the_event_in_the_text_part_in_french(make_issue):
    text = render_folder(make_issue(EVENT.format(lang="fr"), config=ZONED)).text
    expected = """\
        Forum régional 2025
        ~~~~~~~~~~~~~~~~~~~
        Quand@: le mercredi 12@février 2025, de 9@h à 12@h
        Où@: Salle Desjardins, Cégep de Rimouski
        60, rue de l'Évêché Ouest; Rimouski (Québec)

        Une matinée pour échanger sur les priorités régionales et le plan d'action
        concerté du Bas-Saint-Laurent. Voir le programme
        (https://crdbsl.org/forum/programme).

        S'inscrire@: https://crdbsl.org/forum/inscription
        Inscription avant le 5@février 2025
        Ajouter à mon agenda@: https://bulletin.example.org/archive/test-issue/event-1.ics
        """
    assert textwrap.dedent(expected).replace("@", NBSP) in text


def test_the_event_in_english_both_parts(make_issue):
    rendered = render_folder(make_issue(EVENT.format(lang="en"), config=ZONED))
    seen = visible_text(rendered.html)
    for fact in (
        "When: Wednesday, February~12, 2025, 9:00~a.m. to 12:00~p.m.",
        "Where: Salle Desjardins",
        "Register",
        "Register by February~5, 2025",
        "Add to calendar",
    ):
        assert nb(fact) in seen, fact
        assert nb(fact) in rendered.text, fact
    assert "Register: https://crdbsl.org/forum/inscription" in rendered.text
    assert "Add to calendar: https://bulletin.example.org/archive/test-issue/event-1.ics" in rendered.text


@pytest.mark.parametrize(
    ("setting", "link"),
    [
        ('archive_url = "https://crdbsl.org/bulletin"\n', "https://crdbsl.org/bulletin/test-issue/event-1.ics"),
        ("", "https://bulletin.example.org/archive/test-issue/event-1.ics"),
        (None, "event-1.ics"),  # neither: beside a build opened from disk
    ],
)
def test_the_calendar_link_follows_the_view_online_rule(make_issue, setting, link):
    config = ZONED.replace('base_url = "https://bulletin.example.org"\n', "") if setting is None else setting + ZONED
    rendered = render_folder(make_issue(EVENT.format(lang="fr"), config=config))
    assert f'href="{link}"' in rendered.html
    assert nb(f"Ajouter à mon agenda~: {link}") in rendered.text


def calendar_of(rendered, name="event-1.ics") -> tuple[str, icalendar.Event]:
    text = rendered.calendars[name]
    (event,) = icalendar.Calendar.from_ical(text).walk("VEVENT")
    return text, event


def test_the_ics_in_the_workspace_zone_parses_back_folded_and_escaped(make_issue):
    folder = make_issue(EVENT.format(lang="fr"), config=ZONED)
    os.utime(folder / "issue.yaml", (1738000000, 1738000000))
    text, event = calendar_of(render_folder(folder))
    assert event["dtstart"].dt == D(2025, 2, 12, 9, tzinfo=TORONTO)
    assert str(event["dtstart"].dt.tzinfo) == "America/Toronto"
    assert event["dtend"].dt == D(2025, 2, 12, 12, tzinfo=TORONTO)
    assert "DTSTART;TZID=America/Toronto:20250212T090000\r\n" in text
    (zone,) = icalendar.Calendar.from_ical(text).walk("VTIMEZONE")
    assert zone["tzid"] == "America/Toronto"
    # RFC 5545 3.1: CRLF after every line, none over 75 octets, a long one folded onto lines that start with a space
    assert text.endswith("\r\n") and "\n" not in text.replace("\r\n", "")
    lines = text.split("\r\n")[:-1]
    assert max(len(line.encode("utf-8")) for line in lines) <= 75
    assert any(line.startswith(" ") for line in lines)
    # 3.3.11: commas and semicolons in text are escaped; read back as written
    unfolded = text.replace("\r\n ", "")
    assert r"LOCATION:Salle Desjardins\, Cégep de Rimouski\, 60\, rue de l'Évêché Ouest\; Rimouski (Québec)" in unfolded
    assert str(event["location"]) == "Salle Desjardins, Cégep de Rimouski, 60, rue de l'Évêché Ouest; Rimouski (Québec)"
    assert str(event["summary"]) == "Forum régional 2025"
    description = str(event["description"])
    assert description.startswith("Une matinée pour échanger sur les priorités régionales et le plan d'action concerté")
    assert "**" not in description and "(https://crdbsl.org/forum/programme)" in description  # plain text, unwrapped
    assert nb("S'inscrire~: https://crdbsl.org/forum/inscription") in description
    assert nb("Inscription avant le 5~février 2025") in description
    assert str(event["url"]) == "https://bulletin.example.org/archive/test-issue/"
    assert str(event["uid"]) == "test-issue-event-1@crdbsl.org"
    assert event["dtstamp"].dt == D.fromtimestamp(1738000000, dt.UTC)  # when issue.yaml changed
    assert render_folder(folder).calendars == render_folder(folder).calendars  # the same bytes at every render


def test_the_ics_in_utc_without_a_zone_or_with_an_offset_and_a_day_long_one(make_issue):
    yaml_text = EVENT.format(lang="en").replace(
        "start: 2025-02-12 09:00\n    end: 12:00", "start: 2025-02-12T09:00-05:00\n    end: 12:30"
    )
    yaml_text += "  - type: event\n    title: Two days\n    start: 2025-02-27\n    end: 2025-02-28\n"
    rendered = render_folder(make_issue(yaml_text, config=ZONED))
    text, event = calendar_of(rendered)
    assert "DTSTART:20250212T140000Z\r\n" in text and "DTEND:20250212T173000Z\r\n" in text  # its own offset: UTC
    assert "VTIMEZONE" not in text
    assert "Register: https://crdbsl.org/forum/inscription" in str(event["description"])
    text, event = calendar_of(rendered, "event-2.ics")
    assert "DTSTART;VALUE=DATE:20250227\r\n" in text and "DTEND;VALUE=DATE:20250301\r\n" in text  # end exclusive
    assert nb("When: Thursday, February~27 to Friday, February~28, 2025") in rendered.text
    # No timezone in newsletter.toml: the machine's, written in UTC (an instant, wherever the reader is).
    yaml_text = EVENT.format(lang="fr")
    text, event = calendar_of(render_folder(make_issue(yaml_text, config=CONFIG)))
    local = D(2025, 2, 12, 9).astimezone()
    assert event["dtstart"].dt == local and f"DTSTART:{local.astimezone(dt.UTC):%Y%m%dT%H%M%S}Z\r\n" in text


def test_an_unquoted_time_is_read_as_text_and_a_wrong_end_is_located(make_issue):
    issue = load_issue(make_issue(EVENT.format(lang="fr"), config=ZONED))
    assert issue.model.sections[1].end == dt.time(12, 0)  # YAML 1.1 would have read 12:00 as 720
    wrong = (
        EVENT.format(lang="fr")
        .replace("start: 2025-02-12 09:00", "start: 2025-02-12")
        .replace("deadline: 2025-02-05", "deadline: le 5 février")
    )
    with pytest.raises(IssueError) as caught:
        load_issue(make_issue(wrong, config=ZONED))
    found = {(d.line, d.path): d.message for d in caught.value.diagnostics}
    assert found[(10, "sections[1].end")].startswith("end: the event lasts whole days (start is a date)")
    assert found[(14, "sections[1].deadline")].startswith("deadline: Input should be a valid date")
    bad_start = EVENT.format(lang="fr").replace("start: 2025-02-12 09:00", "start: mercredi 9 h")
    with pytest.raises(IssueError) as caught:
        load_issue(make_issue(bad_start, config=ZONED))
    (diagnostic,) = caught.value.diagnostics
    assert (diagnostic.line, diagnostic.path) == (9, "sections[1].start")
    assert "write it as 2025-02-12 09:00" in diagnostic.message


def test_build_writes_the_ics_beside_the_page_and_drops_a_stale_one(make_issue):
    folder = make_issue(EVENT.format(lang="fr"), config=ZONED)
    (folder.parent.parent / "build" / "test-issue").mkdir(parents=True)
    stale = folder.parent.parent / "build" / "test-issue" / "event-7.ics"
    stale.write_text("BEGIN:VCALENDAR\r\nEND:VCALENDAR\r\n")
    assert run("build", str(folder)).exit_code == 0
    built = folder.parent.parent / "build" / "test-issue"
    assert (built / "event-1.ics").read_bytes() == render_folder(folder).calendars["event-1.ics"].encode()
    assert not stale.exists()
    assert 'href="https://bulletin.example.org/archive/test-issue/event-1.ics"' in (built / "index.html").read_text()


def add_event(root: Path) -> int:
    """Add an event to the example issue; its section index."""
    issue_file = root / "issues" / EXAMPLE_SLUG / "issue.yaml"
    index = len(load_issue(issue_file.parent).model.sections)
    event = EVENT[EVENT.index("  - type: event\n") :]
    issue_file.write_text(issue_file.read_text(encoding="utf-8") + event, encoding="utf-8")
    return index


def test_a_campaign_freezes_the_ics_and_its_confirmation_code_binds_it(workspace):  # noqa: F811
    from newsletter.sending.frozen import FrozenCampaign
    from newsletter.sending.send import prepare
    from newsletter.workspace import Workspace

    index = add_event(workspace)
    folder = workspace / "issues" / EXAMPLE_SLUG

    def frozen() -> FrozenCampaign:
        ws = Workspace.discover(workspace)
        from newsletter.store import ListRow

        return prepare(ws, folder, "null://", "alliances", real=False).freeze(ListRow(1, "alliances", "alliances"))

    before = frozen()
    assert list(before.calendars) == [f"event-{index}.ics"]
    config = workspace / "newsletter.toml"
    zoned = config.read_text(encoding="utf-8").replace('lang = "fr"', 'lang = "fr"\ntimezone = "Europe/Paris"', 1)
    config.write_text(zoned, encoding="utf-8")
    after = frozen()
    assert (after.html, after.text) == (before.html, before.text)  # only the .ics changed
    assert after.calendars != before.calendars
    assert after.message_digest() != before.message_digest()


def send_with_event(workspace) -> str:  # noqa: F811
    name = f"event-{add_event(workspace)}.ics"
    result = run("send", EXAMPLE_SLUG, "--list", "alliances", "--no-dry-run", "--json")
    assert result.exit_code == 0, result.output
    # Edited after the send: the archive still publishes what was sent.
    issue_file = workspace / "issues" / EXAMPLE_SLUG / "issue.yaml"
    issue_file.write_text(issue_file.read_text(encoding="utf-8").replace("Forum régional 2025", "Autre titre"))
    return name


def test_the_static_archive_writes_the_ics_as_sent(workspace, tmp_path):  # noqa: F811
    name = send_with_event(workspace)
    from newsletter.sending.wiring import open_store
    from newsletter.workspace import Workspace

    store = open_store(Workspace.discover(workspace))
    sent = store.sent_content(EXAMPLE_SLUG)[1]["calendars"][name]
    store.close()
    assert run("archive", "--out", str(tmp_path / "site")).exit_code == 0
    written = (tmp_path / "site" / EXAMPLE_SLUG / name).read_bytes()
    assert written == sent.encode("utf-8") and b"SUMMARY:Forum r\xc3\xa9gional 2025\r\n" in written
    assert sorted(p.name for p in (tmp_path / "site" / EXAMPLE_SLUG).glob("*.ics")) == [name]


def test_serve_answers_the_ics_as_sent_and_404_for_any_other_name(workspace):  # noqa: F811
    from newsletter.sending.wiring import open_store
    from newsletter.tokens import TokenSigner
    from newsletter.web import create_app
    from newsletter.workspace import Workspace

    name = send_with_event(workspace)
    ws = Workspace.discover(workspace)
    store = open_store(ws)
    try:
        with serving(create_app(ws, store, TokenSigner(SECRET))) as base:
            response = httpx.get(f"{base}/archive/{EXAMPLE_SLUG}/{name}")
            assert response.status_code == 200
            assert response.headers["content-type"] == "text/calendar; charset=utf-8"
            assert "SUMMARY:Forum régional 2025\r\n" in response.text and "Autre titre" not in response.text
            page = httpx.get(f"{base}/archive/{EXAMPLE_SLUG}/").text
            assert f'href="https://bulletin.crdbsl.org/archive/{EXAMPLE_SLUG}/{name}"' in page
            for other in ("event-99.ics", "issue.yaml", "index.html", "..%2fnewsletter.toml", "event-1.ics%00"):
                assert httpx.get(f"{base}/archive/{EXAMPLE_SLUG}/{other}").status_code == 404, other
            # A campaign begun before campaigns froze their .ics: nothing to publish.
            from newsletter.store import campaigns

            campaign_id, content = store.sent_content(EXAMPLE_SLUG)
            del content["calendars"]
            with store.transaction() as connection:
                connection.execute(campaigns.update().where(campaigns.c.id == campaign_id).values(content=content))
        with serving(create_app(ws, store, TokenSigner(SECRET))) as base:  # a new process: nothing cached
            assert httpx.get(f"{base}/archive/{EXAMPLE_SLUG}/{name}").status_code == 404
            assert httpx.get(f"{base}/archive/{EXAMPLE_SLUG}/").status_code == 200
    finally:
        store.close()
