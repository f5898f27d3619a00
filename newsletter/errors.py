"""The errors this tool raises, and the Diagnostic that `check` reports.

NewsletterError          one line for the user: where it happened, what, and what to do
 ├── ConfigError         newsletter.toml or the environment
 ├── IssueError          an issue that cannot be loaded; carries every Diagnostic found
 ├── RenderError         a template or the MJML engine failed; names the template
 ├── PreviewError        the preview server or the browser
 ├── ListNameError       a list named with anything but a slug; suggests the slug (store/lists.py)
 ├── SegmentError        a segment that does not parse, or names none of the list's; its column (segments.py)
 ├── ImportInterrupted   Ctrl-C during an import; carries the report of the rows committed (subscribers.py)
 ├── NewerContentFormat  a campaign frozen by a newer newsletter than this one (sending/frozen.py)
 ├── MailboxError        the bounce mailbox cannot be read: unreachable, TLS, login refused, folder missing
 │                       (bounces/mailbox.py)
 └── TransportError      nothing can be sent through this transport as configured, e.g. credentials refused
                         (transports/base.py)
The CLI turns any of them into `error: <message>` on stderr and a non-zero exit, the MCP server into a tool error
with that text; a traceback means a bug. sending/runner.py's LeaseExpiring and CampaignHalted are no errors: a sender
raises them inside its own batch, to give the rest of it back to the queue, and they never reach the user.
tests/test_docs.py checks that this tree names every subclass of NewsletterError.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Literal

Severity = Literal["error", "warning"]


@dataclass(frozen=True)
class Diagnostic:
    """One problem found in an issue or its configuration, located as precisely as the source allows."""

    severity: Severity
    code: str
    message: str
    file: str | None = None
    line: int | None = None
    column: int | None = None
    path: str | None = None  # the YAML path, e.g. sections[3].url

    def location(self) -> str:
        parts = [self.file or "<issue>"]
        if self.line is not None:
            parts.append(str(self.line))
            if self.column is not None:
                parts.append(str(self.column))
        return ":".join(parts)

    def format(self) -> str:
        where = f" ({self.path})" if self.path else ""
        return f"{self.location()}: {self.severity}[{self.code}] {self.message}{where}"

    def to_json(self) -> dict:
        return asdict(self)


class NewsletterError(Exception):
    """A failure the user can act on; str() is the one-line message."""


class ConfigError(NewsletterError):
    pass


class IssueError(NewsletterError):
    def __init__(self, diagnostics: list[Diagnostic]):
        self.diagnostics = diagnostics
        first = diagnostics[0].format() if diagnostics else "invalid issue"
        more = f" (and {len(diagnostics) - 1} more)" if len(diagnostics) > 1 else ""
        super().__init__(first + more)


class RenderError(NewsletterError):
    pass


class PreviewError(NewsletterError):
    pass
