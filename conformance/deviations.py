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
    strict: bool = True  # False: the fault shows only sometimes (it depends on timing)


KNOWN: dict[str, Deviation] = {
    "FUSE-INIT-006[minimal]": Deviation(
        LIBFUSE3_DAEMONS, "init.flags-not-offered",
        "libfuse 3.14 do_init always sets FUSE_BIG_WRITES in its reply, offered or not "
        "(max_write has superseded it); a kernel that did not offer the bit ignores it"),
    "FUSE-READDIR-001": Deviation(
        frozenset({"fuse-overlayfs"}), "without its sibling",
        "fuse-overlayfs 1.10 lists '.' but not '..' in the root directory (seen over the socket: "
        "'.', 'dir', 'hello.txt', 'link')"),
    "POSIX-MKDIR-002": Deviation(
        frozenset({"bindfs"}), "stat of s",
        "bindfs 1.14.7 drops the sticky bit in mkdir: mkdir(1777) with umask 022 gives 0755, "
        "not 1755"),
    "POSIX-UTIMENS-001": Deviation(
        frozenset({"bindfs", "fuse2fs"}), "the target gave ok",
        "bindfs 1.14.7 leaves mtime unchanged when futimens passes UTIME_OMIT for atime; fuse2fs "
        "1.47 keeps whole seconds (a set time loses its nanoseconds)"),
    "POSIX-MACHINE-001": Deviation(
        frozenset({"bindfs", "fuse2fs"}), "os.link(",
        "hard links get a nodeid each in libfuse's high-level API (bindfs, fuse2fs): after "
        "link(), the first name's cached nlink stays stale for its attr timeout, and (fuse2fs) "
        "data written through one name is not seen through the other; it shows only while "
        "the stale cache lasts, so a run may miss it", strict=False),
    "POSIX-PERM-001": Deviation(
        frozenset({"fuse2fs"}), "group member reads",
        "fuse2fs 1.47 checks access with the caller's primary group only, not its "
        "supplementary groups"),
    "POSIX-PERM-002": Deviation(
        frozenset({"fuse2fs"}), "0700 directory",
        "fuse2fs 1.47 does not check search permission on the directories of a path"),
    "POSIX-PERM-003": Deviation(
        frozenset({"fuse2fs"}), "alice's file",
        "fuse2fs 1.47 ignores the sticky bit: any user with write access removes others' files"),
    "POSIX-XATTR-002": Deviation(
        frozenset({"fuse2fs"}), "create again",
        "fuse2fs 1.47 ignores XATTR_CREATE (an existing name is replaced)"),
    "POSIX-XATTR-003": Deviation(
        frozenset({"fuse2fs"}), "remove again",
        "fuse2fs 1.47: removexattr of an absent name succeeds instead of ENODATA"),
}


def deviation(target: str, rule_id: str, param: str = "") -> Deviation | None:
    """The documented deviation of ``target`` from ``rule_id`` (for ``param``), if known."""
    for key in (f"{rule_id}[{param}]" if param else None, rule_id):
        entry = KNOWN.get(key) if key else None
        if entry and target in entry.targets:
            return entry
    return None
