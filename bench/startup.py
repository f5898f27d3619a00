"""How long the CLI takes to start: `--version`, `--help` and `send --help` beside a bare `python -c pass`.

    .venv/bin/python bench/startup.py [--runs 20] [--importtime]

Each command runs `runs` times in a fresh subprocess (this interpreter, `-m newsletter`, this checkout first on
PYTHONPATH), alternating with the others so that a busy machine slows them alike; it prints each one's median and
its difference with the bare interpreter's, which is what importing the CLI costs. The target (issue 19): `--help`
and `--version` within 0.2 s of the bare interpreter, since an agent pays it on every call. --importtime also
prints the slowest imports of `newsletter --version` (python -X importtime, cumulative).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TARGET = 0.2  # seconds over the bare interpreter
COMMANDS = {
    "python -c pass": ["-c", "pass"],
    "newsletter --version": ["-m", "newsletter", "--version"],
    "newsletter --help": ["-m", "newsletter", "--help"],
    "newsletter send --help": ["-m", "newsletter", "send", "--help"],
}
TARGETED = ("newsletter --version", "newsletter --help")  # a command's --help also builds its options (typer)
ENVIRONMENT = {**os.environ, "PYTHONPATH": str(ROOT)}


def timed(arguments: list[str]) -> float:
    started = time.perf_counter()
    subprocess.run([sys.executable, *arguments], env=ENVIRONMENT, stdout=subprocess.DEVNULL, check=True)
    return time.perf_counter() - started


def slowest_imports(count: int = 15) -> list[tuple[int, str]]:
    """(cumulative microseconds, module) of the slowest imports of `newsletter --version`."""
    found = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "newsletter", "--version"],
        env=ENVIRONMENT,
        capture_output=True,
        text=True,
        check=True,
    ).stderr
    rows = []
    for line in found.splitlines():
        if line.startswith("import time:") and "|" in line and "cumulative" not in line:
            _, cumulative, name = line.split("|")
            rows.append((int(cumulative), name.rstrip()))
    return sorted(rows, reverse=True)[:count]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20, help="runs of each command (default 20)")
    parser.add_argument("--importtime", action="store_true", help="also show the slowest imports of --version")
    options = parser.parse_args()

    for arguments in COMMANDS.values():  # once each first: the files in the page cache, the .pyc written
        timed(arguments)
    times: dict[str, list[float]] = {name: [] for name in COMMANDS}
    for _ in range(options.runs):
        for name, arguments in COMMANDS.items():
            times[name].append(timed(arguments))

    bare = statistics.median(times["python -c pass"])
    print(f"{options.runs} runs each, {sys.executable} ({sys.version.split()[0]})")
    print(f"{'command':<26}{'median':>10}{'min':>10}{'over bare':>12}")
    late = []
    for name, found in times.items():
        median, over = statistics.median(found), statistics.median(found) - bare
        print(f"{name:<26}{median:>9.3f}s{min(found):>9.3f}s{over:>+11.3f}s")
        if name in TARGETED and over > TARGET:
            late.append(name)
    print(
        f"target, --version and --help within {TARGET:.1f} s of the bare interpreter: "
        + (f"MISSED by {', '.join(late)}" if late else "met")
    )
    if options.importtime:
        print("\nslowest imports of `newsletter --version` (cumulative):")
        for microseconds, name in slowest_imports():
            print(f"{microseconds / 1000:>9.1f} ms  {name}")


if __name__ == "__main__":
    main()
