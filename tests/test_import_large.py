"""A large import killed in the middle (SIGKILL, a real `python -m newsletter` process), then run again: the
batches it committed are whole, and the rerun ends with the counts of an import never interrupted."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import sqlalchemy as sa
from conftest import CONFIG, ROOT

from newsletter.store import Store, events, memberships
from newsletter.subscribers import add, remove

ROWS = 200_000
LEFT = 1_000  # members of the list who unsubscribed before the import: never subscribed again


@pytest.fixture
def store(database_url):
    store = Store.open(database_url)
    yield store
    store.close()


def write_csv(path: Path) -> None:
    """ROWS rows: one in 500 a duplicate by case of the row before it, one in 500 invalid."""
    with path.open("w", encoding="utf-8", newline="") as file:
        file.write("courriel;nom\n")
        for number in range(ROWS):
            if number % 500 == 1:
                file.write(f"Abonne{number - 1}@Example.org;Doublon\n")
            elif number % 500 == 2:
                file.write(f"abonne {number}@example.org;Invalide\n")
            else:
                file.write(f"abonne{number}@example.org;Abonné·e {number}\n")


def counts(store: Store, list_id: int) -> tuple[int, int, int]:
    """(memberships of the list, of them subscribed, `subscribed` events of the list)."""
    with store.engine.connect() as connection:
        total, subscribed = connection.execute(
            sa.select(sa.func.count(), sa.func.count().filter(memberships.c.status == "subscribed")).where(
                memberships.c.list_id == list_id
            )
        ).one()
        logged = connection.execute(
            sa.select(sa.func.count()).where(events.c.list_id == list_id, events.c.kind == "subscribed")
        ).scalar_one()
    return total, subscribed, logged


def peak_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return 0


def test_an_import_killed_in_the_middle_then_run_again_gives_the_right_counts(store, database_url, tmp_path):
    (tmp_path / "newsletter.toml").write_text(CONFIG, encoding="utf-8")
    write_csv(tmp_path / "big.csv")
    for number in range(0, LEFT * 100, 100):  # people who left: some in the first batches, some after
        add(store, "big", f"abonne{number + 10}@example.org", None)
        remove(store, "big", f"abonne{number + 10}@example.org")
    list_id = store.list_id("big")
    rejected = 2 * (ROWS // 500)
    valid = ROWS - rejected
    command = [sys.executable, "-m", "newsletter", "subscribers", "import", "big.csv", "--list", "big", "--json"]
    environment = {**os.environ, "NEWSLETTER_DATABASE_URL": database_url, "PYTHONPATH": str(ROOT)}

    process = subprocess.Popen(command, cwd=tmp_path, env=environment, stdout=subprocess.PIPE)
    try:
        while counts(store, list_id)[0] < LEFT + 40_000:  # some batches in, most still to come
            assert process.poll() is None, "the import ended before it could be killed"
            time.sleep(0.05)
        peak = peak_kb(process.pid)
        process.send_signal(signal.SIGKILL)
    finally:
        process.kill()
        process.communicate()
    assert peak < 150 * 1024, f"peak memory {peak // 1024} MB"
    total, subscribed, logged = counts(store, list_id)
    assert LEFT + 40_000 <= total < LEFT + valid
    assert subscribed == logged - LEFT  # each subscription with its event: no batch half-written
    assert total - subscribed == LEFT

    done = subprocess.run(command, cwd=tmp_path, env=environment, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["added"] + report["unchanged"] == valid - LEFT
    assert report["unchanged"] == subscribed and report["updated"] == 0
    assert (report["refused_count"], report["rejected_count"]) == (LEFT, rejected)
    assert len(report["rejected"]) == 100 and report["rejected"][0] == {
        "file": "big.csv",
        "line": 3,
        "reason": "duplicate of line 2 (Abonne0@example.org)",
    }
    assert counts(store, list_id) == (valid, valid - LEFT, valid)  # the people who left: still unsubscribed
