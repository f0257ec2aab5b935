"""How a result is counted (``reports.outcomes``), grouped by cause (``reports.causes``),
summed and hashed (``reports.summary``) and compared (``reports.compare``), on allure
results made here."""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import pytest

from conformance.rulelist import load_rules
from reports import causes, compare, summary
from reports.outcomes import (
    FAILED_OPTIONAL,
    FAILED_REQUIRED,
    HARNESS_ERROR,
    KNOWN_DEVIATION,
    NOT_APPLICABLE,
    PASSED,
    classify,
    read,
)


def result(rule: str, status: str, message: str = "", *, level: str = "must", area: str = "posix",
           **params: str) -> dict[str, Any]:
    return {"uuid": str(uuid.uuid4()), "historyId": f"{rule}{sorted(params.items())}", "name": f"{rule}: x",
            "status": status, "stop": 1, "statusDetails": {"message": message} if message else {},
            "labels": [{"name": "rule", "value": rule}, {"name": "epic", "value": area},
                       {"name": "level", "value": level}],
            "parameters": [{"name": "target", "value": "'ref'", "excluded": True},
                           *({"name": k, "value": repr(v)} for k, v in params.items())]}


def write(directory: Path, *results: dict[str, Any]) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    for one in results:
        (directory / f"{one['uuid']}-result.json").write_text(json.dumps(one))
    return directory


@pytest.mark.parametrize(("status", "message", "level", "expected"), [
    ("passed", "", "must", PASSED),
    ("failed", "AssertionError: stat: the target gave ok, tmpfs gives EACCES", "must", FAILED_REQUIRED),
    ("failed", "AssertionError: opcode 7 answered EIO (-5); expected ENOSYS", "should", FAILED_OPTIONAL),
    ("broken", "targets.errors.TargetTimeout: no reply within 5 s", "must", FAILED_REQUIRED),
    ("broken", "TypeError: unsupported operand type(s) for +: 'int' and 'str'", "must", HARNESS_ERROR),
    ("skipped", "XFAIL libfuse 3.14 do_init always sets FUSE_BIG_WRITES", "must", KNOWN_DEVIATION),
    ("skipped", "not applicable: the target offers no FUSE_POSIX_ACL", "must", NOT_APPLICABLE),
])
def test_each_result_is_one_outcome(status: str, message: str, level: str, expected: str) -> None:
    assert classify(result("POSIX-PERM-001", status, message, level=level)).outcome == expected


def test_failures_are_grouped_by_probable_cause(tmp_path: Path) -> None:
    denied = [result(f"POSIX-PERM-00{i}", "failed", f"AssertionError: other reads f{i}: the target gave "
                     f"ok b'{i}', tmpfs gives EACCES") for i in range(1, 4)]
    same = [result("FUSE-READ-001", "failed", f"AssertionError: read of file{i} gave 12 bytes, wanted 13",
                   area="protocol", size=str(i)) for i in range(2)]
    broke = result("FUSE-LINK-001", "broken", "KeyError: 'nodeid'", area="protocol")
    groups = causes.group(read([write(tmp_path, *denied, *same, broke)]))
    by_cause = {g.cause: g for g in groups}
    assert by_cause["permissions not enforced"].rules == [f"POSIX-PERM-00{i}" for i in range(1, 4)]
    assert groups[0].cause == "permissions not enforced"  # the cause with most rules first
    other = [g for g in groups if g.cause.startswith("other:")]
    assert len(other) == 1 and len(other[0].failures) == 2, [g.cause for g in groups]
    assert any(g.cause.startswith("harness error: KeyError") for g in groups)
    assert "3 rules, e.g. POSIX-PERM-001" in by_cause["permissions not enforced"].line()


def test_summary_counts_hashes_and_compares(tmp_path: Path) -> None:
    good = write(tmp_path / "a", result("FUSE-PROTO-005", "passed", level="should", area="protocol"),
                 result("POSIX-PERM-001", "passed"),
                 result("POSIX-ACL-001", "skipped", "no ACLs", area="acl"))
    bad = write(tmp_path / "b", result("FUSE-PROTO-005", "passed", level="should", area="protocol"),
                result("POSIX-PERM-001", "failed", "AssertionError: the target gave ok, tmpfs gives EACCES"),
                result("POSIX-ACL-001", "passed", area="acl"))
    a, b = summary.build([good]), summary.build([bad])
    assert a["areas"]["posix"][PASSED] == 1 and a["totals"][NOT_APPLICABLE] == 1 and a["certified"]
    assert b["areas"]["posix"][FAILED_REQUIRED] == 1 and not b["certified"]
    assert a["hash"] == summary.build([good])["hash"] != b["hash"]
    changed = compare.changes(a, b)
    assert [(c.kind, c.case) for c in changed] == [("regression", "POSIX-PERM-001"),
                                                   ("fixed", "POSIX-ACL-001")]
    (tmp_path / "a.json").write_text(json.dumps(a))
    (tmp_path / "b.json").write_text(json.dumps(b))
    assert compare.main(tmp_path / "a.json", tmp_path / "b.json") == 1
    assert compare.main(tmp_path / "a.json", tmp_path / "a.json") == 0
    assert "permissions not enforced" in summary.markdown(b)


def test_every_rule_has_a_level() -> None:
    rules = load_rules()
    assert {r.level for r in rules.values()} <= {"must", "should", "may"}
    assert rules["FUSE-PROTO-002"].level == "must"  # the kernel refuses such a reply
    assert rules["FUSE-PROTO-005"].level == "should"  # libfuse's practice (ENOSYS)


def test_the_charts_are_svg_of_what_was_seen(tmp_path: Path) -> None:
    from xml.etree import ElementTree

    from reports import charts
    from reports.matrices import Cell

    outcomes = read([write(tmp_path, result("POSIX-PERM-001", "passed"),
                           result("POSIX-PERM-002", "failed", "AssertionError: x"))])
    bars = ElementTree.fromstring(charts.outcomes_by_area(outcomes))
    titles = [t.text for t in bars.iter("{http://www.w3.org/2000/svg}title")]
    assert "passed: 1" in titles and "failed (required): 1" in titles, titles
    table = {"COHERENCY-HOST-002: host chmods a file": {
        "cache=none": Cell("passed", "at once"), "cache=auto": Cell("passed", "after 1011 ms"),
        "cache=always": Cell("stale", "stale for > 3000 ms")}}
    plot = ElementTree.fromstring(charts.coherency_staleness(table))
    assert [charts.staleness_ms(c.text) for c in table["COHERENCY-HOST-002: host chmods a file"].values()] \
        == [0.0, 1011.0, 3000.0]
    assert "up to 3000" in "".join(plot.itertext())


def test_one_wrong_attribute_is_one_cause(tmp_path: Path) -> None:
    """Messages of three kinds (tmpfs's stat view, a field diff, the model's word) that all
    show a wrong nlink: one cause, not three."""
    view = "{'type': 32768, 'mode': 420, 'nlink': %d, 'uid': 0}"
    said = [f"AssertionError: stat of f: the target gave ok {view % 2}, tmpfs gives ok {view % 1}",
            "AssertionError: STATX vs GETATTR: {'nlink': (1, 2)}",
            "conformance.protocol.machine.MachineFailure: - GETATTR of 'a': nlink 2, the model says 1"]
    found = read([write(tmp_path, *(result(f"POSIX-X-00{i}", "failed", m) for i, m in enumerate(said)))])
    groups = causes.group(found)
    assert len(groups) == 1 and groups[0].cause.startswith("wrong nlink"), [g.cause for g in groups]
    assert causes.wrong_fields(said[0].replace("'nlink': 2", "'nlink': 1")) == []
