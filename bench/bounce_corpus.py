"""The bounce classifier (newsletter.bounces.classify) on the whole corpus of tests/fixtures/bounces/, scored
against the labels of expected.toml: how many files, how many of the addresses the labels name were found right,
found wrong or not found, how many reports of each kind were classified right, wrong or "unknown", how many
failures' hard/soft were right or wrong, and the figure that matters most, the wrong hard bounces (a subscriber
who would be removed and should not be), which must be 0.

    .venv/bin/python bench/bounce_corpus.py [--list]

--list prints every file's classification beside its label. No timing: the classifier's speed is not the point.
"""

from __future__ import annotations

import argparse
import sys
import tomllib
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from newsletter.bounces.classify import BounceParseError, Report, classify  # noqa: E402

CORPUS = ROOT / "tests" / "fixtures" / "bounces"


@dataclass
class Score:
    files: int = 0
    addresses: Counter[str] = field(default_factory=Counter)  # right, wrong, none
    kinds: Counter[tuple[str, str]] = field(default_factory=Counter)  # (expected kind, right/wrong/unknown)
    severities: Counter[str] = field(default_factory=Counter)  # right, wrong (on the addresses found)
    wrong_hard: list[str] = field(default_factory=list)
    lines: list[str] = field(default_factory=list)


def _names(failure_address: str | None, original: str | None) -> set[str]:
    return {a.lower() for a in (failure_address, original) if a}


def score_file(name: str, label: dict, report: Report | None, score: Score) -> None:
    """Add one file's comparison to `score`."""
    score.files += 1
    expected_kind = label["kind"]
    got_kind = report.kind if report else "unknown"
    verdict = "right" if got_kind == expected_kind else ("unknown" if got_kind == "unknown" else "wrong")
    score.kinds[(expected_kind, verdict)] += 1
    failures = report.failures if report and report.kind == "bounce" else ()
    expected = {f["address"].lower(): f for f in label["failures"]} if expected_kind == "bounce" else {}
    matched: set[int] = set()
    for address, wanted in expected.items():
        index = next((i for i, f in enumerate(failures) if address in _names(f.address, f.original)), None)
        if index is None:
            score.addresses["none"] += 1
            continue
        matched.add(index)
        score.addresses["right"] += 1
        if failures[index].severity == wanted["severity"]:
            score.severities["right"] += 1
        else:
            score.severities["wrong"] += 1
            score.severities[f"{failures[index].severity} where {wanted['severity']}"] += 1
    for index, failure in enumerate(failures):
        if index in matched:
            continue
        if failure.address:
            score.addresses["wrong"] += 1
    for failure in failures:
        names = _names(failure.address, failure.original)
        right_hard = any(expected[a]["severity"] == "hard" for a in names if a in expected)
        if failure.severity == "hard" and not right_hard:
            score.wrong_hard.append(f"{name}: {failure.address} ({failure.status}, {failure.diagnostic[:80]})")
    shown = "; ".join(f"{f.address} {f.severity}" for f in failures) if failures else ""
    labelled = "; ".join(f"{f['address']} {f['severity']}" for f in label["failures"])
    score.lines.append(f"{name:44} {got_kind:10} {shown:60} | {expected_kind:10} {labelled}")


def run() -> Score:
    labels = tomllib.loads((CORPUS / "expected.toml").read_text(encoding="utf-8"))
    score = Score()
    for name, label in sorted(labels.items()):
        try:
            report: Report | None = classify((CORPUS / name).read_bytes())
        except BounceParseError:
            report = None
        score_file(name, label, report, score)
    return score


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--list", action="store_true", help="print each file's classification and label")
    args = parser.parse_args()
    score = run()
    if args.list:
        print("\n".join(score.lines), end="\n\n")
    a, s = score.addresses, score.severities
    print(f"files: {score.files}\n")
    print("| addresses | count |")
    print("|---|---|")
    print(f"| named by the labels | {a['right'] + a['none']} |")
    print(f"| found right | {a['right']} |")
    print(f"| not found (none) | {a['none']} |")
    print(f"| found but not named by the labels (wrong) | {a['wrong']} |\n")
    print("| kind | files | right | wrong | unknown |")
    print("|---|---|---|---|---|")
    for kind in ("bounce", "complaint", "auto-reply", "challenge", "unknown"):
        counts = {v: score.kinds[(kind, v)] for v in ("right", "wrong", "unknown")}
        print(f"| {kind} | {sum(counts.values())} | {counts['right']} | {counts['wrong']} | {counts['unknown']} |")
    wrong = ", ".join(f"{n} {k}" for k, n in sorted(s.items()) if " where " in k) or "none"
    print(
        f"\nseverity (hard, soft, deferred, delivered) of the addresses found: right {s['right']}, wrong {s['wrong']}"
        f" ({wrong})"
    )
    print(f"wrong hard bounces: {len(score.wrong_hard)}")
    for line in score.wrong_hard:
        print(f"  {line}")


if __name__ == "__main__":
    main()
