"""The fuzz campaigns end to end: ``python -m fuzz run`` finds, shrinks and replays the
reference server's crash and hang mutants, shares its findings through Redis, and runs
against every kind of target the issue names."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from hypothesis import find, given, settings

from fuzz import burst
from fuzz.campaign import Recorded, Runner
from fuzz.database import open_database
from fuzz.findings import found
from fuzz.hostile import FRAMINGS, Framing, Twist, boundary, frame, int_bounds
from fuzz.reproducer import Exchange
from fuzz.stage import CAMPAIGNS
from fuzz.stats import Tally, coverage_table, gather
from fuzz.strategies import plain_bodies, plain_body
from fuzz.verdict import Defect
from protocol import constants as c
from protocol.layers.structs import FuseReadIn
from protocol.session import KernelSession
from targets.spec import parse_spec
from tests.redis_server import redis_server

REPO = Path(__file__).resolve().parent.parent


def fuzz(*args: str, timeout: float = 240) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "fuzz", *args], cwd=REPO, capture_output=True,
                          text=True, timeout=timeout, check=False)


def only_finding(root: Path) -> tuple[object, Path]:
    kept = found(root)
    assert len(kept) == 1, [f.headline() for f, _ in kept]
    return kept[0]


# -- strategies -------------------------------------------------------------------
def test_framings_break_what_they_say() -> None:
    data = KernelSession().request(c.FUSE_READ, FuseReadIn(fh=1, size=4096))
    for how in FRAMINGS:
        broken, twist = frame(data, Framing(how, b"junk", 3 if how == "truncated" else 0x7FFF))
        assert twist.field_class == "malformed" and broken != data, how
    assert frame(data, Framing("len+1"))[0][:4] == (len(data) + 1).to_bytes(4, "little")
    assert len(frame(data, Framing("cut-header"))[0]) == 20
    assert frame(data, Framing("opcode", value=4095))[0][4:8] == (4095).to_bytes(4, "little")


def test_boundaries_come_from_the_field_types() -> None:
    assert int_bounds("<Q") == (0, 1, 2**64 - 1, 2**64 - 2, 2**63, 2**63 - 1)
    assert int_bounds("<i") == (0, 1, 2**31 - 1, 2**31 - 2, -(2**31), -1)
    drawn = boundary((FuseReadIn(fh=7, size=10),), keep=("fh",))
    offset = find(drawn, lambda layers_twist: layers_twist[1].what.startswith("fuse_read_in.offset"))
    assert int(offset[0][0].offset) in int_bounds("<Q") and int(offset[0][0].fh) == 7


@given(boundary((FuseReadIn(fh=7, size=10),), keep=("fh",)))
@settings(max_examples=60, database=None)
def test_a_kept_field_stays_as_it_was(drawn: tuple[tuple[FuseReadIn, ...], Twist]) -> None:
    layers, twist = drawn
    assert ".fh" not in twist.what and int(layers[0].fh) == 7, twist


def test_a_burst_shrinks_to_its_failing_copy() -> None:
    """A smaller burst keeps its first copies, a smaller ``back`` moves it on by one: the two
    ways hypothesis shrinks a burst lead to the one copy that fails."""
    data = KernelSession().request(c.FUSE_READ, FuseReadIn(fh=1, size=4096))
    where = burst.points(FuseReadIn, len(FuseReadIn()))
    whole = [twist for _, twist in burst.copies(data, where, 9, 256, 100)]
    assert [t for _, t in burst.copies(data, where, 9, 16, 100)] == whole[:16]
    assert [t for _, t in burst.copies(data, where, 8, 16, 100)] == whole[1:17]
    assert [t for _, t in burst.copies(data, where, 9 - 5, 1, 100)] == whole[5:6]
    assert len(set(whole)) > 20 and {name for name, _ in whole} == {p.name for p in where}
    four = burst.copies(data, where, 0, 4, 100)
    uniques = [burst.UNIQUE.unpack_from(copy, burst.UNIQUE_AT)[0] for copy, _ in four]
    assert uniques == [100, 102, 104, 106]


def test_a_burst_template_shrinks_to_the_plain_body() -> None:
    """A failing burst's template (``plain_bodies``) shrinks to the plain body, every field
    at its default, in one choice rather than field by field (each try of a hung burst costs
    a deadline)."""
    for opcode in (c.FUSE_READ, c.FUSE_WRITE, c.FUSE_SETXATTR):
        plain = [bytes(p) for p in plain_body(opcode)]
        shrunk = find(plain_bodies(opcode), lambda parts: True, settings=settings(database=None))
        assert [bytes(p) for p in shrunk] == plain, c.OPCODE_NAMES[opcode]


def test_a_finding_keeps_the_shortest_failure_hypothesis_saved(tmp_path: Path) -> None:
    """Hypothesis's smallest example is by its choices: a later "smaller" one may send a burst
    of hundreds. The finding keeps the batch's failure of its kind with the fewest messages,
    with the database entry saved for exactly that one (not the last entry saved, which may be
    another failure's); a failure hypothesis did not keep (no save) does not count."""
    from hypothesis.database import InMemoryExampleDatabase

    import fuzz.test_campaign  # noqa: F401  (the campaigns registered)

    shared = InMemoryExampleDatabase()
    runner = Runner(CAMPAIGNS["fuse"], parse_spec("ref"), Tally(path=tmp_path / "t.json"), tmp_path, shared)
    runner.settings(first=False)
    recorded = runner._recorded
    assert isinstance(recorded, Recorded)

    def failure(messages: int, entry: bytes | None, opcode: str = "FUSE_READ") -> Defect:
        if entry is not None:
            recorded.save(b"key", entry)
        defect = Defect("hang", opcode, "boundary", f"{messages} messages")
        runner._weigh([Exchange(bytes(40))] * messages)
        return defect

    failure(28, b"first")
    failure(4, b"short")
    failure(3, None)  # not kept by hypothesis: no entry of its own
    failure(4, b"later")  # as short, and smaller by hypothesis's order: it wins the tie
    failure(264, b"burst")
    recorded.move(b"key", b"key.secondary", b"later")  # hypothesis demotes it for the burst
    failure(2, b"other", "FUSE_WRITE")  # another failure, saved last
    final = Defect("hang", "FUSE_READ", "boundary", "hypothesis's final run of its smallest")
    runner.failed_trail = [Exchange(bytes(40))] * 264
    assert recorded.last == (b"key", b"other")
    finding = runner.record(final, 1, recorded, flaky=False)
    assert finding is not None and finding.messages == 4
    assert bytes.fromhex(finding.database_entry) == b"later"
    assert b"later" in set(shared.fetch(b"key"))  # back where every campaign looks


def test_tallies_add_up(tmp_path: Path) -> None:
    for worker in ("gw0", "gw1"):
        tally = Tally(path=tmp_path / f"fuse-{worker}.json")
        tally.sent_one("FUSE_LOOKUP", "boundary")
        tally.answer("FUSE_LOOKUP", "ok")
        tally.flush(force=True)
    total, workers = gather(tmp_path)
    assert workers == 2 and total.requests == 2 and total.sent["FUSE_LOOKUP", "boundary"] == 2
    assert any(row.startswith("| FUSE_LOOKUP | 0 | 2 | 0 |") for row in coverage_table(total))


# -- the done-when: a crash and a hang mutant found, shrunk and replayed ------------
@pytest.mark.alone  # "under a minute each": measured with the machine to itself
@pytest.mark.parametrize(("mutant", "kind", "timeout"), [("crash-on-long-name", "crash", "1"),
                                                          ("hang-on-huge-offset", "hang", "0.5")])
def test_finds_shrinks_and_replays_a_mutant(tmp_path: Path, mutant: str, kind: str, timeout: str) -> None:
    target = f"ref:mutant={mutant}"
    started = time.monotonic()
    result = fuzz("run", "--target", target, "--duration", "60s", "--stop-after", "1", "--shrink-grace",
                  "30s", "--reply-timeout", timeout, "--findings", str(tmp_path),
                  "--db", str(tmp_path / "db"))
    assert result.returncode == 1, result.stdout + result.stderr
    finding, pcap = only_finding(tmp_path)
    assert finding.kind in (kind, "unresponsive") and finding.target == target, finding  # type: ignore[attr-defined]
    assert finding.after_seconds < 60, finding  # type: ignore[attr-defined]
    assert finding.database_entry and pcap.exists(), finding  # type: ignore[attr-defined]
    assert "replay: python -m fuzz replay" in result.stdout and "findings (1)" in result.stdout
    assert finding.messages <= 12, f"not shrunk: {finding.messages} messages"  # type: ignore[attr-defined]
    again = fuzz("replay", str(pcap.parent), "--target", target, "--reply-timeout", timeout,
                 "--attempts", "3")
    assert again.returncode == 1 and "REPRODUCED" in again.stdout, again.stdout + again.stderr
    assert "the same defect" in again.stdout and "attempts: 1 of at most 3" in again.stdout, again.stdout
    fixed = fuzz("replay", str(pcap.parent), "--target", "ref", "--reply-timeout", timeout, "--attempts", "2")
    assert fixed.returncode == 0 and "not reproduced" in fixed.stdout, fixed.stdout + fixed.stderr
    assert "attempts: 2 of at most 2" in fixed.stdout, fixed.stdout
    shown = fuzz("show", str(pcap))
    assert shown.returncode == 0 and "FUSE_INIT" in shown.stdout
    took = time.monotonic() - started
    assert took < 60, f"found, shrunk and replayed in {took:.0f} s"
    print(f"{mutant}: found, shrunk to {finding.messages} messages in {took:.0f} s")  # type: ignore[attr-defined]


def test_campaigns_share_findings_through_redis(tmp_path: Path) -> None:
    """Two campaigns, separate processes, one Redis database: the second replays the first's
    finding at once (its first example), before drawing anything new."""
    target = "ref:mutant=crash-on-long-name"
    with redis_server() as url:
        first = fuzz("run", "--target", target, "--duration", "60s", "--stop-after", "1", "--shrink-grace",
                     "30s", "--reply-timeout", "1", "--db", url, "--findings", str(tmp_path / "a"))
        assert first.returncode == 1, first.stdout + first.stderr
        one: Any = only_finding(tmp_path / "a")[0]
        database = open_database(url, f"fusecheck-fuzz:fuse:{target}")
        shared = set(database.fetch(bytes.fromhex(one.database_key)))
        assert bytes.fromhex(one.database_entry) in shared
        second = fuzz("run", "--target", target, "--duration", "60s", "--stop-after", "1", "--reply-timeout",
                      "1", "--db", url, "--findings", str(tmp_path / "b"))
    assert second.returncode == 1, second.stdout + second.stderr
    two: Any = only_finding(tmp_path / "b")[0]
    assert two.after_examples == 1, f"the second campaign did not start from the shared finding: {two}"
    # the first campaign may have saved more than its finding (hypothesis keeps each distinct
    # failure it met, e.g. the same crash seen a step later): the second replays one of them
    assert two.kind == one.kind and (two.signature == one.signature or
                                     bytes.fromhex(two.database_entry) in shared), (one, two)


# -- every kind of target ---------------------------------------------------------------
@pytest.mark.parametrize("target", ["ref", "passthrough_ll", "fuse-overlayfs", "squashfuse_ll", "virtiofsd",
                                    "cuse-example", "ref:cuse", "ref:vhost-user", "passthrough_ll-asan"])
def test_a_campaign_runs_against(tmp_path: Path, target: str) -> None:
    """A short campaign runs, reports what it sent, and keeps each finding replayable."""
    result = fuzz("run", "--target", target, "--duration", "8s", "--shrink-grace", "10s", "--findings",
                  str(tmp_path), "--db", str(tmp_path / "db"))
    assert result.returncode in (0, 1), result.stdout + result.stderr
    assert target != "ref" or result.returncode == 0, f"the reference server failed:\n{result.stdout}"
    assert f"fuzz campaign against {target}" in result.stdout
    assert "opcodes covered" in result.stdout and (tmp_path / "coverage.md").exists()
    rows = (tmp_path / "coverage.md").read_text().splitlines()[2:]
    assert len(rows) >= 5, rows
    for finding, pcap in found(tmp_path):
        record = json.loads((pcap.parent / "finding.json").read_text())
        assert record["replay"].startswith("python -m fuzz replay") and pcap.exists(), record
        assert finding.explanation and (pcap.parent / "sequence.txt").read_text()


def test_two_workers_show_progress_and_a_summary(tmp_path: Path) -> None:
    result = fuzz("run", "--target", "passthrough_ll", "--duration", "6s", "--jobs", "2", "--shrink-grace",
                  "5s", "--findings", str(tmp_path), "--db", str(tmp_path / "db"))
    assert result.returncode in (0, 1), result.stdout + result.stderr
    assert "2 worker(s)" in result.stdout and "requests (" in result.stdout, result.stdout
    progress = [line for line in result.stdout.splitlines() if line.startswith("[0:00:")]
    assert progress and "req/s" in progress[0] and "opcodes" in progress[0], result.stdout
