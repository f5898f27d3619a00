"""What the benchmarks share: a workspace of the example issue, and `newsletter` run as a child process that reports
its own peak resident memory (VmHWM, read from /proc/self/status as it exits: that process's peak alone)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SLUG = "2024-11-forum-des-alliances"
SECRET = "bench-secret-key-0123456789abcdef"

# Runs `python -m newsletter ARGS…` and, as it exits, writes its own peak resident memory (KB) to $PEAK_FILE.
PEAK_WRAPPER = """
import atexit, os, runpy, sys
def peak():
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            open(os.environ["PEAK_FILE"], "w").write(line.split()[1])
atexit.register(peak)
sys.argv = ["newsletter", *sys.argv[1:]]
runpy.run_module("newsletter", run_name="__main__")
"""


def workspace(folder: Path) -> Path:
    shutil.copy(ROOT / "newsletter.toml", folder / "newsletter.toml")
    shutil.copytree(ROOT / "issues" / SLUG, folder / "issues" / SLUG)
    return folder


def newsletter(folder: Path, *args: str, stdout=subprocess.DEVNULL) -> tuple[float, int, str]:
    """Run `newsletter ARGS` in the workspace: (seconds, peak memory in KB, what it printed on stdout)."""
    peak_file = folder / "peak"
    peak_file.unlink(missing_ok=True)
    environment = {**os.environ, "PEAK_FILE": str(peak_file), "PYTHONPATH": str(ROOT)}
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-c", PEAK_WRAPPER, *args],
        cwd=folder,
        env=environment,
        stdout=stdout,
        stderr=subprocess.PIPE,
        text=True,
    )
    seconds = time.perf_counter() - started
    if done.returncode:
        raise SystemExit(f"newsletter {' '.join(args)} failed ({done.returncode}): {done.stderr[-2000:]}")
    return seconds, int(peak_file.read_text()), done.stdout if stdout == subprocess.PIPE else ""


def mb(kb: int) -> str:
    return f"{kb / 1024:.0f} MB"
