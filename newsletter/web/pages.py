"""The pages `serve` shows, and the sign-up form and confirmation email, rendered from Jinja2 templates in
templates/pages/ (the workspace's override the package's, as for the email), with one stylesheet at
/assets/page.css so that no page needs inline style."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlsplit

import jinja2
from starlette.responses import HTMLResponse, Response

from newsletter.config import Config
from newsletter.i18n import translate
from newsletter.render import PACKAGE_TEMPLATES


class Pages:
    def __init__(self, config: Config, templates_dir: Path | None):
        loaders: list[jinja2.BaseLoader] = []
        if templates_dir is not None:
            loaders.append(jinja2.FileSystemLoader(templates_dir / "pages"))
        loaders.append(jinja2.FileSystemLoader(PACKAGE_TEMPLATES / "pages"))
        self.env = jinja2.Environment(
            loader=jinja2.ChoiceLoader(loaders),
            autoescape=jinja2.select_autoescape(disabled_extensions=("txt.j2",), default=True),
            undefined=jinja2.StrictUndefined,
            trim_blocks=True,
            lstrip_blocks=True,
            auto_reload=False,
        )
        self.env.globals["t"] = jinja2.pass_context(lambda ctx, key, **values: translate(ctx["lang"], key, **values))
        # Where the pages live below the host, from base_url (https://example.org/bulletin -> /bulletin).
        self.env.globals["root"] = urlsplit(config.base_url or "").path.rstrip("/")
        self.env.globals["newsletter"] = config.name
        self.css = self.env.loader.get_source(self.env, "page.css")[0]

    def text(self, name: str, lang: str, **values) -> str:
        """The page rendered; a `root` value replaces base_url's path in the pages' links (`newsletter archive`
        gives "." so that the stylesheet is found relative to the page, from disk or under any prefix)."""
        return self.env.get_template(name).render(lang=lang, **values)

    def render(self, name: str, lang: str, status: int = 200, **values) -> HTMLResponse:
        return HTMLResponse(self.text(name, lang, **values), status_code=status)

    def stylesheet(self) -> Response:
        return Response(self.css, media_type="text/css", headers={"Cache-Control": "public, max-age=3600"})
