"""The README's command reference is the commands' own --help; rewrite it with `python tests/test_readme.py --write`."""

from __future__ import annotations

import re
import sys
from pathlib import Path

from typer.testing import CliRunner

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
COMMANDS = (
    ("init",), ("new",), ("check",), ("build",), ("preview",), ("schema",),
    ("subscribers", "import"), ("subscribers", "add"), ("subscribers", "list"), ("subscribers", "remove"),
    ("subscribers", "export"), ("subscribers", "sync"), ("send",), ("status",), ("serve",), ("db", "upgrade"),
)  # fmt: skip
BLOCK = re.compile(r"(<!-- commands:start[^\n]*-->\n)(.*?)(<!-- commands:end -->)", re.DOTALL)


def command_reference() -> str:
    from newsletter.cli import app

    runner = CliRunner()
    parts = []
    for command in COMMANDS:
        result = runner.invoke(app, [*command, "--help"], prog_name="newsletter", terminal_width=100)
        parts.append(result.output.rstrip())
    return "```\n" + "\n\n".join(parts) + "\n```\n"


def test_readme_command_reference_is_current():
    match = BLOCK.search(README.read_text(encoding="utf-8"))
    assert match, "README.md lost its commands block"
    assert match.group(2) == command_reference(), "run: python tests/test_readme.py --write"


def test_readme_quickstart_has_the_two_commands_ci_runs():
    text = README.read_text(encoding="utf-8")
    quickstart = text[text.index("## Quickstart") : text.index("## A tour")]
    assert "./dev demo" in quickstart and "./dev test" in quickstart
    assert "./dev test" in (ROOT / ".ci" / "run").read_text()


if __name__ == "__main__" and sys.argv[1:] == ["--write"]:
    sys.path.insert(0, str(ROOT))
    text = README.read_text(encoding="utf-8")
    README.write_text(BLOCK.sub(lambda m: m.group(1) + command_reference() + m.group(3), text), encoding="utf-8")
