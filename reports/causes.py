"""Failures grouped by their probable root cause, so that one cause is read once.

A daemon that enforces no permissions fails every rule that expects EACCES or EPERM; one
that caches attributes fails every coherency rule of that mode. ``group`` puts each failure
under the first ``CAUSES`` entry whose test matches (the area, the exception, the words of
the message); what none matches is grouped by its message with the numbers and names taken
out, so that the same assertion failing on many files is still one line.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from reports.outcomes import FAILED, HARNESS_ERROR, Outcome, exception_of

DENIED = r"(EACCES|EPERM)"


@dataclass(frozen=True)
class Cause:
    name: str
    matches: Callable[[Outcome], bool]


def _said(pattern: str) -> Callable[[Outcome], bool]:
    compiled = re.compile(pattern, re.IGNORECASE | re.DOTALL)
    return lambda outcome: bool(compiled.search(outcome.message))


def _raised(*names: str) -> Callable[[Outcome], bool]:
    return lambda outcome: outcome.exception in names


CAUSES = (
    Cause("the target crashed or exited", _raised("TargetDied", "DaemonDied")),
    Cause("the target stopped answering (no reply within the deadline)",
          lambda o: o.exception in ("TargetTimeout", "NoReply", "Timeout") or "no reply within" in o.message),
    Cause("replies the kernel refuses (length, unique, error range, body size)",
          _said(r"\breply\.(len-mismatch|unknown-unique|error-range|body-after-error|short|body-size)\b")),
    Cause("permissions not enforced", _said(rf"target gave ok.*tmpfs gives {DENIED}"
                                            rf"|answered success \(0\); expected {DENIED}")),
    Cause("permission refused where it is granted", _said(rf"target gave {DENIED}.*tmpfs gives ok")),
    Cause("POSIX ACLs not honoured", lambda o: o.area == "acl"),
    Cause("stale data or attributes under caching", lambda o: o.area == "coherency"
          and bool(re.search(r"stale|expected (at once|within)", o.message))),
    Cause("an operation not implemented (ENOSYS)", _said(r"target gave ENOSYS|answered ENOSYS")),
    Cause("times (atime, mtime, ctime) not kept as POSIX says", _said(r"\b(a|m|c)time\b|st_[amc]tim")),
    Cause("INIT negotiation", lambda o: o.rule.startswith(("FUSE-INIT-", "CUSE-INIT-", "FUSE-VERSION-"))),
)
FIRST = 3  # the causes above that come before an attribute's wrong value (what the target did)
_MODEL = re.compile(r"\b(\w+) (\S+), the model says (\S+)")
_PAIR = re.compile(r"'(\w+)': \(([^,()]+), ([^()]+)\)")
_DICT = re.compile(r"\{[^{}]*\}")
DICTS = 8  # dict literals of a message compared at most


def wrong_fields(message: str) -> list[str]:
    """The attribute names a failure shows with two values: stat views of the target and of
    tmpfs that differ, ``{'nlink': (1, 2)}`` diffs, "nlink 2, the model says 1"."""
    found = {m.group(1) for m in _MODEL.finditer(message) if m.group(2).rstrip(",") != m.group(3)}
    found |= {m.group(1) for m in _PAIR.finditer(message) if m.group(2).strip() != m.group(3).strip()}
    views = []
    for literal in _DICT.findall(message)[:DICTS]:
        try:
            value = ast.literal_eval(literal)
        except (ValueError, SyntaxError, MemoryError, RecursionError):
            continue
        if isinstance(value, dict) and value:
            views.append(value)
    for i, one in enumerate(views):
        for other in views[i + 1:]:
            if one.keys() == other.keys():
                found |= {key for key in one if one[key] != other[key]}
    return sorted(str(f) for f in found)


#: a wrong answer, named by what came and what was due (one line per pair)
ERRNO_MISMATCHES = (
    (re.compile(r"answered (\w+) \(-?\d+\); expected (\w+)"), "answers {0} where {1} is due"),
    (re.compile(r"the target gave (\w+).*tmpfs gives (\w+)"), "gives {0} where tmpfs gives {1}"),
)
_VARYING = re.compile(r"0x[0-9a-f]+|\d+|'[^']*'|\"[^\"]*\"|b'[^']*'", re.IGNORECASE)


@dataclass
class Group:
    cause: str
    failures: list[Outcome] = field(default_factory=list)

    @property
    def rules(self) -> list[str]:
        return sorted({f.rule for f in self.failures})

    @property
    def example(self) -> Outcome:
        """The first by rule id: the same failures give the same example."""
        return min(self.failures, key=lambda f: f.case)

    def line(self) -> str:
        first = self.example
        cases = len(self.failures)
        count = f"{len(self.rules)} rule{'s' if len(self.rules) != 1 else ''}" + (
            f" ({cases} cases)" if cases != len(self.rules) else "")
        said = first.message.splitlines()[0][:200] if first.message else ""
        return f"{self.cause}: {count}, e.g. {first.case}: {said}"


def cause_of(outcome: Outcome) -> str:
    if outcome.outcome == HARNESS_ERROR:
        return f"harness error: {outcome.exception or 'unknown'} (the suite broke, not the target)"
    for cause in CAUSES[:FIRST]:
        if cause.matches(outcome):
            return cause.name
    fields = wrong_fields(outcome.message)
    if fields:
        return (f"wrong {', '.join(fields[:3])} (against tmpfs, the target's own earlier answers "
                "or the model)")
    for cause in CAUSES[FIRST:]:
        if cause.matches(outcome):
            return cause.name
    for pattern, name in ERRNO_MISMATCHES:
        found = pattern.search(outcome.message)
        if found and found.group(1) != found.group(2):
            return name.format(*found.groups())
    first = outcome.message.splitlines()[0] if outcome.message else outcome.exception or "failed"
    first = first.split(":", 1)[1].strip() if exception_of(first) else first
    return "other: " + _VARYING.sub("…", first)[:120]


def group(outcomes: Iterable[Outcome]) -> list[Group]:
    """The failures and harness errors by probable cause, the cause with most rules first."""
    groups: dict[str, Group] = {}
    for outcome in outcomes:
        if outcome.outcome in FAILED or outcome.outcome == HARNESS_ERROR:
            name = cause_of(outcome)
            groups.setdefault(name, Group(name)).failures.append(outcome)
    return sorted(groups.values(), key=lambda g: (-len(g.rules), -len(g.failures), g.cause))
