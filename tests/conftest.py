"""Shared fixtures: the repository's example workspace, scratch workspaces, and the system's Chromium; and the
markers (pyproject.toml) a test gets from the system tools its fixtures need, for `./dev check` to leave it out."""

from __future__ import annotations

import ast
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
# The seed bulletin's English version, a few of its sections translated: issue.en.yaml of bilingual_workspace. A
# fixture rather than a file of issues/: the example stays whole in one language for the demo and the tests that
# compare its outputs, and a half-translated issue would send English readers a third of it.
EXAMPLE_TRANSLATION = FIXTURES / f"{EXAMPLE_SLUG}.en.yaml"
ENGLISH_REASON = (
    "You receive this newsletter because your organisation takes part in the Alliance pour la solidarité du "
    "Bas-Saint-Laurent or because you subscribed to it."
)
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


# A test that uses one of these fixtures needs the system tool its marker names.
MARKER_OF_FIXTURE = {
    "chromium": "browser",
    "chromium_installed": "browser",
    "postgresql": "postgresql",
    "dovecot": "imap",
    "spamassassin": "spamassassin",
    "reference_mjml": "node",
}
# The slow tests (`./dev check` leaves them out): a second or more each (subprocesses, servers started and killed,
# many rows or examples), the longest of a run with --durations.
# By name here rather than with a decorator in each file, so that what the quick loop skips is in one place; a
# name that no longer names a test function is an error, for the list never to go stale unseen.
SLOW = {
    "test_addresses.py::test_the_same_answer_as_email_validator",
    "test_archive.py::test_archive_url_is_the_view_online_link_and_the_feeds_address",
    "test_bounce_mailbox.py::test_every_message_is_read_whole_and_none_marked_seen",
    "test_bilingual_issue.py::test_an_agent_writes_checks_and_reads_the_translation",
    "test_bilingual_issue.py::test_the_preview_serves_each_version_with_a_switch_between_them",
    "test_campaign.py::test_a_rate_holds_across_two_senders",
    "test_campaign.py::test_a_sender_held_up_past_its_lease_stops_its_batch_when_another_took_it_over",
    "test_cli.py::test_installed_command_builds_the_example",
    "test_delivery_report.py::test_the_mcp_tool_answers_the_same_json",
    "test_event.py::test_serve_answers_the_ics_as_sent_and_404_for_any_other_name",
    "test_import_large.py::test_an_import_killed_in_the_middle_then_run_again_gives_the_right_counts",
    "test_list_names.py::test_every_list_a_user_can_create_has_working_unsubscribe_links",
    "test_list_names.py::test_lists_made_before_slugs_keep_working_links_after_the_upgrade",
    "test_mcp.py::test_a_code_covers_the_sender_the_reply_to_and_the_bytes_of_every_image",
    "test_mcp.py::test_draft_fix_check_dry_run_then_the_right_code_sends_exactly_once",
    "test_mcp.py::test_every_tool_that_takes_a_name_refuses_a_path",
    "test_mcp.py::test_failures_are_one_line_tool_errors_and_the_server_goes_on",
    "test_mcp.py::test_the_server_refuses_to_start_outside_a_workspace",
    "test_mcp.py::test_the_tools_their_schemas_resources_and_prompt",
    "test_new_from.py::test_mcp_new_issue_from_the_previous_one_and_its_images_as_resources",
    "test_preview.py::test_a_list_with_nobody_to_show_is_one_line_error",
    "test_preview.py::test_pages_text_and_images",
    "test_preview.py::test_preview_command_serves_until_interrupted",
    "test_preview.py::test_rebuilds_on_change_of_issue_templates_and_config",
    "test_preview.py::test_the_preview_is_the_message_a_member_receives",
    "test_queue.py::test_a_scheduled_campaign_waits_for_its_time_and_expires_when_no_worker_came",
    "test_queue.py::test_pause_holds_every_worker_resume_finishes_cancel_leaves_the_rest",
    "test_queue.py::test_the_campaign_rate_holds_for_two_workers_together",
    "test_queue.py::test_two_sends_started_at_once_mail_everyone_exactly_once",
    "test_send.py::test_a_rerun_after_a_crash_says_whose_rows_it_waits_for",
    "test_send.py::test_a_server_failing_at_random_still_mails_everyone_exactly_once",
    "test_send.py::test_killed_mid_send_then_run_again_skips_nobody",
    "test_send_addresses.py::test_international_addresses_each_get_their_message_or_a_reason",
    "test_signup.py::test_a_body_that_is_no_form_gets_a_400_and_no_traceback",
    "test_signup.py::test_a_confirmation_link_confirms_its_own_request_only",
    "test_signup.py::test_a_confirmation_link_never_subscribes_again_after_an_unsubscribe",
    "test_signup.py::test_a_hundred_sign_ups_at_once",
    "test_signup.py::test_a_link_sent_before_links_named_their_request_confirms_only_a_sign_up_still_waiting",
    "test_signup.py::test_a_refused_confirmation_fails_alone_and_a_dead_mail_server_loses_no_sign_up",
    "test_signup.py::test_a_server_killed_before_its_confirmations_went_sends_them_when_it_runs_again",
    "test_signup.py::test_a_server_told_to_stop_sends_the_confirmations_still_waiting",
    "test_signup.py::test_an_address_block_past_its_limit_gets_the_same_page_and_no_email",
    "test_signup.py::test_confirming_subscribes_and_records_consent_a_get_never_does",
    "test_signup.py::test_every_well_formed_address_gets_the_same_answer_whatever_its_state",
    "test_signup.py::test_forged_tampered_and_expired_confirmation_links_get_the_same_400",
    "test_signup.py::test_forget_leaves_nothing_personal_and_an_import_does_not_bring_them_back",
    "test_signup.py::test_honeypot_malformed_address_and_the_ten_minute_limit",
    "test_signup.py::test_one_address_gets_one_confirmation_across_lists_then_fewer_and_fewer",
    "test_signup.py::test_purge_pending_removes_expired_sign_ups_whole_and_keeps_everyone_else",
    "test_signup.py::test_serve_refuses_a_list_open_to_sign_up_without_base_url",
    "test_signup.py::test_serve_removes_the_sign_ups_never_confirmed_when_newsletter_toml_asks",
    "test_signup.py::test_six_sign_ups_at_once_one_address_the_mail_server_cannot_take_all_six_recorded",
    "test_signup.py::test_x_forwarded_for_counts_only_from_a_trusted_proxy",
    "test_welcome.py::test_a_server_killed_before_the_welcome_went_leaves_it_to_the_worker_which_sends_it_once",
    "test_welcome.py::test_two_servers_confirming_the_same_people_at_once_send_each_one_welcome",
    "test_web.py::test_500_concurrent_one_clicks_are_all_recorded",
    "test_web.py::test_a_retired_key_still_verifies_after_rotation",
    "test_web.py::test_a_scheduled_issue_is_not_in_the_archive_before_it_goes",
    "test_web.py::test_archive_feed_and_health",
    "test_web.py::test_bad_tokens_get_the_same_400_and_change_nothing",
    "test_web.py::test_leave_takes_only_one_of_the_persons_lists_and_keeps_no_name_it_was_sent",
    "test_web.py::test_one_mailgun_token_is_acted_on_once_even_six_at_once_and_after_a_restart",
    "test_web.py::test_other_spellings_of_a_genuine_token_are_refused",
    "test_web.py::test_refusals_are_rate_limited_per_address_block_but_genuine_clicks_never",
    "test_web.py::test_signed_webhooks_through_the_server_change_memberships_and_replays_are_refused",
    "test_web.py::test_the_archive_shows_what_was_sent_and_serves_no_file_outside_the_issue",
    "test_web.py::test_the_feed_ids_come_from_newsletter_toml_never_from_host",
    "test_web.py::test_the_page_button_then_undo",
}


def _stale(names: set[str]) -> list[str]:
    """The names of SLOW whose file defines no such test function."""
    missing = []
    for name in sorted(names):
        file, _, function = name.partition("::")
        path = Path(__file__).parent / file
        defined = path.is_file() and any(
            isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.name == function
            for node in ast.parse(path.read_bytes()).body
        )
        if not defined:
            missing.append(name)
    return missing


@pytest.hookimpl(tryfirst=True)  # before -m deselects by these markers
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark each test with the system tools it needs (from its fixtures, and the engines it is parametrised on:
    `database_url` and others start PostgreSQL only for their "postgresql" case) and with `slow`."""
    if stale := _stale(SLOW):
        raise pytest.UsageError(f"tests/conftest.py: SLOW names no test: {', '.join(stale)}")
    for item in items:
        for fixture in getattr(item, "fixturenames", ()):
            if fixture in MARKER_OF_FIXTURE:
                item.add_marker(MARKER_OF_FIXTURE[fixture])
        callspec = getattr(item, "callspec", None)
        if callspec is not None and any(value == "postgresql" for value in callspec.params.values()):
            item.add_marker("postgresql")
        function = item.originalname if isinstance(item, pytest.Function) else item.name
        if f"{item.path.name}::{function}" in SLOW:
            item.add_marker("slow")


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
def bilingual_workspace(example_workspace: Path) -> Path:
    """example_workspace with the seed bulletin's English version beside its issue.yaml (EXAMPLE_TRANSLATION), and
    the footer's reason in English too (ENGLISH_REASON), as an organisation publishing in English writes it."""
    shutil.copyfile(EXAMPLE_TRANSLATION, example_workspace / "issues" / EXAMPLE_SLUG / "issue.en.yaml")
    config = example_workspace / "newsletter.toml"
    text = config.read_text(encoding="utf-8")
    config.write_text(text.replace("[footer]\n", f'[footer]\nreason.en = "{ENGLISH_REASON}"\n', 1), encoding="utf-8")
    return example_workspace


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


@pytest.fixture(scope="session")
def dovecot():
    """A Dovecot IMAP server for the session (tests/imap_server.py: IMAP, IMAPS, XOAUTH2, a Maildir behind them);
    skipped, loudly, only where Debian's dovecot-imapd is not installed. Each test works in folders of its own."""
    from imap_server import DovecotServer

    try:
        server = DovecotServer().start()
    except FileNotFoundError as exc:
        pytest.skip(f"NO DOVECOT, ITS TESTS SKIPPED: {exc}")
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
