"""Time building the example issue, and the reference MJML (npm mjml, Node.js) on the same MJML.

    .venv/bin/python bench/render.py [--runs 50]

Prints medians in milliseconds: the whole in-process build (load, check, render, write build/), the MJML step
alone in mjml-python, and npm mjml on the same MJML when Node.js and ./dev test's copy of npm mjml are present.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

import mjml

from newsletter.build import build_issue
from newsletter.issue import load_issue
from newsletter.render import render_issue
from newsletter.workspace import Workspace

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "issues" / "2024-11-forum-des-alliances"
REFERENCE = Path(
    os.environ.get(
        "NEWSLETTER_REFERENCE_MJML",
        Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "newsletter-dev/mjml-5.4.1/node_modules/mjml",
    )
)
NODE_BENCH = """
const mjml = require(process.argv[1]);
const fs = require('fs');
const source = fs.readFileSync(0, 'utf8');
const runs = Number(process.argv[2]);
(async () => {
  await mjml(source, { fonts: {} });  // warm-up
  const times = [];
  for (let i = 0; i < runs; i++) {
    const start = process.hrtime.bigint();
    await mjml(source, { fonts: {} });
    times.push(Number(process.hrtime.bigint() - start) / 1e6);
  }
  process.stdout.write(JSON.stringify(times));
})();
"""


def median_ms(function, runs: int) -> float:
    function()  # warm-up: templates compiled, caches filled
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        function()
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=50)
    runs = parser.parse_args().runs
    workspace = Workspace.discover(EXAMPLE.parent)
    with tempfile.TemporaryDirectory() as out:
        result = build_issue(workspace, EXAMPLE, Path(out))
        source = (Path(out) / "issue.mjml").read_text()
        build = median_ms(lambda: build_issue(workspace, EXAMPLE, Path(out)), runs)
    engine = median_ms(lambda: mjml.mjml2html(source, fonts={}), runs)
    issue = load_issue(EXAMPLE)
    rendered = render_issue(issue, workspace.config, workspace.templates_dir)
    render = median_ms(lambda: render_issue(issue, workspace.config, workspace.templates_dir), runs)
    values = {
        "name": "Françoise",
        "unsubscribe_url": "https://example.org/u/" + "x" * 60,
        "view_online_url": "https://example.org/a/",
    }
    fill = median_ms(lambda: [rendered.fill(values) for _ in range(1000)], runs)
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}")
    print(f"example issue: {len(source.encode()) / 1024:.1f} KB of MJML, {result.html_bytes / 1024:.1f} KB of HTML")
    print(f"build (load, check, render, inline, write), median of {runs}: {build:.2f} ms")
    print(f"render only (Jinja2, MJML, CSS inlining, text part), median of {runs}: {render:.2f} ms")
    print(f"per-recipient placeholder fill (HTML and text), median: {fill:.1f} µs")
    print(f"mjml-python 1.4.2 on the same MJML, median of {runs}: {engine:.3f} ms")
    if shutil.which("node") is None or not (REFERENCE / "package.json").is_file():
        print("npm mjml: not measured (needs Node.js and ./dev test's copy of npm mjml)")
        return
    version = json.loads((REFERENCE / "package.json").read_text())["version"]
    done = subprocess.run(
        ["node", "-e", NODE_BENCH, str(REFERENCE), str(runs)], input=source, capture_output=True, text=True, check=True
    )
    node = statistics.median(json.loads(done.stdout))
    node_version = subprocess.run(["node", "--version"], capture_output=True, text=True).stdout.strip()
    print(f"npm mjml {version} (Node {node_version}, in-process, warm), median of {runs}: {node:.3f} ms")
    print(f"ratio: npm mjml / mjml-python = {node / engine:.1f}x; npm mjml / our whole build = {node / build:.2f}x")


if __name__ == "__main__":
    main()
