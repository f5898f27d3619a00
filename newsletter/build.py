"""Write a checked, rendered issue to build/<slug>/: index.html, index.txt, issue.mjml, images/ and each event's
.ics (event-3.ics for sections[3]), which its "add to calendar" link names.

index.html and index.txt are the web version: placeholders hold neutral values (render.web_values), so the
folder can be opened from disk or published as is. Each translation beside issue.yaml (issue.en.yaml) is written
the same way into build/<slug>/<lang>/ (its images linked from ../images/, which the versions share); each
version's page links to the other's at its top. Every file is written under a temporary name and renamed, so an
interrupted build never leaves half a file.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from newsletter.checks import check_versions
from newsletter.errors import Diagnostic, IssueError
from newsletter.events import CALENDAR_NAME
from newsletter.i18n import LANGUAGES
from newsletter.render import RenderedIssue, version_web_values
from newsletter.workspace import Workspace


@dataclass
class BuiltVersion:
    """One version's web version: build/<slug>/index.html, or build/<slug>/en/index.html for issue.en.yaml."""

    lang: str
    html: Path
    text: Path
    html_bytes: int

    def to_json(self) -> dict:
        return {"lang": self.lang, "html": str(self.html), "text": str(self.text), "html_bytes": self.html_bytes}


@dataclass
class BuildResult:
    folder: Path
    html: Path
    text: Path
    html_bytes: int
    warnings: list[Diagnostic]
    versions: list[BuiltVersion] = field(default_factory=list)  # issue.yaml's first, then each translation's

    def to_json(self) -> dict:
        return {
            "html": str(self.html),
            "text": str(self.text),
            "html_bytes": self.html_bytes,
            "warnings": [w.to_json() for w in self.warnings],
            "versions": [version.to_json() for version in self.versions],
        }


def build_issue(workspace: Workspace, folder: Path, out_dir: Path | None = None) -> BuildResult:
    """Check and render every version of the issue, then write them to out_dir (default build/<slug>). Raise
    IssueError on errors in any of them: nothing is written then."""
    checked = check_versions(
        folder, workspace.config, workspace.templates_dir, asset_base_url=workspace.config.asset_base_url
    )
    report = checked.report
    rendered = [version.result.rendered for version in checked.versions]
    if not report.ok or any(r is None for r in rendered):
        raise IssueError(report.errors)
    versions = [r for r in rendered if r is not None]
    out = out_dir or workspace.build_dir / versions[0].slug
    out.mkdir(parents=True, exist_ok=True)
    built = [_write_version(workspace, version, out / version.path) for version in versions]
    images = out / "images"
    if images.exists():
        shutil.rmtree(images)  # no stale images from an earlier build
    for name, source in {name: source for version in versions for name, source in version.images.items()}.items():
        target = images / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, target)
    paths = {version.path for version in versions}
    for lang in LANGUAGES:  # a translation removed since an earlier build
        stale = out / f"{lang}/"
        if f"{lang}/" not in paths and (stale / "index.html").is_file():
            shutil.rmtree(stale)
    main = built[0]
    return BuildResult(out, main.html, main.text, main.html_bytes, report.warnings, built)


def _write_version(workspace: Workspace, rendered: RenderedIssue, out: Path) -> BuiltVersion:
    """One version's page, text, MJML and calendars into out (build/<slug>/, or its en/)."""
    out.mkdir(parents=True, exist_ok=True)
    html, text = rendered.fill(version_web_values(workspace.config, rendered))
    _write(out / "index.html", html.encode("utf-8"))
    _write(out / "index.txt", text.encode("utf-8"))
    _write(out / "issue.mjml", rendered.mjml.encode("utf-8"))
    for name, calendar in rendered.calendars.items():
        _write(out / name, calendar.encode("utf-8"))
    for stale in out.glob("event-*.ics"):  # an event removed since an earlier build
        if CALENDAR_NAME.fullmatch(stale.name) and stale.name not in rendered.calendars:
            stale.unlink()
    return BuiltVersion(rendered.lang, out / "index.html", out / "index.txt", len(html.encode("utf-8")))


def _write(path: Path, data: bytes) -> None:
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.write_bytes(data)
    os.replace(temporary, path)
