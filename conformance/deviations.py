"""Known deviations of real daemons from a rule: the rule stays, the test says why.

A deviation marks the test ``xfail(strict=True)`` for the named daemons, and
names the failure it expects (text of the failure message, e.g. a finding
code): any other failure of that test is still a failure, and a daemon that
no longer deviates shows up as XPASS(strict), a failure that asks to update
this table.  Keys are a rule id, or a rule id with a parameter id
(``FUSE-INIT-006[minimal]``).
"""

from __future__ import annotations

from dataclasses import dataclass

LIBFUSE3_DAEMONS = frozenset({"hello_ll", "passthrough_ll", "squashfuse_ll", "fuse-overlayfs"})


@dataclass(frozen=True)
class Deviation:
    targets: frozenset[str]
    expect: str  # text the failure message must contain
    reason: str


KNOWN: dict[str, Deviation] = {
    "FUSE-INIT-006[minimal]": Deviation(
        LIBFUSE3_DAEMONS, "init.flags-not-offered",
        "libfuse 3.14 do_init always sets FUSE_BIG_WRITES in its reply, offered or not "
        "(max_write has superseded it); a kernel that did not offer the bit ignores it"),
    "FUSE-READDIR-001": Deviation(
        frozenset({"fuse-overlayfs"}), "without its sibling",
        "fuse-overlayfs 1.10 lists '.' but not '..' in the root directory (seen over the socket: "
        "'.', 'dir', 'hello.txt', 'link')"),
}


def deviation(target: str, rule_id: str, param: str = "") -> Deviation | None:
    """The documented deviation of ``target`` from ``rule_id`` (for ``param``), if known."""
    for key in (f"{rule_id}[{param}]" if param else None, rule_id):
        entry = KNOWN.get(key) if key else None
        if entry and target in entry.targets:
            return entry
    return None
