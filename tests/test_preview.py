"""The preview server (real uvicorn on 127.0.0.1), its live reload, and PNG screenshots in Chromium."""

from __future__ import annotations

import asyncio
import email
import email.policy
import json
import re
import signal
import struct
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from conftest import EXAMPLE_SLUG, ROOT

from newsletter.preview import RELOAD_SCRIPT, running_preview
from newsletter.sending.send import send
from newsletter.sending.wiring import open_store
from newsletter.subscribers import add as add_subscriber
from newsletter.workspace import Workspace

SECRET = "a-test-secret-key-of-sufficient-length"
ONE_LINK = "https://crdbsl.org/alliance-solidarite/forum-2024/documents"  # hyphens, in a line of 86 characters


@pytest.fixture
def example_folder(example_workspace):
    return example_workspace / "issues" / EXAMPLE_SLUG


def wait_until(condition) -> None:
    """Poll until the preview shows a change (a bounded wait for an event, not a timing assertion)."""
    for _ in range(400):
        if condition():
            return
        time.sleep(0.05)
    raise AssertionError("the preview never showed the change")


def run_newsletter(*args: str) -> subprocess.CompletedProcess:
    """The command in its own process, as an agent runs it."""
    return subprocess.run([sys.executable, "-m", "newsletter", *args], capture_output=True, text=True, cwd=ROOT)


def png_size(path) -> tuple[int, int]:
    return struct.unpack(">II", path.read_bytes()[16:24])


def test_pages_text_and_images(example_folder):
    with running_preview(example_folder) as (base, _state), httpx.Client(base_url=base) as client:
        shell = client.get("/")
        assert shell.status_code == 200
        assert 'width="600"' in shell.text and 'width="375"' in shell.text
        assert "Retour sur le 2e Forum des Alliances" in shell.text  # the text view
        assert "Camille Tremblay &lt;camille.tremblay@example.org&gt;, a sample member" in shell.text
        email = client.get("/email.html")
        assert email.headers["content-type"].startswith("text/html")
        assert "Consulter les documents!" in email.text
        assert RELOAD_SCRIPT not in email.text  # not watching, as for a screenshot: the member's HTML as it is
        text = client.get("/email.txt")
        assert text.headers["content-type"] == "text/plain; charset=utf-8"
        assert "Complétez le formulaire! : https://" in text.text
        text_page = client.get("/text.html")
        assert text_page.headers["content-type"].startswith("text/html") and "white-space: pre;" in text_page.text
        assert "Complétez le formulaire! : https://" in text_page.text and RELOAD_SCRIPT not in text_page.text
        logo = client.get("/images/logo-alliances.png")
        assert logo.status_code == 200 and logo.content.startswith(b"\x89PNG")
        assert client.get("/images/../../newsletter.toml").status_code == 404
        assert client.get("/images/absent.png").status_code == 404
        assert client.get("/status.json").json()["diagnostics"] == []


def test_rebuilds_on_change_of_issue_templates_and_config(example_folder):
    issue = example_folder / "issue.yaml"
    root = example_folder.parent.parent
    with running_preview(example_folder, watch=True) as (base, _state), httpx.Client(base_url=base) as client:
        version = client.get("/__version").text
        assert RELOAD_SCRIPT in client.get("/email.html").text and RELOAD_SCRIPT in client.get("/text.html").text
        time.sleep(0.3)  # let the watcher start before the first change
        issue.write_text(issue.read_text().replace("Prochaines étapes", "Étapes suivantes"))
        wait_until(lambda: "Étapes suivantes" in client.get("/email.html").text)
        assert client.get("/__version").text != version  # what the page's script polls

        override = root / "templates" / "sections" / "divider.txt.j2"  # templates/ did not exist at start
        override.parent.mkdir(parents=True)
        override.write_text("* * *\n")
        wait_until(lambda: "* * *" in client.get("/email.txt").text)
        time.sleep(0.8)  # past the restart of the watch that now includes templates/
        override.write_text("~ ~ ~\n")
        wait_until(lambda: "~ ~ ~" in client.get("/email.txt").text)

        config = root / "newsletter.toml"
        config.write_text(config.read_text().replace("320, rue Saint-Germain Est", "456, avenue Modifiée"))
        wait_until(lambda: "456, avenue Modifiée" in client.get("/email.txt").text)

        # A mistake while editing shows the problem instead of stopping the server; fixing it recovers.
        good = issue.read_text()
        issue.write_text(good.replace("type: divider", "type: separateur", 1))
        wait_until(lambda: "does not render" in client.get("/email.html").text)
        page = client.get("/email.html").text
        assert "unknown section type" in page and RELOAD_SCRIPT in page
        assert "separateur" in client.get("/").text
        issue.write_text(good)
        wait_until(lambda: "Étapes suivantes" in client.get("/email.html").text)


def test_views_switch_and_the_page_reloads_itself_in_chromium(example_folder, chromium):
    issue = example_folder / "issue.yaml"
    with running_preview(example_folder, watch=True) as (base, _state):
        page = chromium.new_page(viewport={"width": 1400, "height": 900})
        try:
            page.goto(base + "/", wait_until="load")
            frames = page.locator("iframe")
            assert frames.count() == 2
            assert page.locator("#desktop").is_visible() and page.locator("#mobile").is_visible()
            page.get_by_role("button", name="Mobile 375 px").click()
            assert page.locator("#mobile").is_visible() and not page.locator("#desktop").is_visible()
            page.get_by_role("button", name="Plain text").click()
            assert page.locator("pre").is_visible()
            time.sleep(0.3)
            issue.write_text(issue.read_text().replace("Prochaines étapes", "Rechargé automatiquement"))
            page.wait_for_function("document.querySelector('pre').textContent.includes('Rechargé automatiquement')")
            assert page.locator("#text").is_visible()  # the view survives the reload (kept in the URL)
        finally:
            page.close()


def test_screenshot_command_writes_a_png_of_the_given_width(example_folder, chromium_installed, tmp_path):
    """As an agent runs it: a separate process that writes the PNG and exits."""
    output = tmp_path / "shot.png"
    done = run_newsletter("preview", str(example_folder), "--screenshot", str(output), "--width", "375", "--json")
    assert done.returncode == 0, done.stderr
    document = json.loads(done.stdout)
    assert document["png"] == str(output) and document["width"] == 375 and document["diagnostics"] == []
    width, height = png_size(output)
    assert width == 375 and height == document["height"] > 2000
    text_shot = tmp_path / "text.png"
    done = run_newsletter("preview", str(example_folder), "--screenshot", str(text_shot), "--text")
    assert done.returncode == 0, done.stderr
    # The text as sent: its 115-character line makes the page (and the PNG) wider than 600 px, as it reports.
    text_width = png_size(text_shot)[0]
    assert text_width > 600
    assert done.stdout.startswith(f"wrote {text_shot} ({text_width}×")  # absolute: it is outside the current folder


def test_screenshot_of_an_issue_with_errors_exits_1(example_folder, chromium_installed, tmp_path):
    issue = example_folder / "issue.yaml"
    issue.write_text(issue.read_text().replace("type: divider", "type: separateur", 1))
    done = run_newsletter("preview", str(example_folder), "--screenshot", str(tmp_path / "x.png"))
    assert done.returncode == 1
    assert "error: the issue has 1 errors" in done.stderr and (tmp_path / "x.png").is_file()


def test_preview_command_serves_until_interrupted(example_folder):
    process = subprocess.Popen(
        [sys.executable, "-m", "newsletter", "preview", str(example_folder), "--no-open", "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )
    try:
        line = process.stdout.readline()
        assert line.startswith("previewing ") and "http://127.0.0.1:" in line
        url = line.split(" at ")[1].split()[0]
        assert "Consulter les documents!" in httpx.get(url + "email.html").text
    finally:
        process.send_signal(signal.SIGINT)
        process.wait(timeout=20)
    assert process.returncode in (0, -signal.SIGINT, 130)
    assert "Traceback" not in process.stderr.read()


def test_port_in_use_falls_back_to_a_free_port(example_folder):
    import socket

    from newsletter.preview import _bind

    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    try:
        sock = _bind(taken.getsockname()[1])
        assert sock.getsockname()[1] != taken.getsockname()[1]
        sock.close()
    finally:
        taken.close()


def test_a_screenshot_chromium_could_not_capture_is_tried_again_then_refused_in_one_line(tmp_path):
    """Chromium on a busy machine may answer that it has no frame to capture (seen in this suite): the capture is
    tried again, and only a third refusal fails, in one line. The page here stands for Chromium's answers alone;
    the tests above take real screenshots."""
    from pathlib import Path

    from playwright.sync_api import Error

    from newsletter.errors import PreviewError
    from newsletter.preview import capture_full_page

    class Refusing:
        def __init__(self, refusals: int):
            self.refusals, self.calls = refusals, 0

        def screenshot(self, path: str, full_page: bool) -> None:
            self.calls += 1
            if self.calls <= self.refusals:
                raise Error(
                    "Page.screenshot: Protocol error (Page.captureScreenshot): Unable to capture screenshot\n"
                    "Call log:\n  - taking page screenshot"
                )
            Path(path).write_bytes(b"\x89PNG")

        def wait_for_timeout(self, milliseconds: float) -> None:
            pass

    page = Refusing(2)
    capture_full_page(page, tmp_path / "shot.png")
    assert page.calls == 3 and (tmp_path / "shot.png").read_bytes() == b"\x89PNG"
    with pytest.raises(PreviewError) as refused:
        capture_full_page(Refusing(3), tmp_path / "never.png")
    assert str(refused.value) == (
        "Chromium could not take the screenshot: Page.screenshot: Protocol error (Page.captureScreenshot): "
        "Unable to capture screenshot"
    )


@pytest.fixture
def one_member_list(example_folder, monkeypatch):
    """The example workspace, with %%name%% in the issue and a list `membres` of one member, Marie Côté."""
    root = example_folder.parent.parent
    monkeypatch.chdir(root)
    monkeypatch.setenv("NEWSLETTER_SECRET_KEY", SECRET)
    for variable in (
        "NEWSLETTER_TRANSPORT",
        "NEWSLETTER_DATABASE_URL",
        "NEWSLETTER_BASE_URL",
        "NEWSLETTER_ASSET_BASE_URL",
        "NEWSLETTER_ARCHIVE_URL",
    ):
        monkeypatch.delenv(variable, raising=False)
    issue = example_folder / "issue.yaml"
    heading = "    level: 1\n    text: Retour sur le 2e Forum des Alliances\n"
    assert heading in issue.read_text()
    issue.write_text(issue.read_text().replace(heading, "    level: 1\n    text: Bonjour %%name|à vous%%\n"))
    store = open_store(Workspace.discover(root))
    try:
        assert add_subscriber(store, "membres", "marie@example.org", "Marie Côté") == "added"
    finally:
        store.close()
    return example_folder


def delivered_parts(folder, tmp_path) -> tuple[str, str]:
    """Send the issue to the list `membres` through the outbox; the (html, text) of the one message it wrote."""
    workspace = Workspace.discover(folder.parent.parent)
    outbox = tmp_path / "outbox"
    sending = send(workspace, folder, "membres", dsn_text=f"outbox://{outbox}", dry_run=False)
    with ThreadPoolExecutor(1) as thread:  # its own thread: Playwright's sync API holds this one's event loop
        summary = thread.submit(asyncio.run, sending).result()
    assert summary.counts["sent"] == 1, summary.failures
    (file,) = outbox.glob("*.eml")
    message = email.message_from_bytes(file.read_bytes(), policy=email.policy.default)
    assert message["To"].addresses[0].addr_spec == "marie@example.org"
    return tuple(message.get_body((kind,)).get_content().replace("\r\n", "\n") for kind in ("html", "plain"))


def unsubscribe_links(html: str, text: str) -> tuple[str, str]:
    """The footer's unsubscribe link in each part."""
    (in_html,) = re.findall(r'<a href="([^"]*)"[^>]*>Se désabonner</a>', html)
    (in_text,) = re.findall(r"^Se désabonner : (\S+)$", text, re.MULTILINE)
    return in_html, in_text


def test_the_preview_is_the_message_a_member_receives(one_member_list, tmp_path):
    html, text = delivered_parts(one_member_list, tmp_path)
    (token,) = {link.rpartition("/u/")[2] for link in unsubscribe_links(html, text)}
    with running_preview(one_member_list) as (base, _state), httpx.Client(base_url=base) as client:
        shown_html, shown_text = client.get("/email.html").text, client.get("/email.txt").text
    for links in (unsubscribe_links(html, text), unsubscribe_links(shown_html, shown_text)):
        for link in links:  # this tool's https one-click link in both parts, in both messages; no mailto:
            assert link.startswith("https://bulletin.crdbsl.org/u/"), link
    (sample_token,) = {link.rpartition("/u/")[2] for link in unsubscribe_links(shown_html, shown_text)}
    assert sample_token != token
    assert "Bonjour Marie Côté" in html and "Bonjour Marie Côté" in text
    assert "Bonjour Camille Tremblay" in shown_html and "Bonjour Camille Tremblay" in shown_text

    def anyone(part: str, token: str, name: str, address: str) -> str:
        return part.replace(token, "<token>").replace(name, "<name>").replace(address, "<address>")

    marie = (token, "Marie Côté", "marie@example.org")
    camille = (sample_token, "Camille Tremblay", "camille.tremblay@example.org")
    assert anyone(shown_html, *camille) == anyone(html, *marie)
    assert anyone(shown_text, *camille) == anyone(text, *marie)

    # With --list, the list's first member: the very message they got, their unsubscribe link included.
    with running_preview(one_member_list, list_slug="membres") as (base, state), httpx.Client(base_url=base) as client:
        assert (client.get("/email.html").text, client.get("/email.txt").text) == (html, text)
        assert state.recipient == "Marie Côté <marie@example.org>"
        assert "following it unsubscribes them" in client.get("/").text


def test_a_list_with_nobody_to_show_is_one_line_error(example_folder, monkeypatch):
    monkeypatch.chdir(example_folder.parent.parent)
    done = run_newsletter("preview", str(example_folder), "--screenshot", "never.png", "--list", "personne")
    assert done.returncode == 1 and done.stderr == "error: no list 'personne'; lists: none yet\n"


# For each line of the text shown: its rendered line count, and the width a character takes.
MEASURE_TEXT = """(link) => {
  const pre = document.querySelector('pre'), style = getComputedStyle(pre), node = pre.firstChild;
  const range = (start, end) => { const r = document.createRange(); r.setStart(node, start); r.setEnd(node, end);
    return r; };
  const at = node.data.indexOf(link);
  const longest = node.data.split('\\n').reduce((a, b) => (b.length > a.length ? b : a));
  const from = node.data.indexOf(longest);
  return {
    text: node.data,
    lines: (pre.scrollHeight - parseFloat(style.paddingTop) - parseFloat(style.paddingBottom))
      / parseFloat(style.lineHeight),
    linkLines: new Set(Array.from(range(at, at + link.length).getClientRects(), r => Math.round(r.top))).size,
    charWidth: range(from, from + longest.length).getBoundingClientRect().width / longest.length,
    padding: parseFloat(style.paddingLeft) + parseFloat(style.paddingRight),
    pageWidth: document.documentElement.scrollWidth,
  };
}"""


@pytest.mark.parametrize("width", [600, 375])
def test_the_text_view_shows_every_line_of_the_text_part_whole(example_folder, chromium, width):
    """The text page (what the screenshot takes) and the page's own text view: each line of the text part on one
    rendered line, a URL with hyphens whole; 78 columns fit at 600 px, and a longer line scrolls sideways."""
    with running_preview(example_folder) as (base, state):
        text = httpx.get(base + "/email.txt").text
        assert ONE_LINK in text and max(len(line) for line in text.splitlines()) > 78
        for url in (base + "/text.html", base + "/#text"):
            page = chromium.new_page(viewport={"width": width, "height": 800})
            try:
                page.goto(url, wait_until="load")
                shown = page.evaluate(MEASURE_TEXT, ONE_LINK)
            finally:
                page.close()
            assert shown["text"] == text, url
            assert round(shown["lines"]) == len(text.splitlines()), url  # no line wrapped again (1/64 px rounding)
            assert shown["linkLines"] == 1, url
            if url.endswith("/text.html"):
                assert shown["padding"] + 78 * shown["charWidth"] <= 600
                assert shown["pageWidth"] > width  # the 115-character line: the page scrolls sideways
