"""The README's command reference is the commands' own --help, and its MCP tool list the server's own tools.

Rewrite both with `python tests/test_readme.py --write`.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

from typer.testing import CliRunner

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
BLOCK = re.compile(r"(<!-- commands:start[^\n]*-->\n)(.*?)(<!-- commands:end -->)", re.DOTALL)
MCP_BLOCK = re.compile(r"(<!-- mcp-tools:start[^\n]*-->\n)(.*?)(<!-- mcp-tools:end -->)", re.DOTALL)


def commands() -> list[tuple[str, ...]]:
    """Every command, those of each group included, in the order `newsletter --help` lists them."""
    import typer.main

    from newsletter.cli import app

    def walk(command, path: tuple[str, ...]):
        if not hasattr(command, "list_commands"):
            yield path
            return
        for name, found in command.commands.items():  # in the order they were declared, as --help shows them
            if not found.hidden:
                yield from walk(found, (*path, name))

    return list(walk(typer.main.get_command(app), ()))


def command_reference() -> str:
    from newsletter.cli import app

    runner = CliRunner()
    parts = []
    for command in commands():
        result = runner.invoke(app, [*command, "--help"], prog_name="newsletter", terminal_width=100)
        parts.append(result.output.rstrip())
    return "```\n" + "\n\n".join(parts) + "\n```\n"


def mcp_tool_list() -> str:
    """One line per tool of `newsletter mcp`, from the server itself: its arguments and the first line it says."""
    import asyncio

    from newsletter.mcp import create_server

    lines = []
    for tool in asyncio.run(create_server(ROOT).list_tools()):
        schema = tool.input_schema
        arguments = []
        for name, prop in schema["properties"].items():
            if name in schema.get("required", []):
                arguments.append(name)
            else:
                default = prop.get("default")
                arguments.append(f"{name}?" if default is None else f"{name}={json.dumps(default)}")
        lines.append(f"- `{tool.name}({', '.join(arguments)})`: {tool.description.splitlines()[0]}")
    return "\n".join(lines) + "\n"


def test_readme_mcp_tool_list_is_current():
    match = MCP_BLOCK.search(README.read_text(encoding="utf-8"))
    assert match, "README.md lost its mcp-tools block"
    assert match.group(2) == mcp_tool_list(), "run: python tests/test_readme.py --write"


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
    text = BLOCK.sub(lambda m: m.group(1) + command_reference() + m.group(3), text)
    text = MCP_BLOCK.sub(lambda m: m.group(1) + mcp_tool_list() + m.group(3), text)
    README.write_text(text, encoding="utf-8")
