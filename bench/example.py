"""The example workspace as the benchmarks use it: a copy, with the settings a user fills in before a first real
send (the repository's newsletter.toml is fictional on purpose, and a real send refuses its base_url and postal
address). The benchmarks never reach these names: they talk to 127.0.0.1 only."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SLUG = "2024-11-forum-des-alliances"
ASSET_BASE_URL = "https://crdbsl.org/bulletin"


def copy_example(folder: Path) -> Path:
    """newsletter.toml (with a real base_url and postal address) and the example issue, copied into folder."""
    toml = (ROOT / "newsletter.toml").read_text(encoding="utf-8")
    toml = toml.replace("https://bulletin.crdbsl.example", "https://bulletin.crdbsl.org")
    toml = re.sub(
        r'^postal_address = ".*"$',
        'postal_address = "320, rue Saint-Germain Est, Rimouski (Québec)  G5L 1C2"',
        toml,
        flags=re.M,
    )
    (folder / "newsletter.toml").write_text(toml, encoding="utf-8")
    shutil.copytree(ROOT / "issues" / SLUG, folder / "issues" / SLUG)
    return folder
