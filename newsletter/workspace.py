"""A workspace: the folder holding newsletter.toml, issues/, templates/, subscribers/ and build/.

Finds it, resolves an ISSUE argument (a folder or a slug), and scaffolds new workspaces and issues.
"""

from __future__ import annotations

import datetime as dt
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from string import Template

from newsletter.config import CONFIG_FILE, Config, load_config
from newsletter.errors import Diagnostic, NewsletterError
from newsletter.i18n import LANGUAGES
from newsletter.issue import ISSUE_FILE, SECTION_TYPES, issue_json_schema
from newsletter.reuse import copy_images, previous_issue, reuse_issue

SKELETON = Path(__file__).parent / "skeleton"
SCHEMA_FILE = "issue.schema.json"
AGENTS_FILE = "AGENTS.md"  # how an agent works in the workspace
SLUG_MAX = 100  # a folder name every file system takes, with room for build/<slug>/images/<name>
SLUG = re.compile(rf"[a-z0-9][a-z0-9-]{{0,{SLUG_MAX - 1}}}")  # fullmatch only: `$` would take "evil\n"


def is_slug(name: object) -> bool:
    """Whether name can name an issue: the one rule of the CLI and every MCP tool."""
    return isinstance(name, str) and SLUG.fullmatch(name) is not None


def shown_name(name: object) -> str:
    """A name as an error message quotes it: on one line (control characters escaped), and not too long."""
    return repr(name if not isinstance(name, str) or len(name) <= 60 else name[:60] + "…")


@dataclass
class Workspace:
    root: Path
    config: Config

    @property
    def issues_dir(self) -> Path:
        return self.root / "issues"

    @property
    def templates_dir(self) -> Path:
        return self.root / "templates"

    @property
    def build_dir(self) -> Path:
        return self.root / "build"

    @classmethod
    def discover(cls, start: Path | None = None) -> Workspace:
        """The workspace holding start: the nearest folder upwards with a newsletter.toml, else start."""
        start = (start or Path.cwd()).resolve()
        for folder in (start, *start.parents):
            if (folder / CONFIG_FILE).is_file():
                return cls(folder, load_config(folder))
        root = start.parent if start.name == "issues" else start
        return cls(root, load_config(root))

    @classmethod
    def for_issue(cls, ref: str) -> tuple[Workspace, Path]:
        """Resolve ISSUE (a folder, its issue.yaml, or a slug under issues/) and the workspace around it."""
        path = Path(ref)
        if path.name == ISSUE_FILE and path.is_file():
            path = path.parent
        if path.is_dir():
            folder = path.resolve()
            return cls.discover(folder.parent), folder
        workspace = cls.discover()
        folder = workspace.issues_dir / ref
        if is_slug(ref) and folder.is_dir():
            return workspace, folder
        raise NewsletterError(
            f"no issue {shown_name(ref)}: neither a folder nor a slug in {workspace.issues_dir}; "
            "list them with `ls issues/` or create one with `newsletter new SLUG`"
        )


def init_workspace(target: Path, name: str, lang: str, *, force: bool = False) -> list[Path]:
    """Create a workspace in target: newsletter.toml, issues/, templates/, subscribers/, .gitignore, schema, AGENTS."""
    if lang not in LANGUAGES:
        raise NewsletterError(f"unknown language '{lang}'; use one of: {', '.join(LANGUAGES)}")
    config = target / CONFIG_FILE
    if config.exists() and not force:
        raise NewsletterError(f"{config} already exists; this is a workspace already (--force rewrites it)")
    for folder in ("issues", "templates", "subscribers"):
        (target / folder).mkdir(parents=True, exist_ok=True)
    toml_name = name.replace("\\", "\\\\").replace('"', '\\"')
    written = {
        config: Template((SKELETON / "newsletter.toml").read_text()).substitute(name=toml_name, lang=lang),
        target / ".gitignore": (SKELETON / "gitignore").read_text(),
        target / "templates" / "README.md": (SKELETON / "templates-README.md").read_text(),
        target / "subscribers" / ".gitkeep": "",
        target / SCHEMA_FILE: schema_text(),
        target / AGENTS_FILE: Template((SKELETON / AGENTS_FILE).read_text(encoding="utf-8")).safe_substitute(name=name),
    }
    for path, text in written.items():
        if path.name in (".gitignore", AGENTS_FILE) and path.exists() and not force:
            continue  # the folder's own, perhaps: a repository's AGENTS.md for its code
        path.write_text(text, encoding="utf-8")
    return sorted(written)


@dataclass
class NewIssue:
    """An issue just created: its issue.yaml and, when made from a previous issue, what was taken from it."""

    file: Path
    images: list[str] = field(default_factory=list)  # the srcs copied from the previous issue's folder
    cleared: list[str] = field(default_factory=list)  # YAML paths of the dates cleared
    warnings: list[Diagnostic] = field(default_factory=list)  # images that could not be copied

    @property
    def folder(self) -> Path:
        return self.file.parent

    def to_json(self) -> dict:
        return {
            "issue": str(self.folder),
            "file": str(self.file),
            "images": self.images,
            "cleared_dates": self.cleared,
            "warnings": [w.to_json() for w in self.warnings],
        }


def new_issue(
    workspace: Workspace,
    slug: str,
    *,
    lang: str | None = None,
    from_issue: str | None = None,
    today: dt.date | None = None,
) -> NewIssue:
    """Create issues/<slug>/issue.yaml from the commented skeleton, or from the issue from_issue; never overwrite.

    From a previous issue: its YAML as its author wrote it, dated today, its other dates cleared, a comment above
    what to replace, and the images it uses copied to the same paths (see newsletter.reuse).
    """
    if not is_slug(slug):
        raise NewsletterError(
            f"{shown_name(slug)} is not a valid slug: use lowercase letters, digits and hyphens (at most {SLUG_MAX}), "
            "e.g. 2025-02-hiver"
        )
    previous = None
    if from_issue is not None:
        previous = previous_issue(_previous_folder(workspace, from_issue))
    lang = lang or (previous.model.lang if previous else workspace.config.lang)
    if lang not in LANGUAGES:
        raise NewsletterError(f"unknown language '{lang}'; use one of: {', '.join(LANGUAGES)}")
    folder = workspace.issues_dir / slug
    if (folder / ISSUE_FILE).exists() or (folder / ISSUE_FILE).is_symlink():
        raise NewsletterError(f"{folder / ISSUE_FILE} already exists; pick another slug or edit that file")
    if folder.exists() and folder.resolve().parent != workspace.issues_dir.resolve():
        raise NewsletterError(f"issues/{slug} leads outside {workspace.issues_dir}; refused")
    today = today or dt.date.today()
    if previous is None:
        (folder / "images").mkdir(parents=True, exist_ok=True)
        text = Template((SKELETON / "issue.yaml").read_text()).substitute(
            name=workspace.config.name,
            slug=slug,
            lang=lang,
            date=today.isoformat(),
            types=", ".join(SECTION_TYPES),
        )
        (folder / ISSUE_FILE).write_text(text, encoding="utf-8")
        return NewIssue(folder / ISSUE_FILE)

    reused = reuse_issue(previous, lang=lang, today=today)  # everything is known before anything is written
    (folder / "images").mkdir(parents=True, exist_ok=True)
    copied = copy_images(reused, folder)
    (folder / ISSUE_FILE).write_bytes(reused.text.encode("utf-8"))  # its line breaks as they were
    return NewIssue(folder / ISSUE_FILE, copied, reused.cleared, reused.warnings)


def _previous_folder(workspace: Workspace, name: str) -> Path:
    """The folder of the previous issue named `name`: a slug under issues/, confined as every slug is."""
    if not is_slug(name):
        raise NewsletterError(
            f"{shown_name(name)} is not an issue's slug: name the previous issue by its folder under issues/ "
            "(lowercase letters, digits and hyphens), e.g. --from 2024-11-forum-des-alliances"
        )
    issues = workspace.issues_dir.resolve()
    folder = (workspace.issues_dir / name).resolve()
    if folder.parent != issues:
        raise NewsletterError(f"issues/{name} leads outside {issues}; refused")
    file = folder / ISSUE_FILE
    if not file.is_file():
        raise NewsletterError(f"no previous issue '{name}' in {issues}: `ls issues/` lists them")
    if file.resolve().parent != folder:
        raise NewsletterError(f"issues/{name}/{ISSUE_FILE} leads outside that issue's folder; refused")
    return folder


def schema_text() -> str:
    return json.dumps(issue_json_schema(), indent=2, ensure_ascii=False) + "\n"
