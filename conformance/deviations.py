"""Known deviations of real daemons from a rule: the rule stays, the test says why.

A deviation marks the test ``xfail(strict=True)``, so a fixed daemon shows up
as XPASS-strict (a failure to update this table).  Keys are a rule id, or a
rule id with a parameter id (``FUSE-INIT-006[minimal]``); each entry names the
daemons and the reason, with the evidence.
"""

from __future__ import annotations

from dataclasses import dataclass

LIBFUSE3_DAEMONS = frozenset({"hello_ll", "passthrough_ll", "squashfuse_ll", "fuse-overlayfs"})


@dataclass(frozen=True)
class Deviation:
    targets: frozenset[str]
    reason: str


KNOWN: dict[str, Deviation] = {
    "FUSE-INIT-006[minimal]": Deviation(
        LIBFUSE3_DAEMONS,
        "libfuse 3.14 do_init always sets FUSE_BIG_WRITES in its reply, offered or not "
        "(max_write has superseded it); a kernel that did not offer the bit ignores it"),
    "FUSE-READDIR-001": Deviation(
        frozenset({"fuse-overlayfs"}),
        "fuse-overlayfs 1.10 lists '.' but not '..' in the root directory (seen over the socket: "
        "'.', 'dir', 'hello.txt', 'link')"),
}


def deviation(target: str, rule_id: str, param: str = "") -> str | None:
    """The documented reason ``target`` breaks ``rule_id`` (for ``param``), if known."""
    for key in (f"{rule_id}[{param}]" if param else None, rule_id):
        entry = KNOWN.get(key) if key else None
        if entry and target in entry.targets:
            return entry.reason
    return None
