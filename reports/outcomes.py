"""What each test of a run came to, read from its allure results.

Every result is one of ``OUTCOMES``:

- passed;
- failed a required rule (a must rule, ``conformance.rules``) or failed an optional one
  (should, may): an assertion failed, or the target crashed, hung or answered what the
  kernel refuses (the ``targets`` errors);
- not applicable: skipped, the target lacks what the rule needs and the reason says so;
- known deviation: an expected failure (``conformance.deviations``) with its reason;
- harness error: the suite itself broke (any other exception): never counted against the
  target.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

PASSED = "passed"
FAILED_REQUIRED = "failed (required)"
FAILED_OPTIONAL = "failed (optional)"
NOT_APPLICABLE = "not applicable"
KNOWN_DEVIATION = "known deviation"
HARNESS_ERROR = "harness error"
OUTCOMES = (PASSED, FAILED_REQUIRED, FAILED_OPTIONAL, NOT_APPLICABLE, KNOWN_DEVIATION, HARNESS_ERROR)
FAILED = (FAILED_REQUIRED, FAILED_OPTIONAL)
REPORTS_EPIC = "reports"  # results the report adds to a run's (``reports.matrices``): not tests

#: Exceptions that say what the target did (crashed, hung, broke the protocol), not the suite
TARGET_ERRORS = frozenset({
    "AssertionError", "Defect", "TargetError", "TargetDied", "TargetTimeout", "DaemonDied",
    "NoReply", "MalformedReply", "UnexpectedReply", "RemoteProtocolError", "MountError",
    "Failed", "FlakyFailure", "Flaky", "Timeout",
})


@dataclass(frozen=True)
class Outcome:
    """One test result, as the report counts it."""

    rule: str  # the rule id, or the test's name when it checks no rule (fuzz campaigns)
    title: str
    outcome: str  # one of OUTCOMES
    area: str  # allure epic
    feature: str
    level: str  # must | should | may ("" when no rule)
    target: str
    message: str  # why it failed, was skipped or broke ("" when passed)
    exception: str  # the exception's class name ("" when none)
    parameters: tuple[tuple[str, str], ...]  # pytest's, which tell a rule's cases apart
    uuid: str
    attachments: tuple[str, ...]  # names of what the result carries (dumps, pcaps, matrices)

    @property
    def case(self) -> str:
        """The rule with the parameters that tell its cases apart."""
        shown = ", ".join(f"{k}={v}" for k, v in self.parameters)
        return f"{self.rule}[{shown}]" if shown else self.rule

    def as_json(self) -> dict[str, Any]:
        return asdict(self)


def plain(text: str) -> str:
    """allure-pytest keeps a parameter as its repr: the plain string."""
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "'\"":
        return text[1:-1]
    return text


def exception_of(message: str) -> str:
    """The class name that begins a failure message ("targets.errors.TargetTimeout: ...")."""
    head = message.split(":", 1)[0].strip() if ":" in message else ""
    name = head.rsplit(".", 1)[-1]
    return name if name.isidentifier() and name[:1].isupper() else ""


def classify(result: dict[str, Any]) -> Outcome:
    labels: dict[str, str] = {}
    for label in result.get("labels", []):
        labels.setdefault(label["name"], label["value"])
    params = {p["name"]: plain(str(p["value"])) for p in result.get("parameters", [])}
    # the parameters that tell a rule's cases apart (pytest's); excluded ones say what was seen
    own = {p["name"] for p in result.get("parameters", []) if not p.get("excluded")}
    details = result.get("statusDetails") or {}
    message = str(details.get("message") or "").strip()
    status = result.get("status", "broken")
    level = labels.get("level", "")
    exception = exception_of(message) if status in ("failed", "broken") else ""
    if status == "passed":
        outcome = PASSED
    elif status == "skipped":
        outcome = KNOWN_DEVIATION if message.startswith("XFAIL") or details.get("known") else NOT_APPLICABLE
    elif status == "failed" or exception in TARGET_ERRORS:
        outcome = FAILED_OPTIONAL if level in ("should", "may") else FAILED_REQUIRED
    else:
        outcome = HARNESS_ERROR
    attachments = tuple(a.get("name", "") for a in _attachments(result))
    shown = tuple(sorted((k, v) for k, v in params.items() if k in own and k != "target"))
    return Outcome(
        rule=labels.get("rule") or labels.get("story") or result.get("name", "?"),
        title=result.get("name", ""), outcome=outcome, area=labels.get("epic", ""),
        feature=labels.get("feature", ""), level=level, target=params.get("target", ""),
        message=message, exception=exception, parameters=shown, uuid=result.get("uuid", ""),
        attachments=attachments)


def _attachments(node: dict[str, Any]) -> Iterator[dict[str, Any]]:
    yield from node.get("attachments", [])
    for step in node.get("steps", []):
        yield from _attachments(step)


def read(dirs: Iterable[Path]) -> list[Outcome]:
    """Every test result in the allure results directories, classified; a test retried by
    its run (the same history id) counts once, by its last result."""
    latest: dict[str, tuple[int, dict[str, Any]]] = {}
    for directory in dirs:
        for path in sorted(Path(directory).glob("*-result.json")):
            try:
                result = json.loads(path.read_text())
            except (OSError, ValueError):
                continue
            if any(label.get("name") == "epic" and label.get("value") == REPORTS_EPIC
                   for label in result.get("labels", [])):
                continue  # what the report itself added (the matrices)
            key = f"{directory}:{result.get('historyId') or result.get('uuid')}"
            stop = int(result.get("stop") or 0)
            if key not in latest or stop >= latest[key][0]:
                latest[key] = (stop, result)
    return [classify(result) for _, result in sorted(latest.values(), key=lambda kv: kv[0])]
