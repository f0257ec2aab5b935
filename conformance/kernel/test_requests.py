"""What the kernel sends, judged: the workload's whole recording through protocol.kernel_audit.

Each rule takes the findings of its own codes; FUSE-KERNEL-001 takes every other one,
so no finding goes unreported.
"""

from __future__ import annotations

from collections import Counter

from conformance.kernel.probe import Workload, attach_recording, report
from conformance.rules import rule
from protocol import constants as c
from protocol.findings import Finding
from protocol.kernel_audit import DESTROY, FORGET, LIMITS, LOOKUP_COUNT, UNIQUE

#: The finding codes each rule answers for; FUSE-KERNEL-001 answers for the rest
CODES = {
    "FUSE-KERNEL-002": {"request.unique-reused"},
    "FUSE-KERNEL-003": {"forget.unknown-nodeid", "forget.exceeds-lookups", "forget.zero"},
    "FUSE-KERNEL-004": {"forget.unbalanced"},
    "FUSE-KERNEL-005": {"request.after-destroy"},
    "FUSE-KERNEL-006": {"request.nodeid-unknown"},
}
_CLAIMED = set().union(*CODES.values())


def findings_of(rule_id: str, findings: list[Finding]) -> list[Finding]:
    if rule_id == "FUSE-KERNEL-001":
        return [f for f in findings if f.code not in _CLAIMED]
    return [f for f in findings if f.code in CODES[rule_id]]


def judge(rule_id: str, workload: Workload, findings: list[Finding] | None = None) -> None:
    found = findings_of(rule_id, workload.findings if findings is None else findings)
    if found:
        attach_recording(workload.probe)
    assert not found, f"{len(found)} finding(s) on the kernel's requests:\n" + "\n".join(
        str(f) for f in found[:20])


def opcodes(workload: Workload) -> dict[str, int]:
    return dict(Counter(seen.opcode_name for seen in workload.audit.seen))


@rule("FUSE-KERNEL-001", "Every request the kernel sends is well formed and within what INIT "
      "settled: its length, body size and names for its opcode at the negotiated minor, an opcode "
      "that minor has, sizes within max_write and max_pages, and only features INIT agreed on",
      source=f"{LIMITS}; fs/fuse/dev.c fuse_dev_do_read", area="kernel", feature="requests")
def test_requests_well_formed(workload: Workload) -> None:
    negotiated = workload.audit.kernel.negotiated
    report("FUSE-KERNEL-001", {"requests": len(workload.audit.seen), "by_opcode": opcodes(workload),
                               "minor": negotiated.minor if negotiated else 0,
                               "flags": hex(negotiated.flags) if negotiated else "none"})
    assert negotiated is not None, "the recording has no accepted INIT"
    judge("FUSE-KERNEL-001", workload)


@rule("FUSE-KERNEL-002", "The kernel never sends a unique that a request still waiting for its "
      "reply has", source=UNIQUE, area="kernel", feature="requests")
def test_unique_not_reused(workload: Workload) -> None:
    uniques = [seen.unique for seen in workload.audit.seen if seen.opcode != c.FUSE_INTERRUPT]
    report("FUSE-KERNEL-002", {"requests": len(uniques), "distinct_uniques": len(set(uniques))})
    judge("FUSE-KERNEL-002", workload)


@rule("FUSE-KERNEL-003", "FORGET and BATCH_FORGET name only nodeids the server returned in an entry "
      "(LOOKUP, CREATE, MKNOD, MKDIR, SYMLINK, LINK, TMPFILE, READDIRPLUS), with nlookup at least 1 "
      "and never more than the lookups given and not yet forgotten",
      source=f"{LOOKUP_COUNT}; {FORGET}", area="kernel", feature="lookups")
def test_forget_only_what_was_given(workload: Workload) -> None:
    counts = opcodes(workload)
    report("FUSE-KERNEL-003", {"forget": counts.get("FUSE_FORGET", 0),
                               "batch_forget": counts.get("FUSE_BATCH_FORGET", 0)})
    judge("FUSE-KERNEL-003", workload)


@rule("FUSE-KERNEL-004", "Once the kernel holds no name of a nodeid (each was unlinked, removed or "
      "renamed over) and no open handle to it, it evicts the inode and, before the unmount, its "
      "FORGETs add up to every lookup it was given; what it still holds at the unmount lapses, "
      "FORGET or not (a /dev/fuse mount is aborted first and gets none)",
      source=f"{FORGET}; fs/fuse/inode.c fuse_kill_sb_anon; libfuse fuse_lowlevel.h (forget: on "
             "unmount the lookup count drops to zero implicitly)", area="kernel", feature="lookups")
def test_lookups_balanced(workload: Workload) -> None:
    after = workload.after_unmount()
    report("FUSE-KERNEL-004", {
        "settled": workload.settled, "settle_seconds": round(workload.settle_seconds, 3),
        "nodeids_held_at_unmount": len(workload.outstanding_at_unmount),
        "lookups_held_at_unmount": sum(workload.outstanding_at_unmount.values()),
        "forgets_after_unmount": sum(1 for s in after if s.opcode in (c.FUSE_FORGET,
                                                                      c.FUSE_BATCH_FORGET)),
    })
    judge("FUSE-KERNEL-004", workload, workload.unbalanced)


@rule("FUSE-KERNEL-005", "The kernel sends no request after DESTROY (a /dev/fuse mount gets no "
      "DESTROY: its unmount aborts the connection, and the server's next read fails with ENODEV)",
      source=DESTROY, area="kernel", feature="lifecycle")
def test_nothing_after_destroy(workload: Workload) -> None:
    after = workload.after_unmount()
    report("FUSE-KERNEL-005", {"destroy": workload.audit.destroyed,
                               "requests_after_unmount": len(after),
                               "after_unmount_by_opcode": dict(Counter(s.opcode_name for s in after))})
    judge("FUSE-KERNEL-005", workload)


@rule("FUSE-KERNEL-006", "Every request but RELEASE and RELEASEDIR (which may come after the FORGET) "
      "names the root or a nodeid the server returned in an entry and the kernel has not forgotten",
      source=f"{LOOKUP_COUNT}; fs/fuse/dev.c fuse_read_forget (FORGETs are read before queued "
             "requests)", area="kernel", feature="lookups")
def test_requests_name_live_nodeids(workload: Workload) -> None:
    report("FUSE-KERNEL-006", {"requests": len(workload.audit.seen),
                               "nodeids_given": len(workload.audit.lookups)})
    judge("FUSE-KERNEL-006", workload)
