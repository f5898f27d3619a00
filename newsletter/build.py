"""Write a checked, rendered issue to build/<slug>/: index.html, index.txt, issue.mjml, images/ and each event's
.ics (event-3.ics for sections[3]), which its "add to calendar" link names.

index.html and index.txt are the web version: placeholders hold neutral values (render.web_values), so the
folder can be opened from disk or published as is. Every file is written under a temporary name and renamed,
so an interrupted build never leaves half a file.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from newsletter.checks import check_issue
from newsletter.errors import Diagnostic, IssueError
from newsletter.events import CALENDAR_NAME
from newsletter.render import web_values
from newsletter.workspace import Workspace


@dataclass
class BuildResult:
    folder: Path
    html: Path
    text: Path
    html_bytes: int
    warnings: list[Diagnostic]

    def to_json(self) -> dict:
        return {
            "html": str(self.html),
            "text": str(self.text),
            "html_bytes": self.html_bytes,
            "warnings": [w.to_json() for w in self.warnings],
        }


def build_issue(workspace: Workspace, folder: Path, out_dir: Path | None = None) -> BuildResult:
    """Check and render the issue, then write it to out_dir (default build/<slug>). Raise IssueError on errors."""
    result = check_issue(
        folder, workspace.config, workspace.templates_dir, asset_base_url=workspace.config.asset_base_url
    )
    if not result.report.ok or result.rendered is None:
        raise IssueError(result.report.errors)
    rendered = result.rendered
    out = out_dir or workspace.build_dir / rendered.slug
    out.mkdir(parents=True, exist_ok=True)
    html, text = rendered.fill(web_values(workspace.config, rendered.slug, rendered.lang))
    _write(out / "index.html", html.encode("utf-8"))
    _write(out / "index.txt", text.encode("utf-8"))
    _write(out / "issue.mjml", rendered.mjml.encode("utf-8"))
    images = out / "images"
    if images.exists():
        shutil.rmtree(images)  # no stale images from an earlier build
    for name, source in rendered.images.items():
        target = images / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, target)
    for name, calendar in rendered.calendars.items():
        _write(out / name, calendar.encode("utf-8"))
    for stale in out.glob("event-*.ics"):  # an event removed since an earlier build
        if CALENDAR_NAME.fullmatch(stale.name) and stale.name not in rendered.calendars:
            stale.unlink()
    return BuildResult(out, out / "index.html", out / "index.txt", len(html.encode("utf-8")), result.report.warnings)


def _write(path: Path, data: bytes) -> None:
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.write_bytes(data)
    os.replace(temporary, path)
