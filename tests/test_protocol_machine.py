"""FUSE-MACHINE-001 finds an injected fault, shrinks it to a few requests, saves it, and the
saved file replays: against the faulty server it reproduces, against the correct one not."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from fuzz.replay import replay
from fuzz.reproducer import Exchange, load
from protocol import constants as c
from protocol.layers import FuseEntryOut, FuseMkdirIn, FuseName, FuseSetattrIn
from protocol.session import KernelSession
from targets.reference.server import ReferenceServer
from targets.spec import parse_spec
from tests.helpers import ROOT, rule_outcomes, run_conformance

MUTANT = "write-short-count"  # WRITE stores every byte but answers one byte fewer
MAX_REQUESTS = 6
ONE_PART = ("-k", "test_protocol_machine and 1", "-p", "no:xdist", "-o", "addopts=")  # of 2


def _opcodes(exchanges: list[Exchange]) -> list[str]:
    return [c.OPCODE_NAMES.get(int.from_bytes(e.request[4:8], "little"), "?") for e in exchanges]


@pytest.mark.spread
def test_machine_finds_a_mutant_and_shrinks_it(tmp_path: Path) -> None:
    findings = tmp_path / "findings"
    env_profile = {"HYPOTHESIS_PROFILE": "ci"}  # derandomized, and it shrinks (smoke does not)
    result = run_conformance(f"ref:mutant={MUTANT}", "--rule=FUSE-MACHINE-001", f"--findings={findings}",
                             *ONE_PART, env=env_profile)
    assert "FAILED" in rule_outcomes(result.stdout).get("FUSE-MACHINE-001", set()), result.stdout[-3000:]
    assert "the reply says 1 bytes written" in result.stdout, result.stdout[-3000:]
    saved = sorted(findings.glob("*.pcap"))
    assert len(saved) == 1, saved
    exchanges, notes = load(saved[0])
    assert len(exchanges) <= MAX_REQUESTS, f"shrunk to {len(exchanges)} requests: {_opcodes(exchanges)}"
    assert _opcodes(exchanges)[0] == "FUSE_INIT" and "FUSE_WRITE" in _opcodes(exchanges)
    assert any("python -m fuzz replay" in note for note in notes), notes

    faulty = replay(exchanges, parse_spec(f"ref:mutant={MUTANT}"))
    assert faulty.reproduced and "bytes written" in " ".join(faulty.problems), faulty
    correct = replay(exchanges, parse_spec("ref"))
    assert not correct.reproduced, correct.problems


def test_replay_command_line(tmp_path: Path) -> None:
    """``python -m fuzz replay`` on a finding of a libfuse daemon (nodeids are its pointers,
    so they differ from run to run): exit 1 while it reproduces, 0 once it does not."""
    findings = tmp_path / "findings"
    result = run_conformance("fuse-overlayfs", "--rule=FUSE-MACHINE-001", f"--findings={findings}",
                             *ONE_PART)
    assert "XFAIL" in rule_outcomes(result.stdout).get("FUSE-MACHINE-001", set()), result.stdout[-3000:]
    saved = sorted(findings.glob("*.pcap"))
    assert saved, result.stdout[-2000:]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    runs = {spec: subprocess.run([sys.executable, "-m", "fuzz", "replay", str(saved[0]), "--target", spec],
                                 cwd=ROOT, env=env, capture_output=True, text=True, timeout=120, check=False)
            for spec in ("fuse-overlayfs", "passthrough_ll")}
    faulty, correct = runs["fuse-overlayfs"], runs["passthrough_ll"]
    assert faulty.returncode == 1 and "REPRODUCED" in faulty.stdout, faulty.stdout + faulty.stderr
    assert correct.returncode == 0, correct.stdout + correct.stderr
    shown = subprocess.run([sys.executable, "-m", "fuzz", "show", str(saved[0])], cwd=ROOT, env=env,
                           capture_output=True, text=True, timeout=60, check=True)
    assert "-> FUSE_INIT" in shown.stdout and "FUSE-MACHINE-001" in shown.stdout


@pytest.mark.parametrize("spec", ["ref", "passthrough_ll"])
def test_a_directory_made_in_a_setgid_directory_may_be_setgid(spec: str) -> None:
    """Linux makes it setgid (inode_init_owner), POSIX leaves it open: the model takes either
    (found from a fresh clone: the machine failed the reference server for doing as Linux)."""
    kernel = KernelSession()
    srv = ReferenceServer()
    steps = [kernel.init(),
             kernel.request(c.FUSE_MKDIR, FuseMkdirIn(mode=0o755), FuseName(name=b"machine-sgid")),
             kernel.request(c.FUSE_MKDIR, FuseMkdirIn(mode=0o755), FuseName(name=b"d"), nodeid=2),
             kernel.request(c.FUSE_SETATTR, FuseSetattrIn(valid=c.FATTR_MODE, mode=0o2750), nodeid=3),
             kernel.request(c.FUSE_MKDIR, FuseMkdirIn(mode=0o755), FuseName(name=b"a"), nodeid=3)]
    exchanges = [Exchange(raw, srv.handle(raw)) for raw in steps]
    made = kernel.receive(exchanges[-1].reply or b"")
    assert int(made.packet[FuseEntryOut].attr.mode) == 0o42755  # type: ignore[union-attr]
    outcome = replay(exchanges, parse_spec(spec))
    assert not outcome.reproduced, outcome.problems


def test_replay_maps_readdirplus_entries_by_name() -> None:
    """A READDIRPLUS listing maps recorded nodeids to live ones by the entries' names (a field
    called ``name`` must be read as a field: scapy's ``Packet.name`` is the layer's name)."""
    from fuzz.replay import Mapping
    from protocol.layers.variable import FuseDirent, FuseDirentplus, FuseDirentplusList

    def listing(*entries: tuple[bytes, int]) -> FuseDirentplusList:
        return FuseDirentplusList(dirents=[
            FuseDirentplus(entry_out=FuseEntryOut(nodeid=nodeid), dirent=FuseDirent(name=name))
            for name, nodeid in entries])

    mapping = Mapping()
    mapping.learn_listing(listing((b"a", 10), (b"b", 11)), listing((b"b", 21), (b"a", 20)))
    assert mapping.nodeids[10] == 20 and mapping.nodeids[11] == 21
