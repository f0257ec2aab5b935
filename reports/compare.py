"""``python -m reports compare A.json B.json``: the rule cases whose outcome changed between
two certification summaries, regressions first (worse in B than in A), then fixes, then
cases only one run has. Exit 1 when anything regressed, 0 otherwise, 2 on unreadable input."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from reports.summary import WORST_FIRST


@dataclass(frozen=True)
class Change:
    case: str
    before: str  # outcome in A ("" when A lacks the case)
    after: str
    message: str  # B's reason (A's when B lacks the case)

    @property
    def kind(self) -> str:
        if not self.before:
            return "new"
        if not self.after:
            return "gone"
        worse = WORST_FIRST.index(self.after) < WORST_FIRST.index(self.before)
        return "regression" if worse else "fixed"


ORDER = ("regression", "fixed", "new", "gone")


def changes(a: dict[str, Any], b: dict[str, Any]) -> list[Change]:
    before, after = a["cases"], b["cases"]
    found = []
    for case in sorted(set(before) | set(after)):
        was, now = before.get(case, {}), after.get(case, {})
        if was.get("outcome") != now.get("outcome"):
            found.append(Change(case, was.get("outcome", ""), now.get("outcome", ""),
                                now.get("message") or was.get("message", "")))
    return sorted(found, key=lambda c: (ORDER.index(c.kind), c.case))


def report(a: dict[str, Any], b: dict[str, Any], changed: list[Change]) -> str:
    head = (f"A: {a['target']['spec']} ({a['environment'].get('fusecheck', '?')}), hash {a['hash'][:12]}\n"
            f"B: {b['target']['spec']} ({b['environment'].get('fusecheck', '?')}), hash {b['hash'][:12]}")
    if not changed:
        return f"{head}\nno rule changed its outcome"
    lines = [head, f"{len(changed)} case(s) changed:"]
    for change in changed:
        why = f"  ({change.message[:160]})" if change.message else ""
        lines.append(f"  {change.kind:10} {change.case}: {change.before or '(absent)'} -> "
                     f"{change.after or '(absent)'}{why}")
    return "\n".join(lines)


def main(a_path: Path, b_path: Path) -> int:
    try:
        a, b = (json.loads(Path(p).read_text()) for p in (a_path, b_path))
    except (OSError, ValueError) as exc:
        print(f"cannot read the summaries: {exc}")
        return 2
    changed = changes(a, b)
    print(report(a, b, changed))
    return 1 if any(c.kind == "regression" for c in changed) else 0
