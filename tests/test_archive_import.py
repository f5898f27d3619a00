"""`newsletter archive-import`: Mailchimp's and Substack's past issues in the archive, static and served, stripped
of their tracking and old unsubscribe links; hostile HTML; exports that try to reach outside themselves."""

from __future__ import annotations

import json
import re
import shutil
import xml.etree.ElementTree as ElementTree
import zipfile
from html.parser import HTMLParser
from pathlib import Path

import httpx
import pytest
from conftest import EXAMPLE_SLUG, FIXTURES
from test_send import SECRET, run
from test_send import workspace as workspace  # noqa: F401  (the fixture: example workspace and its list)
from test_web import raw_get
from web_server import serving

from newsletter.archive_import import clean_html, clean_link

EXPORTS = FIXTURES / "archive-exports"
ATOM = "{http://www.w3.org/2005/Atom}"
NOVEMBER = "2024-11-21-le-forum-des-alliances-28-novembre"
WINTER = "2025-02-14-bulletin-d-hiver-des-alliances"
FORUM = "2024-11-28-retour-sur-le-forum-des-alliances"
SPRING = "2025-03-20-bulletin-de-printemps"
EXPECTED = {
    "mailchimp": {
        "imported": [
            {
                "slug": NOVEMBER,
                "subject": "Le Forum des Alliances, 28 novembre",
                "date": "2024-11-21T09:30:00-05:00",
                "id": "a1b2c3d4e5",
            },
            {
                "slug": WINTER,
                "subject": "Bulletin d'hiver des Alliances",
                "date": "2025-02-14T10:00:00-05:00",
                "id": "f6e5d4c3b2",
            },
        ],
        "left_out": [
            {"id": "0a9b8c7d6e", "subject": "Brouillon de mars", "why": "not sent (status save)"},
            {"id": "5e4d3c2b1a", "subject": "Rendez-vous d'octobre", "why": "no HTML file for it in the export"},
        ],
        "summary": "imported 2, 0 unchanged, 2 left out (1 no HTML file for it in the export, 1 not sent)",
    },
    "substack": {
        "imported": [
            {
                "slug": FORUM,
                "subject": "Retour sur le Forum des Alliances",
                "date": "2024-11-28T14:05:00+00:00",  # when it was emailed, not when the post was made
                "id": "139851234.retour-sur-le-forum",
            },
            {
                "slug": SPRING,
                "subject": "Bulletin de printemps",
                "date": "2025-03-20T12:00:00+00:00",
                "id": "141002345.bulletin-de-printemps",
            },
        ],
        "left_out": [
            {"id": "142003456.brouillon", "subject": "Brouillon", "why": "not published (a draft)"},
            {"id": "142004567.a-propos", "subject": "À propos", "why": "not a newsletter (type page)"},
            {"id": "142005678.balado-1", "subject": "Balado nº 1", "why": "not a newsletter (type podcast)"},
            {"id": "../../evil", "subject": "Évasion", "why": "no HTML file for it in the export"},
        ],
        "summary": "imported 2, 0 unchanged, 4 left out (1 no HTML file for it in the export, "
        "2 not a newsletter, 1 not published)",
    },
}


@pytest.fixture
def site_workspace(workspace):  # noqa: F811
    """The example workspace, in Quebec's time zone (Mailchimp's dates carry none)."""
    toml = workspace / "newsletter.toml"
    text = toml.read_text(encoding="utf-8")
    toml.write_text(re.sub(r"^lang = .*$", '\\g<0>\ntimezone = "America/Toronto"', text, count=1, flags=re.M))
    return workspace


def export(tmp_path: Path, source: str, form: str) -> Path:
    """The fixture's export as a folder (a copy) or as a zip (Mailchimp's with one folder around it, as unzipped
    downloads often are); the file a `../../evil` post_id would reach is put where it leads."""
    folder = tmp_path / "exports" / source
    shutil.copytree(EXPORTS / source, folder)
    (tmp_path / "exports" / "evil.html").write_text("<p>SECRET outside the export</p>", encoding="utf-8")
    if form == "folder":
        return folder
    archive = tmp_path / "exports" / f"{source}.zip"
    prefix = "export-2025-06/" if source == "mailchimp" else ""
    with zipfile.ZipFile(archive, "w") as written:
        for file in sorted(folder.rglob("*")):
            if file.is_file():
                written.write(file, prefix + file.relative_to(folder).as_posix())
    return archive


def import_json(*args: str) -> dict:
    result = run("archive-import", "--json", *args)
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def files_of(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("form", ["folder", "zip"])
@pytest.mark.parametrize("source", ["mailchimp", "substack"])
def test_an_export_imports_its_sent_issues_once(site_workspace, tmp_path, source, form):
    path = export(tmp_path, source, form)
    imported = site_workspace / "archive" / "imported"
    dry = import_json(str(path), "--dry-run")
    assert dry["dry_run"] is True and dry["imported"] == EXPECTED[source]["imported"]
    assert not imported.exists()  # a dry run writes nothing

    result = run("archive-import", str(path))
    assert result.exit_code == 0, result.output
    assert result.stdout == f"{source} export: {EXPECTED[source]['summary']}, in archive/imported\n"
    written = files_of(imported)
    assert sorted(written) == sorted(
        f"{i['slug']}/{name}" for i in EXPECTED[source]["imported"] for name in ("index.html", "meta.json")
    )
    for item in EXPECTED[source]["imported"]:
        meta = json.loads(written[f"{item['slug']}/meta.json"])
        assert meta == {
            "format": 1,
            "source": source,
            "id": item["id"],
            "subject": item["subject"],
            "date": item["date"],
        }
    assert not any(b"SECRET" in data for data in written.values())

    again = import_json(str(path))  # the same slugs, nothing written
    assert again["imported"] == [] and again["updated"] == []
    assert again["unchanged"] == EXPECTED[source]["imported"]
    assert again["left_out"] == EXPECTED[source]["left_out"]
    assert files_of(imported) == written
    assert not list(imported.rglob("*.tmp"))


def tags_of(page: str) -> list[tuple[str, dict[str, str | None]]]:
    """Every start tag of a page with its attributes, as a browser-like tokenizer reads them."""
    found: list[tuple[str, dict[str, str | None]]] = []

    class Tags(HTMLParser):
        def handle_starttag(self, tag, attrs):
            found.append((tag, dict(attrs)))

        handle_startendtag = handle_starttag

    Tags().feed(page)
    return found


def assert_stripped(page: str) -> None:
    """Nothing that runs, tracks or unsubscribes is left in page."""
    tags = tags_of(page)
    names = {tag for tag, _ in tags}
    assert not names & {"script", "iframe", "form", "input", "button", "object", "embed", "svg", "base"}, names
    for tag, attributes in tags:
        assert not [a for a in attributes if a.startswith("on")], (tag, attributes)
        for name in ("href", "src", "background"):
            url = (attributes.get(name) or "").lower()
            assert not url.startswith("javascript") and "list-manage" not in url, url
            assert "unsubscribe" not in url and "/action/" not in url and "*|" not in url, url
            assert "mc_eid" not in url and "j=ey" not in url, url  # the reader's ids
        if tag == "img":
            assert attributes.get("width") != "1", attributes  # no tracking pixel
    assert "list-manage" not in page and "*|" not in page and "forward-to-friend" not in page
    assert "alert(" not in page and "track(" not in page and "dataLayer" not in page


def test_the_pages_keep_their_content_and_lose_their_tracking(site_workspace, tmp_path):
    import_json(str(export(tmp_path, "mailchimp", "folder")))
    import_json(str(export(tmp_path, "substack", "zip")))
    folder = site_workspace / "archive" / "imported"
    pages = {slug: (folder / slug / "index.html").read_text(encoding="utf-8") for slug in (NOVEMBER, WINTER, FORUM)}
    for page in pages.values():
        assert_stripped(page)
        assert page.count('<meta charset="utf-8">') == 1 and "charset=UTF-8" not in page
    november = pages[NOVEMBER]
    assert november.startswith('<!DOCTYPE html PUBLIC "-//W3C//DTD XHTML 1.0 Transitional//EN"')  # as sent
    assert "@media only screen and (max-width:480px)" in november  # its style block, for phones
    assert "<title>Le Forum des Alliances, 28 novembre</title>" in november  # *|MC:SUBJECT|*
    assert "Copyright © 2024" in november  # *|CURRENT_YEAR|*, as the year it went
    # Mailchimp's click redirect unwrapped to the URL it carried; one that carries none is no link any more.
    assert '<a href="https://crdbsl.org/forum-2024?utm_source=infolettre">Le programme du Forum</a>' in november
    assert "et <a>le formulaire d'inscription</a>" in november
    assert '<a href="https://crdbsl.org/documents">Consulter les documents</a>' in november  # mc_eid, mc_cid gone
    assert "ou <a>vous désabonner</a>" in november and "<a>Mettre à jour vos préférences</a>" in november
    assert '<img src="https://mcusercontent.com/0a1b2c3d4e5f60718293a4b5c/images/logo-alliances.png"' in november
    forum = pages[FORUM]  # a post's body, made a page of its own
    assert forum.startswith('<!DOCTYPE html>\n<html lang="fr">')
    assert "<h1>Retour sur le Forum des Alliances</h1>" in forum and "Ce que 120 partenaires ont dit" in forum
    assert '<a href="https://crdbsl.org/forum-2024">Le compte rendu</a>' in forum  # the redirect's token unwrapped
    # One whose target only Substack knows is kept, without the token naming the reader.
    assert '<a href="https://substack.com/redirect/51785c1d-c1d5-4669-a75c-a67215251ed3">les photos</a>' in forum
    assert "<a>Se désabonner</a>" in forum and "<a>Gérer l'abonnement</a>" in forum
    assert "eotrx" not in forum and "La salle du Forum, à Rimouski." in forum


HOSTILE = [
    '<img src=x onerror="alert(1)">',
    "<IMG SRC=\"jav&#x09;ascript:alert('XSS');\">",
    '<a href="&#106;avascript:alert(1)">x</a>',
    '<a href=" javascript:alert(1)">x</a>',
    '<a href="JaVaScRiPt:alert(1)">x</a>',
    '<a href="vbscript:msgbox(1)">x</a>',
    '<a href="data:text/html;base64,PHNjcmlwdD5hbGVydCgxKTwvc2NyaXB0Pg==">x</a>',
    '<img src="data:image/svg+xml,<svg onload=alert(1)>">',
    "<svg><script>alert(1)</script></svg>",
    '<svg><a xlink:href="javascript:alert(1)"><text>x</text></a></svg>',
    "<math><mtext><table><mglyph><style><img src=x onerror=alert(1)></style></mglyph></table></mtext></math>",
    '<noscript><p title="</noscript><img src=x onerror=alert(1)>"></noscript>',
    '<noembed><p title="</noembed><img src=x onerror=alert(1)>"></noembed>',
    '<p title="</p><script>alert(1)</script>">t</p>',
    "<style>p{}</style foo><script>alert(1)</script><style>q{}</style>",
    "<style>body{background:url(java\\73 cript:alert(1))}</style>",
    '<div style="width: expression(alert(1))">x</div>',
    '<div style="background:url(&#106;avascript:alert(1))">x</div>',
    "<!-- a --!><script>alert(1)</script> -->",
    "<!--[if gte mso 9]><script>alert(1)</script><![endif]-->",
    "<![CDATA[<script>alert(1)</script>]]>",
    '<iframe srcdoc="<script>alert(1)</script>"></iframe>',
    '<object data="javascript:alert(1)"></object><embed src="javascript:alert(1)">',
    '<form action="javascript:alert(1)"><button formaction="javascript:alert(1)">go</button></form>',
    '<meta http-equiv="refresh" content="0;url=javascript:alert(1)">',
    '<base href="javascript:alert(1)//">',
    '<a href="https://example.org" ping="https://tracker.example/ping" onmouseover=alert(1)>x</a>',
    '<body onload=alert(1)><div/onclick="alert(1)">x</div>',
    '<img """><script>alert(1)</script>">',
    "<scr<script>ipt>alert(1)</scr</script>ipt>",
    '<a href="java\nscript:alert(1)">x</a>',
    '<link rel="import" href="https://evil.example/x.html"><link rel=stylesheet href="javascript:alert(1)">',
    '<table background="javascript:alert(1)"><tr><td>x</td></tr></table>',
    '<img srcset="https://example.org/a.png 1x, javascript:alert(1) 2x" src="https://example.org/a.png">',
    '<a href="https://x.list-manage.com/track/click?u=1&id=2&url=javascript:alert(1)">x</a>',
    "<textarea><script>alert(1)</script></textarea><select><option>x</select>",
    "<plaintext><script>alert(1)</script>",
]


@pytest.mark.parametrize("hostile", HOSTILE)
def test_hostile_html_comes_out_harmless(hostile):
    page = clean_html(f"<html><body>{hostile}<p>fin</p></body></html>", subject="S", year=2024)
    tags = tags_of(page)
    assert {tag for tag, _ in tags} <= {"html", "body", "meta", "a", "img", "p", "div", "table", "tr", "td", "style"}
    for _, attributes in tags:
        for name, value in attributes.items():
            assert not name.startswith("on") and name not in ("srcdoc", "formaction", "ping", "xlink:href")
            assert "javascript" not in (value or "").lower().replace("\t", "").replace("\n", "")
            assert not (value or "").lower().startswith(("data:text", "data:image/svg", "vbscript"))
    # What a browser parses as markup is only what this wrote as tags: a style block ends at its own end tag.
    assert len(re.findall("</style", page, flags=re.I)) == len(re.findall("</style>", page))
    assert not [css for css in re.findall("<style[^>]*>(.*?)</style>", page, flags=re.S) if "</" in css]
    if not hostile.startswith("<plaintext"):  # a browser shows everything after <plaintext> as text; we drop it
        assert page.endswith("<p>fin</p></body></html>")


def test_what_an_email_needs_is_kept():
    page = clean_html(
        '<table role="presentation" width="600" cellpadding="0" bgcolor="#ffffff"><tr><td align="center" '
        'style="padding:12px;font-family:Arial"><a href="https://crdbsl.org/?a=1&amp;b=2" target="_blank">Site</a> '
        '<a href="mailto:info@crdbsl.org">Écrire</a> <a href="tel:+14185550100">Appeler</a> <a href="#haut">Haut</a>'
        '<img src="data:image/png;base64,iVBORw0KGgo=" alt="point" width="20" height="20"><br/>1 &lt; 2 &amp; 3'
        "</td></tr></table><style>@media (max-width:480px){td{padding:0}}</style>",
        subject="S",
        year=2024,
    )
    assert '<a href="https://crdbsl.org/?a=1&amp;b=2" target="_blank">Site</a>' in page
    assert '<a href="mailto:info@crdbsl.org">' in page and '<a href="tel:+14185550100">' in page
    assert '<a href="#haut">' in page and 'src="data:image/png;base64,iVBORw0KGgo="' in page
    assert "<br>1 &lt; 2 &amp; 3</td>" in page and "<style>@media (max-width:480px){td{padding:0}}</style>" in page


@pytest.mark.parametrize(
    ("url", "kept"),
    [
        (
            "https://x.us1.list-manage.com/track/click?u=1&id=2&e=3&url=https%3A%2F%2Fcrdbsl.org%2F",
            "https://crdbsl.org/",
        ),
        ("https://x.us1.list-manage.com/track/click?u=1&id=2&e=3", None),
        ("https://x.list-manage1.com/unsubscribe?u=1&id=2", None),
        ("https://x.us1.list-manage.com/vcard?u=1&id=2", None),
        ("*|UNSUB|*", None),
        ("%2A%7CUNSUB%7C%2A", None),
        ("https://crdbsl.org/page?mc_cid=1&mc_eid=2&x=3", "https://crdbsl.org/page?x=3"),
        ("https://crdbsl.org/page?x=3", "https://crdbsl.org/page?x=3"),
        ("https://pub.substack.com/action/disable_email?token=t", None),
        ("https://news.example/unsubscribe?id=1", None),
        ("https://news.example/p?unsubscribe=1", None),
        ("https://substack.com/redirect/abc?j=eyJ1Ijo1fQ", "https://substack.com/redirect/abc"),
        ("//substack.com/redirect/2/aHR0cHM6Ly9jcmRic2wub3JnLw", "https://crdbsl.org/"),
        ("ftp://example.org/file", None),
        ("https://[::1", None),
    ],
)
def test_links(url, kept):
    assert clean_link(url) == kept


def test_the_static_archive_and_serve_list_imported_issues_among_the_sent_by_date(site_workspace, tmp_path):
    from newsletter.sending.wiring import open_store
    from newsletter.tokens import TokenSigner
    from newsletter.web import create_app
    from newsletter.workspace import Workspace

    import_json(str(export(tmp_path, "mailchimp", "zip")))
    import_json(str(export(tmp_path, "substack", "folder")))
    send = run("send", EXAMPLE_SLUG, "--list", "alliances", "--no-dry-run", "--json")
    assert send.exit_code == 0, send.output
    order = [EXAMPLE_SLUG, SPRING, WINTER, FORUM, NOVEMBER]  # sent now, then the past ones, newest first

    result = run("archive", "--out", str(tmp_path / "site"), "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["issues"] == order
    site = tmp_path / "site"
    index = (site / "index.html").read_text(encoding="utf-8")
    assert [index.index(f'href="{slug}/index.html"') for slug in order] == sorted(
        index.index(f'href="{slug}/index.html"') for slug in order
    )
    for date in ("21 novembre 2024", "14 février 2025", "28 novembre 2024", "20 mars 2025"):
        assert date in index
    assert "Le Forum des Alliances, 28 novembre" in index and "Bulletin de printemps" in index
    for slug in order[1:]:  # the page as imported
        imported = site_workspace / "archive" / "imported" / slug / "index.html"
        assert (site / slug / "index.html").read_bytes() == imported.read_bytes()
    feed = ElementTree.fromstring((site / "feed.xml").read_bytes())
    entries = feed.findall(f"{ATOM}entry")
    assert [e.find(f"{ATOM}link").get("href") for e in entries] == [
        f"https://bulletin.crdbsl.org/archive/{slug}/" for slug in order
    ]
    november = entries[-1]
    assert november.find(f"{ATOM}title").text == "Le Forum des Alliances, 28 novembre"
    assert november.find(f"{ATOM}updated").text == "2024-11-21T14:30:00Z"
    assert november.find(f"{ATOM}published").text == "2024-11-21T14:30:00Z"

    ws = Workspace.discover(site_workspace)
    store = open_store(ws)
    try:
        with serving(create_app(ws, store, TokenSigner(SECRET))) as base:
            served = httpx.get(f"{base}/archive/").text
            assert [served.index(f'href="{slug}/"') for slug in order] == sorted(
                served.index(f'href="{slug}/"') for slug in order
            )
            assert "21 novembre 2024" in served and "20 mars 2025" in served
            page = httpx.get(f"{base}/archive/{NOVEMBER}/")
            assert page.status_code == 200 and "Le programme du Forum" in page.text
            assert "default-src 'none'" in page.headers["content-security-policy"]
            assert_stripped(page.text)
            served_feed = ElementTree.fromstring(httpx.get(f"{base}/archive/feed.xml").content)
            assert [e.find(f"{ATOM}title").text for e in served_feed.findall(f"{ATOM}entry")] == [
                e.find(f"{ATOM}title").text for e in entries
            ]
            for path in (
                f"/archive/{NOVEMBER}/meta.json",
                "/archive/imported/",
                "/archive/%2e%2e/",
                f"/archive/{NOVEMBER}/images/x.png",
                "/archive/2099-01-01-nothing/",
            ):
                assert raw_get(base, path)[0] == 404, path
            shutil.rmtree(site_workspace / "archive" / "imported" / WINTER)  # deleted: out of the archive
            assert httpx.get(f"{base}/archive/{WINTER}/").status_code == 404
            assert WINTER not in httpx.get(f"{base}/archive/").text
    finally:
        store.close()


def test_a_zip_that_climbs_out_is_refused_and_nothing_is_written(site_workspace, tmp_path):
    for member in ("../evil.html", "posts/../../evil.html", "/etc/evil.html", "C:/evil.html", "..\\evil.html"):
        archive = tmp_path / "evil.zip"
        with zipfile.ZipFile(archive, "w") as written:
            written.writestr(
                "posts.csv", "post_id,post_date,is_published,type,title\n1.a,2024-01-01,true,newsletter,A\n"
            )
            written.writestr("posts/1.a.html", "<p>A</p>")
            written.writestr(member, "<p>evil</p>")
        result = run("archive-import", str(archive))
        assert result.exit_code == 1, member
        assert result.stderr.startswith("error: ") and "outside the export; refused" in result.stderr
        assert result.stderr.count("\n") == 1
        assert not (site_workspace / "archive").exists()


def test_a_folder_export_reads_no_file_through_a_link_outside_it(site_workspace, tmp_path):
    folder = export(tmp_path, "substack", "folder")
    secret = tmp_path / "secret.html"
    secret.write_text("<p>SECRET outside the export</p>", encoding="utf-8")
    post = folder / "posts" / "141002345.bulletin-de-printemps.html"
    post.unlink()
    post.symlink_to(secret)
    report = import_json(str(folder))
    assert [item["slug"] for item in report["imported"]] == [FORUM]
    assert {
        "id": "141002345.bulletin-de-printemps",
        "subject": "Bulletin de printemps",
        "why": "its HTML posts/141002345.bulletin-de-printemps.html leads outside the export; not read",
    } in report["left_out"]
    assert not any(b"SECRET" in data for data in files_of(site_workspace / "archive").values())


def test_same_day_same_subject_get_their_own_slugs_on_every_run(site_workspace, tmp_path):
    folder = tmp_path / "twice"
    (folder / "campaigns_content").mkdir(parents=True)
    rows = ["Campaign ID,Subject Line,Send Time,Status"]
    for campaign_id in ("bbbbbbbbbb", "aaaaaaaaaa"):
        rows.append(f"{campaign_id},Rappel,2024-05-01T09:00:00-04:00,sent")
        (folder / "campaigns_content" / f"{campaign_id}.html").write_text(f"<p>{campaign_id}</p>", encoding="utf-8")
    (folder / "campaigns.csv").write_text("\n".join(rows) + "\n", encoding="utf-8")
    first = import_json(str(folder))
    assert [(i["id"], i["slug"]) for i in first["imported"]] == [
        ("aaaaaaaaaa", "2024-05-01-rappel"),
        ("bbbbbbbbbb", "2024-05-01-rappel-2"),
    ]
    assert [(i["id"], i["slug"]) for i in import_json(str(folder))["unchanged"]] == [
        (i["id"], i["slug"]) for i in first["imported"]
    ]


def test_what_is_not_an_export_fails_in_one_line(site_workspace, tmp_path):
    for path, message in (
        (tmp_path / "nothing", "no such export"),
        (EXPORTS, "holds both campaigns.csv and posts.csv"),
        (site_workspace / "issues", "is neither Mailchimp's account export (campaigns.csv) nor Substack's"),
        (site_workspace / "newsletter.toml", "not a zip file nor a folder"),
    ):
        result = run("archive-import", str(path))
        assert result.exit_code == 1 and message in result.stderr and result.stderr.count("\n") == 1, path
