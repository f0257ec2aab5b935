"""FUSE-MACHINE-001: random request sequences in the kernel's role, judged by a model of the
server's namespace and, when the served directory is known, by that directory."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import allure
import pytest
from hypothesis.errors import Flaky

from conformance.profiles import PROTOCOL_MACHINE_EXAMPLES, run_stateful
from conformance.protocol.machine import RULE_ID, ProtocolMachine
from conformance.protocol.rig import Rig
from conformance.rules import rule
from fuzz.reproducer import describe, load
from targets.capabilities import serves_wire
from targets.spec import TargetSpec

PARTS = 2  # slices of the examples, each on a daemon of its own (side by side under xdist)
OPCODES = ("FUSE_LOOKUP", "FUSE_FORGET", "FUSE_GETATTR", "FUSE_SETATTR", "FUSE_MKNOD", "FUSE_MKDIR",
           "FUSE_UNLINK", "FUSE_RMDIR", "FUSE_RENAME", "FUSE_RENAME2", "FUSE_LINK", "FUSE_OPEN",
           "FUSE_READ", "FUSE_WRITE", "FUSE_RELEASE", "FUSE_SETXATTR", "FUSE_GETXATTR",
           "FUSE_LISTXATTR", "FUSE_REMOVEXATTR", "FUSE_OPENDIR", "FUSE_READDIR", "FUSE_READDIRPLUS",
           "FUSE_RELEASEDIR", "FUSE_CREATE")


@pytest.fixture
def rig(request: pytest.FixtureRequest, target_spec: TargetSpec) -> Iterator[Rig]:
    if not serves_wire(target_spec):
        pytest.skip(f"not applicable: {target_spec.text} is used through a mount, the suite "
                    "cannot speak to it over a socket")
    backing = request.config.getoption("--backing")
    part = request.node.callspec.params["part"]
    findings = Path(request.config.getoption("--findings"))
    name = target_spec.text.replace("/", "_").replace(" ", "_")[:60]
    opened = Rig(target_spec, timeout=request.config.getoption("--reply-timeout"),
                 backing=Path(backing) if backing else None,
                 save_to=findings / f"{RULE_ID}-{name}-part{part}.pcap")
    opened.save_to.unlink(missing_ok=True)  # a finding of an earlier run is not this one's
    try:
        yield opened
    finally:
        opened.close()


@rule(RULE_ID, "Over random request sequences the server stays consistent with its earlier replies "
      "(entries, attributes, contents, xattrs, listings) and with the directory it serves, when known",
      source="linux fs/fuse (dir.c, file.c, inode.c, xattr.c): what the kernel caches and relies on; "
             "POSIX.1-2017 for the semantics of each call", opcodes=OPCODES, feature="MACHINE")
@pytest.mark.spread
@pytest.mark.parametrize("part", range(PARTS), ids=[f"part {i + 1} of {PARTS}" for i in range(PARTS)])
def test_protocol_machine(rig: Rig, part: int, record_property: object) -> None:
    try:
        run_stateful(lambda: ProtocolMachine(rig.bench()), part, PARTS, PROTOCOL_MACHINE_EXAMPLES)
    except Flaky as exc:
        if not rig.failures:
            raise
        raise AssertionError(
            f"{RULE_ID}: the server failed an example, then answered the same requests differently "
            "when hypothesis ran them again (its answers depend on more than the sequence: state from "
            f"earlier examples, timing), so the failure could not be shrunk. The first failure:\n"
            f"{rig.failures[0]}\nthe last failing sequence is saved as {rig.save_to}: "
            f"{rig.replay.format(file=rig.save_to)}") from exc
    except AssertionError:
        if rig.save_to.exists():  # the shrunk sequence: hypothesis runs it last
            exchanges, notes = load(rig.save_to)
            allure.attach("\n".join(notes) + "\n\n" + describe(exchanges), name=f"{RULE_ID} sequence",
                          attachment_type=allure.attachment_type.TEXT)
            allure.attach(rig.save_to.read_bytes(), name=rig.save_to.name,
                          attachment_type=allure.attachment_type.PCAP)
        raise
    finally:
        record_property("examples", rig.examples)  # type: ignore[operator]
        record_property("daemon restarts", rig.restarts)  # type: ignore[operator]
