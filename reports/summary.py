"""The certification summary of one run, from its allure results: JSON for machines,
Markdown for people.

It holds the target's identity and versions and the run's environment
(``reports.environment``), the outcome of every rule case (``reports.outcomes``), the
counts per area, the failures grouped by probable cause (``reports.causes``), the coherency
and ACL matrices (``reports.matrices``), and a hash of the outcomes, so that two runs on the
same target compare (``reports.compare``) and a summary can be checked against its results.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from reports import causes, environment, matrices
from reports.outcomes import (
    FAILED_OPTIONAL,
    FAILED_REQUIRED,
    HARNESS_ERROR,
    KNOWN_DEVIATION,
    NOT_APPLICABLE,
    OUTCOMES,
    PASSED,
    Outcome,
    read,
)

SCHEMA = 1
VERDICTS = {True: "no required rule failed, and the suite did not break",
            False: "required rules failed (or the suite broke: see harness errors)"}
WORST_FIRST = (HARNESS_ERROR, FAILED_REQUIRED, FAILED_OPTIONAL, KNOWN_DEVIATION, NOT_APPLICABLE, PASSED)


def case_table(outcomes: Iterable[Outcome]) -> dict[str, dict[str, str]]:
    """Case (rule with its parameters) -> what it came to; a case run more than once (a rule
    parametrized in its body) keeps the worst outcome."""
    table: dict[str, dict[str, str]] = {}
    for outcome in outcomes:
        entry = {"rule": outcome.rule, "area": outcome.area, "level": outcome.level,
                 "outcome": outcome.outcome,
                 "message": outcome.message.splitlines()[0][:300] if outcome.message else ""}
        if outcome.outcome in (FAILED_REQUIRED, FAILED_OPTIONAL, HARNESS_ERROR):
            entry["rerun"] = rerun(outcome)
        held = table.get(outcome.case)
        if held is None or WORST_FIRST.index(entry["outcome"]) < WORST_FIRST.index(held["outcome"]):
            table[outcome.case] = entry
    return dict(sorted(table.items()))


def rerun(outcome: Outcome) -> str:
    """The command that runs this rule again against the same target."""
    return f"pytest conformance --target '{outcome.target}' --rule {outcome.rule}"


def outcome_hash(cases: dict[str, dict[str, str]]) -> str:
    """sha256 over every case and its outcome (not the messages, which carry timings)."""
    canonical = json.dumps({case: entry["outcome"] for case, entry in cases.items()}, sort_keys=True)
    return hashlib.sha256(canonical.encode()).hexdigest()


def build(results: list[Path]) -> dict[str, Any]:
    outcomes = read(results)
    cases = case_table(outcomes)
    areas: dict[str, Counter[str]] = {}
    for entry in cases.values():
        areas.setdefault(entry["area"] or "other", Counter())[entry["outcome"]] += 1
    env: dict[str, str] = {}
    for directory in results:
        env.update(environment.read(directory))
    tables = matrices.build(results)
    groups = causes.group(outcomes)
    return {
        "schema": SCHEMA,
        "target": {"spec": env.get("target", ""), "version": env.get("target.version", "")},
        "environment": env,
        "totals": {name: sum(a[name] for a in areas.values()) for name in OUTCOMES},
        "areas": {area: {name: counts[name] for name in OUTCOMES} for area, counts in sorted(areas.items())},
        "causes": [{"cause": g.cause, "rules": g.rules, "cases": len(g.failures),
                    "example": {"case": g.example.case, "message": g.example.message.splitlines()[0][:300]
                                if g.example.message else ""}} for g in groups],
        "cases": cases,
        "matrices": {name: json.loads(matrices.as_json(table)) for name, table in tables.items()},
        "hash": outcome_hash(cases),
        "certified": not any(e["outcome"] in (FAILED_REQUIRED, HARNESS_ERROR) for e in cases.values()),
    }


def markdown(summary: dict[str, Any]) -> str:
    env = summary["environment"]
    lines = [f"# fusecheck certification summary: {summary['target']['spec'] or '?'}", "",
             f"- target: `{summary['target']['spec']}` ({summary['target']['version'] or 'version unknown'})",
             *(f"- {key}: {value}" for key, value in env.items() if key not in ("target", "target.version")),
             f"- outcomes hash: `{summary['hash']}`",
             f"- verdict: {VERDICTS[summary['certified']]}", "",
             "## Per area", "", "| area | " + " | ".join(OUTCOMES) + " |",
             "| --- |" + " ---: |" * len(OUTCOMES)]
    for area, counts in summary["areas"].items():
        lines.append(f"| {area} | " + " | ".join(str(counts[name]) for name in OUTCOMES) + " |")
    lines.append("| **all** | " + " | ".join(f"**{summary['totals'][name]}**" for name in OUTCOMES) + " |")
    lines += ["", "## Failures by probable cause", ""]
    if not summary["causes"]:
        lines.append("None.")
    for group in summary["causes"]:
        count = len(group["rules"])
        lines.append(f"- **{group['cause']}**: {count} rule{'s' if count != 1 else ''} "
                     f"({group['cases']} case{'s' if group['cases'] != 1 else ''}), e.g. "
                     f"{group['example']['case']}: {group['example']['message']}")
        again = summary["cases"].get(group["example"]["case"], {}).get("rerun")
        if again:
            lines.append(f"  (again: `{again}`)")
    deviations = [(case, e) for case, e in summary["cases"].items() if e["outcome"] == KNOWN_DEVIATION]
    if deviations:
        lines += ["", "## Known deviations (expected failures, with their reasons)", ""]
        lines += [f"- {case}: {e['message'].removeprefix('XFAIL ')}" for case, e in deviations]
    for name, (corner, title) in matrices.CORNERS.items():
        table = summary["matrices"].get(name) or {}
        lines += ["", f"## {title}", ""]
        lines.append(matrices.markdown(matrices.from_json(table), corner) if table else "No results.")
    lines += ["", "## Every case", "", "| case | level | outcome | why |", "| --- | --- | --- | --- |"]
    for case, entry in summary["cases"].items():
        why = entry["message"].replace("|", "\\|")[:160]
        lines.append(f"| {case} | {entry['level'] or '-'} | {entry['outcome']} | {why} |")
    return "\n".join(lines) + "\n"


def write(summary: dict[str, Any], out: Path) -> tuple[Path, Path]:
    out.mkdir(parents=True, exist_ok=True)
    as_json, as_md = out / "summary.json", out / "summary.md"
    as_json.write_text(json.dumps(summary, indent=1, sort_keys=False) + "\n")
    as_md.write_text(markdown(summary))
    return as_json, as_md
