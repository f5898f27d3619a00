"""The pages around the email, rendered from the Jinja2 templates in templates/pages/ (the workspace's override the
package's, as for the email): serve's pages, its sign-up form and confirmation email, `newsletter form`'s snippet
and the static archive `newsletter archive` writes. One stylesheet (page.css) so that no page needs inline style.

No web framework here: `serve` turns these into responses (web/site.py), the CLI prints or writes them.
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlsplit

import jinja2

from newsletter.config import Config
from newsletter.i18n import LANGUAGE_NAMES, translate
from newsletter.render import PACKAGE_TEMPLATES


def language_choice(offered: tuple[str, ...], lang: str) -> list[tuple[str, str]]:
    """The sign-up form's choice of language, (code, its name in itself), the page's language first (and chosen);
    none when the list has one language."""
    if len(offered) < 2:
        return []
    return [(code, LANGUAGE_NAMES[code]) for code in (lang, *(other for other in offered if other != lang))]


class Pages:
    def __init__(self, config: Config, templates_dir: Path | None):
        loaders: list[jinja2.BaseLoader] = []
        if templates_dir is not None:
            loaders.append(jinja2.FileSystemLoader(templates_dir / "pages"))
        loaders.append(jinja2.FileSystemLoader(PACKAGE_TEMPLATES / "pages"))
        loader = jinja2.ChoiceLoader(loaders)
        self.env = jinja2.Environment(
            loader=loader,
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
        self.css = loader.get_source(self.env, "page.css")[0]

    def text(self, name: str, lang: str, **values: object) -> str:
        """The page rendered; a `root` value replaces base_url's path in the pages' links (`newsletter archive`
        gives "." so that the stylesheet is found relative to the page, from disk or under any prefix)."""
        return self.env.get_template(name).render(lang=lang, **values)
