"""The schema's migrations: numbered, idempotent, bringing an earlier version's database up to today's, and on
PostgreSQL applied only by `newsletter db upgrade`."""

from __future__ import annotations

import pytest

from newsletter.errors import NewsletterError
from newsletter.store import MIGRATIONS, Store
from newsletter.subscribers import add

# Every migration's number, in order: 10 (a field index) is another branch's, merged before or after 11.
NUMBERS = [number for number, _ in MIGRATIONS]


def test_migrations_are_versioned_and_idempotent(tmp_path):
    url = f"sqlite:///{tmp_path / 'db.sqlite'}"
    store = Store.open(url)
    assert list(range(1, 13)) == NUMBERS  # every migration, in order
    assert store.version() == 12 and store.missing() == []
    assert store.upgrade() == []
    store.close()
    with Store.open(url).engine.connect() as connection:
        assert connection.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"


def test_campaigns_of_an_earlier_version_get_their_status_and_the_ledger_its_leases(database_url):
    """A store as schema version 2 left it (before the shared queue), with a finished and an unfinished campaign,
    upgraded: the columns are added, the finished campaign is finished, the other running."""
    import sqlalchemy as sa

    from newsletter.store import now

    store = Store.open(database_url, upgrade=True)
    add(store, "alliances", "a@example.org", None)
    added = {
        "campaigns": ["status", "scheduled_at", "expires_at", "started_at", "content", "next_send_at", "welcome"],
        "deliveries": ["lease_owner", "lease_until"],
        "memberships": ["joined_at"],
        "subscribers": ["lang"],
    }
    with store.engine.begin() as connection:  # undo what migrations 3 to 12 add (migration 1 makes today's tables)
        connection.exec_driver_sql("DELETE FROM schema_version WHERE version >= 3")
        connection.exec_driver_sql("DROP TABLE IF EXISTS campaign_sends")
        connection.exec_driver_sql("DROP TABLE IF EXISTS webhook_tokens")
        connection.exec_driver_sql("DROP TABLE IF EXISTS suppressions")
        connection.exec_driver_sql("DROP TABLE IF EXISTS approval_requests")
        connection.exec_driver_sql("DROP TABLE IF EXISTS campaign_events")
        connection.exec_driver_sql("DROP TABLE IF EXISTS subscriber_tags")
        connection.exec_driver_sql("DROP TABLE IF EXISTS field_names")
        connection.exec_driver_sql("DROP TABLE IF EXISTS subscriber_fields")
        connection.exec_driver_sql("DROP INDEX IF EXISTS subscriber_tags_by_key")
        connection.exec_driver_sql("DROP INDEX IF EXISTS campaigns_by_status")
        connection.exec_driver_sql("DROP INDEX IF EXISTS events_signups_by_time")
        connection.exec_driver_sql("DROP TABLE IF EXISTS bounce_messages")
        connection.exec_driver_sql("DROP INDEX IF EXISTS campaigns_by_list")
        connection.exec_driver_sql("DROP INDEX IF EXISTS deliveries_by_subscriber")
        for table, columns in added.items():
            for column in columns:
                connection.exec_driver_sql(f"ALTER TABLE {table} DROP COLUMN {column}")
        insert = sa.text(
            "INSERT INTO campaigns (id, list_id, issue_slug, content_hash, subject, created_at, finished_at) "
            "VALUES (:id, 1, 'x', 'h', 's', :at, :finished)"
        ).bindparams(
            sa.bindparam("at", type_=sa.DateTime(timezone=True)),
            sa.bindparam("finished", type_=sa.DateTime(timezone=True)),
        )
        connection.execute(
            insert, [{"id": 1, "at": now(), "finished": now()}, {"id": 2, "at": now(), "finished": None}]
        )
    assert store.version() == 2
    assert store.upgrade() == [number for number in NUMBERS if number >= 3]
    assert "events_signups_by_time" in {index["name"] for index in sa.inspect(store.engine).get_indexes("events")}
    assert sa.inspect(store.engine).has_table("webhook_tokens")
    columns = {table: {c["name"] for c in sa.inspect(store.engine).get_columns(table)} for table in added}
    assert all(set(names) <= columns[table] for table, names in added.items())
    assert [(c.id, c.status, c.started_at is not None) for c in (store.campaign(1), store.campaign(2))] == [
        (1, "finished", True),
        (2, "running", True),
    ]
    store.close()


def test_a_migration_numbered_below_the_version_is_still_applied(database_url):
    """Two branches numbered theirs 10 and 11: a database that got 11 first still gets 10 once it exists. Here 9
    stands for it: taken away from a store at the latest version, upgrade applies it alone, once; opening says so."""
    import sqlalchemy as sa

    store = Store.open(database_url, upgrade=True)
    with store.engine.begin() as connection:
        connection.exec_driver_sql("DELETE FROM schema_version WHERE version = 9")
        connection.exec_driver_sql("DROP TABLE bounce_messages")
    assert store.version() == MIGRATIONS[-1][0] and store.missing() == [9]
    if store.engine.dialect.name == "postgresql":
        with pytest.raises(NewsletterError, match="run `newsletter db upgrade`"):
            Store.open(database_url)
    assert store.upgrade() == [9] and store.upgrade() == []
    assert sa.inspect(store.engine).has_table("bounce_messages") and store.missing() == []
    store.close()


def test_postgresql_is_migrated_only_by_db_upgrade(postgresql, monkeypatch, tmp_path):
    from typer.testing import CliRunner

    from newsletter.cli import app

    url = postgresql.new_database()
    with pytest.raises(NewsletterError, match="schema version 0 .* run `newsletter db upgrade`"):
        Store.open(url)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("NEWSLETTER_DATABASE_URL", url)
    result = CliRunner().invoke(app, ["db", "upgrade"])
    applied = ", ".join(map(str, NUMBERS))
    assert result.exit_code == 0 and f"applied {applied} (schema version 12)" in result.stdout
    assert "already up to date" in CliRunner().invoke(app, ["db", "upgrade"]).stdout
    Store.open(url).close()
