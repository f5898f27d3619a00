"""Shared fixtures: the repository's example workspace, scratch workspaces, and the system's Chromium."""

from __future__ import annotations

import re
import shutil
import textwrap
from collections.abc import Callable
from pathlib import Path

import pytest
from sample_messages import RECIPIENTS, example_campaign

from newsletter.config import load_config
from newsletter.issue import load_issue
from newsletter.render import render_issue

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE_SLUG = "2024-11-forum-des-alliances"
EXAMPLE = ROOT / "issues" / EXAMPLE_SLUG
# A copy of ../shared/seeds/bulletin-des-alliances-2024-11.txt, the bulletin the example issue reproduces.
SEED = Path(__file__).parent / "fixtures" / "bulletin-des-alliances-2024-11.txt"
FIXTURES = Path(__file__).parent / "fixtures"
PNG_1x1 = (
    b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x00\x01\x00\x00\x00\x01\x08\x06\x00\x00\x00\x1f\x15\xc4\x89"
    b"\x00\x00\x00\rIDATx\x9cc\xf8\xff\xff?\x00\x05\xfe\x02\xfe\xa7\x35\x81\x84\x00\x00\x00\x00IEND\xaeB`\x82"
)
CONFIG = """\
name = "Test letter"
lang = "fr"
[publisher]
name = "Organisme Exemple"
postal_address = "1, rue Principale, Rimouski (Québec)  G5L 1A1"
email = "info@organisme.ca"
"""


# What a user fills in before a first real send, where the example's newsletter.toml is fictional on purpose (a
# real send refuses a reserved name and a placeholder postal address). Tests never reach these names.
REAL_BASE_URL = "https://bulletin.crdbsl.org"
REAL_POSTAL_ADDRESS = "320, rue Saint-Germain Est, Rimouski (Québec)  G5L 1C2"


def with_real_settings(toml: str) -> str:
    """The example's newsletter.toml with a real base_url and postal address, as a user makes it."""
    toml = toml.replace("https://bulletin.crdbsl.example", REAL_BASE_URL)
    return re.sub(r'^postal_address = ".*"$', f'postal_address = "{REAL_POSTAL_ADDRESS}"', toml, flags=re.M)


@pytest.fixture
def example_workspace(tmp_path: Path) -> Path:
    """A copy of this repository's workspace (config and example issue) that a test may change, with its settings
    filled in as before a first real send (with_real_settings)."""
    toml = (ROOT / "newsletter.toml").read_text(encoding="utf-8")
    (tmp_path / "newsletter.toml").write_text(with_real_settings(toml), encoding="utf-8")
    shutil.copytree(EXAMPLE, tmp_path / "issues" / EXAMPLE_SLUG)
    return tmp_path


@pytest.fixture
def make_issue(tmp_path: Path) -> Callable[..., Path]:
    """Write a workspace with newsletter.toml and issues/<slug>/issue.yaml holding the given YAML."""

    def make(yaml_text: str, *, slug: str = "test-issue", config: str = CONFIG, images: tuple = ()) -> Path:
        (tmp_path / "newsletter.toml").write_text(config, encoding="utf-8")
        folder = tmp_path / "issues" / slug
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "issue.yaml").write_text(textwrap.dedent(yaml_text), encoding="utf-8")
        for name in images:
            (folder / name).parent.mkdir(parents=True, exist_ok=True)
            (folder / name).write_bytes(PNG_1x1)
        return folder

    return make


def render_folder(folder: Path, **kwargs):
    root = folder.parent.parent
    return render_issue(load_issue(folder), load_config(root), root / "templates", **kwargs)


@pytest.fixture(scope="session")
def chromium_installed() -> str:
    """The system's Chromium; the browser tests are skipped, loudly, where none is installed."""
    from newsletter.errors import PreviewError
    from newsletter.preview import chromium_executable

    try:
        return chromium_executable()
    except PreviewError as exc:
        pytest.skip(f"NO CHROMIUM, BROWSER TESTS SKIPPED: {exc}")


@pytest.fixture(scope="module")
def chromium(chromium_installed):
    """A headless Chromium driven by Playwright, shared by the tests of a module.

    Not by the whole session: Playwright's sync API keeps an event loop running in this thread while it is
    open, and the tests of other modules call asyncio.run().
    """
    from playwright.sync_api import sync_playwright

    from newsletter.preview import launch_chromium

    with sync_playwright() as playwright:
        browser = launch_chromium(playwright)
        yield browser
        browser.close()


@pytest.fixture(scope="session")
def campaign():
    """A Campaign of the example issue (id 12, list alliances), with absolute image URLs."""
    return example_campaign()


@pytest.fixture
def messages(campaign):
    """Four messages: French names with accents and œ, and one recipient without a name."""
    return [campaign.build(recipient) for recipient in RECIPIENTS]


@pytest.fixture(scope="session")
def postgresql():
    """A PostgreSQL server for the session; skipped, loudly, only where Debian's postgresql is not installed."""
    from postgres_server import PostgresServer

    try:
        server = PostgresServer().start()
    except FileNotFoundError as exc:
        pytest.skip(f"NO POSTGRESQL, ITS TESTS SKIPPED: {exc}")
    yield server
    server.stop()


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request, tmp_path) -> str:
    """An empty database on each engine the store supports: a SQLite file, then a PostgreSQL database."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'newsletter.db'}"
    from newsletter.store import Store

    url = request.getfixturevalue("postgresql").new_database()
    Store.open(url, upgrade=True).close()  # as `newsletter db upgrade` does
    return url


@pytest.fixture
def database_setting() -> str | None:
    """NEWSLETTER_DATABASE_URL for the workspace fixtures: None means the workspace's own SQLite file.

    A test module overrides it with `database_url` to run its tests on every engine.
    """
    return None
