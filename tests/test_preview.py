"""The preview server (real uvicorn on 127.0.0.1), its live reload, and PNG screenshots in Chromium."""

from __future__ import annotations

import json
import signal
import struct
import subprocess
import sys
import time

import httpx
import pytest
from conftest import EXAMPLE_SLUG, ROOT

from newsletter.preview import RELOAD_SCRIPT, running_preview


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
        email = client.get("/email.html")
        assert email.headers["content-type"].startswith("text/html")
        assert RELOAD_SCRIPT in email.text and "Consulter les documents!" in email.text
        text = client.get("/email.txt")
        assert text.headers["content-type"] == "text/plain; charset=utf-8"
        assert "Complétez le formulaire! : https://" in text.text
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
        config.write_text(config.read_text().replace("123, rue de l'Exemple", "456, avenue Modifiée"))
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
    assert done.stdout.startswith(f"wrote {text_shot} (600×")  # absolute: it is outside the current folder
    assert png_size(text_shot)[0] == 600


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
                raise Error("Page.screenshot: Protocol error (Page.captureScreenshot): Unable to capture screenshot\n"
                            "Call log:\n  - taking page screenshot")  # fmt: skip
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
