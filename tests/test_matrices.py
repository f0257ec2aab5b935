"""The coherency and ACL matrices: built from allure results, by hand-made results and by real runs."""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import pytest

from conformance.coherency.modes import MODES, Expect, Mode, expected
from reports.matrices import ACL_DECISIONS, MATRIX_RESULT, build, family, main
from tests.helpers import run_conformance


def result(directory: Path, *, epic: str, story: str, status: str = "passed", stop: int = 1,
           message: str = "", attachments: list[dict[str, str]] | None = None, **params: str) -> None:
    body: dict[str, Any] = {
        "uuid": str(uuid.uuid4()), "name": f"{story}: a statement", "status": status, "stop": stop,
        "labels": [{"name": "epic", "value": epic}, {"name": "story", "value": story}],
        "parameters": [{"name": k, "value": repr(v)} for k, v in params.items()],
        "statusDetails": {"message": message}, "attachments": attachments or []}
    (directory / f"{body['uuid']}-result.json").write_text(json.dumps(body))


def test_coherency_cells(tmp_path: Path) -> None:
    result(tmp_path, epic="coherency", story="COHERENCY-HOST-002", mode="cache=none", target="ref:cache=none",
           scenario="host chmods a file", observed="at once")
    result(tmp_path, epic="coherency", story="COHERENCY-HOST-002", mode="cache=always",
           target="ref:cache=always", scenario="host chmods a file", observed="stale for > 3000 ms")
    result(tmp_path, epic="coherency", story="COHERENCY-HOST-002", mode="cache=auto", target="ref",
           scenario="host chmods a file", observed="stale for > 3000 ms", status="failed", stop=1)
    result(tmp_path, epic="coherency", story="COHERENCY-HOST-002", mode="cache=auto", target="ref",
           scenario="host chmods a file", observed="after 1010 ms", stop=2)  # a later run wins
    result(tmp_path, epic="coherency", story="COHERENCY-MOUNT-004", mode="cache=none",
           target="ref:cache=none", status="skipped", message="not applicable: FOPEN_DIRECT_IO")
    table = build([tmp_path])["coherency"]
    row = table["COHERENCY-HOST-002: host chmods a file"]
    assert {c: cell.shown for c, cell in row.items()} == {
        "cache=none": "at once", "cache=always": "stale for > 3000 ms", "cache=auto": "after 1010 ms"}
    assert row["cache=always"].status == "stale"
    assert table["COHERENCY-MOUNT-004: a statement"]["cache=none"].shown == "n/a"


def test_columns_name_families_when_several() -> None:
    assert family("ref:cache=none,writeback,acl") == family("ref:acl=on") == "ref"
    assert family("ref:cache=none,mutant=x") == "ref:mutant=x"
    assert family("passthrough_ll") == family("passthrough_ll:cache=always") == "passthrough_ll"


def test_acl_cells_and_decisions(tmp_path: Path) -> None:
    (tmp_path / "d.json").write_text(json.dumps({
        "owner": {"examples": 5, "matched": 5, "differed": ""},
        "named user + mask": {"examples": 3, "matched": 2, "differed": "target rw-, tmpfs r--"}}))
    result(tmp_path, epic="acl", story="POSIX-ACL-014", target="ref:acl", status="failed",
           message="AssertionError: target rw-, tmpfs r--\nmore",
           attachments=[{"name": ACL_DECISIONS, "source": "d.json", "type": "application/json"}])
    result(tmp_path, epic="acl", story="POSIX-ACL-001", target="fuse-overlayfs")
    table = build([tmp_path])["acl"]
    assert table["POSIX-ACL-014: random ACLs, owner decides"]["ref:acl"].shown == "match (5/5)"
    assert table["POSIX-ACL-014: random ACLs, named user + mask decides"]["ref:acl"].shown == (
        "FAIL: target rw-, tmpfs r-- (2/3 matched)")
    assert table["POSIX-ACL-014: a statement"]["ref:acl"].shown == "FAIL: target rw-, tmpfs r--"
    assert table["POSIX-ACL-001: a statement"]["fuse-overlayfs"].shown == "match"


def test_expectations_cover_every_mode() -> None:
    kinds = ("data", "attr", "size", "name", "write", "fsync", "close", "msync")
    for cache in MODES:
        for writeback in (False, True):
            assert all(isinstance(expected(k, Mode(cache, writeback)), Expect) for k in kinds)
    assert expected("size", Mode("auto", True)) is Expect.STALE_OK
    assert Mode.parse("cache=auto,writeback") == Mode("auto", True)
    assert Mode.parse("always,notify=store") == Mode("always", False, "store")
    assert expected("attr", Mode("always", notify="inval")) is Expect.NOTIFIED
    assert expected("attr", Mode("none", notify="inval")) is Expect.AT_ONCE


def test_acl_machine_draws_300_by_default() -> None:
    """The issue's floor: the ACL differential rule draws at least 300 examples per default run."""
    from conformance.profiles import ACL_RANDOM_EXAMPLES

    assert ACL_RANDOM_EXAMPLES["dev"] >= 300 and ACL_RANDOM_EXAMPLES["ci"] >= 300


def test_a_run_attaches_both_matrices(tmp_path: Path) -> None:
    """The issue's run: ACL and coherency rules against ref:acl,cache=auto pass and leave both
    matrices in the results; runs in other modes into the same results show the modes apart."""
    results = tmp_path / "allure"
    done = run_conformance("ref:acl,cache=auto", "--rule=POSIX-ACL", "--rule=FUSE-ACL", "--rule=COHERENCY",
                           f"--alluredir={results}", "-n", "2")
    assert done.returncode == 0, done.stdout[-3000:]
    for mode in ("cache=none", "cache=always", "cache=auto,writeback", "cache=always,notify"):
        again = run_conformance(f"ref:{mode}", "--rule=COHERENCY", f"--alluredir={results}", "-n", "2")
        assert again.returncode == 0, again.stdout[-3000:]
    found = [json.loads(p.read_text()) for p in results.glob("*-result.json")]
    matrix = [r for r in found if r["name"] == MATRIX_RESULT]
    assert len(matrix) == 1, "one matrices result, the latest run's"
    charts = {"chart: outcomes per area", "chart: coherency staleness"}
    assert {a["name"] for a in matrix[0]["attachments"]} == {"coherency matrix", "acl matrix", *charts}
    tables = build([results])
    chmod = tables["coherency"]["COHERENCY-HOST-002: host chmods a file"]
    assert chmod["cache=none"].shown == "at once"
    assert chmod["cache=always"].status == "stale"
    assert chmod["cache=auto"].shown.startswith("after ")
    assert chmod["cache=always,notify"].status == "passed", "the server's INVAL_INODE ends the staleness"
    coherency = tables["coherency"]
    assert coherency["COHERENCY-HOST-003: host grows a file"]["cache=auto,writeback"].status == "stale"
    assert coherency["COHERENCY-MOUNT-001: mount writes, file still open"]["cache=auto"].shown == "at once"
    assert all(c.status == "passed" for row in tables["acl"].values() for c in row.values())
    out = tmp_path / "out"
    assert main([results], out) == 0
    assert {p.name for p in out.iterdir()} == {f"{n}.{s}" for n in ("coherency", "acl")
                                               for s in ("md", "html", "json")}


@pytest.mark.parametrize("args", [["/nonexistent", "/tmp/out"]])
def test_missing_results_dir(args: list[str]) -> None:
    assert main([Path(args[0])], Path(args[1])) == 2
