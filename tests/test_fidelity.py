"""mjml-python (MRML) renders our MJML like the reference MJML: at most 1 % of pixels differ in Chromium.

The reference is npm's mjml, which `./dev test` installs into a cache folder with this machine's Node.js
(NEWSLETTER_REFERENCE_MJML points at it). Without Node.js the comparison is skipped, loudly.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import mjml
import pytest
from browser import changed_pixel_ratio, screenshot
from conftest import EXAMPLE, FIXTURES, render_folder

from newsletter.render import keep_year_ranges_together

MAX_CHANGED = 0.01
DEFAULT_REFERENCE = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / (
    "newsletter-dev/mjml-5.4.1/node_modules/mjml"
)
NODE_RENDER = """
const mjml = require(process.argv[1]);
let source = '';
process.stdin.on('data', (chunk) => { source += chunk; });
process.stdin.on('end', async () => {
  const result = await mjml(source, { validationLevel: 'soft', fonts: {} });
  process.stdout.write(JSON.stringify({ html: result.html, errors: result.errors.map((e) => e.formattedMessage) }));
});
"""


@pytest.fixture(scope="module")
def reference_mjml() -> Path:
    if shutil.which("node") is None:
        pytest.skip("NODE.JS IS ABSENT: THE FIDELITY TEST AGAINST npm mjml WAS SKIPPED")
    module = Path(os.environ.get("NEWSLETTER_REFERENCE_MJML", DEFAULT_REFERENCE))
    if not (module / "package.json").is_file():
        pytest.fail(f"npm mjml is not installed at {module}: run ./dev test, which installs it")
    return module


def render_with_node(module: Path, source: str) -> dict:
    done = subprocess.run(
        ["node", "-e", NODE_RENDER, str(module)], input=source, capture_output=True, text=True, check=True
    )
    return json.loads(done.stdout)


@pytest.mark.parametrize("folder", [EXAMPLE, FIXTURES / "every-section"], ids=["example", "every-section"])
def test_mjml_python_matches_reference_mjml(folder, reference_mjml, chromium, tmp_path):
    rendered = render_folder(folder)
    shutil.copytree(folder / "images", tmp_path / "images")
    reference = render_with_node(reference_mjml, rendered.mjml)
    assert reference["errors"] == [], "the reference MJML validator rejects our MJML"
    # The final HTML keeps year ranges on one line (render.keep_year_ranges_together, after inlining): the other two
    # get the same spans, so that each comparison measures one thing (the engine, then the inliner).
    pages = {
        "reference": keep_year_ranges_together(reference["html"]),
        "mjml-python": keep_year_ranges_together(mjml.mjml2html(rendered.mjml, fonts={})),
        "inlined": rendered.html,  # what is sent: mjml-python's output after CSS inlining
    }
    for name, page in pages.items():
        (tmp_path / f"{name}.html").write_text(page.replace("%%", ""), encoding="utf-8")
    for width in (600, 375):
        shots = {
            name: screenshot(chromium, (tmp_path / f"{name}.html").as_uri(), width, tmp_path / f"{name}-{width}.png")
            for name in pages
        }
        engine = changed_pixel_ratio(shots["reference"], shots["mjml-python"])
        inlining = changed_pixel_ratio(shots["mjml-python"], shots["inlined"])
        print(f"{folder.name} @ {width}px: mjml-python vs npm mjml {engine:.4%}, inlined vs not {inlining:.4%}")
        assert engine <= MAX_CHANGED, f"{engine:.2%} of pixels differ from npm mjml at {width}px"
        assert inlining <= MAX_CHANGED, f"CSS inlining changed {inlining:.2%} of pixels at {width}px"
