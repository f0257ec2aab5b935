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
    expect: str | tuple[str, ...]  # text the failure message must contain (one of them)
    reason: str
    strict: bool = True  # False: the fault shows only sometimes (it depends on timing)

    def expected_in(self, text: str) -> bool:
        return any(e in text for e in ((self.expect,) if isinstance(self.expect, str) else self.expect))


#: One deviation per rule, or several when daemons deviate differently
KNOWN: dict[str, Deviation | tuple[Deviation, ...]] = {
    "FUSE-INIT-006[minimal]": (
        Deviation(
            LIBFUSE3_DAEMONS, "init.flags-not-offered",
            "libfuse 3.14 do_init always sets FUSE_BIG_WRITES in its reply, offered or not "
            "(max_write has superseded it); a kernel that did not offer the bit ignores it"),
        Deviation(
            frozenset({"virtiofsd"}), "FUSE_BIG_WRITES",
            "virtiofsd 7.2 (QEMU's C virtiofsd, its FUSE layer forked from libfuse 3) sets "
            "FUSE_BIG_WRITES in its INIT reply, offered or not, as libfuse does")),
    "FUSE-UNLINK-001": Deviation(
        frozenset({"virtiofsd"}), "FUSE_UNLINK answered EIO",
        "virtiofsd 7.2 answers UNLINK (and RMDIR) of a name it cannot look up with EIO, not ENOENT "
        "(lo_unlink: no inode for the name -> EIO); a guest whose cached dentry outlived a "
        "host-side removal gets EIO from unlink(2)"),
    "FUSE-INTERRUPT-001": Deviation(
        frozenset({"virtiofsd"}), "exited with status 1",
        "virtiofsd 7.2 keeps an INTERRUPT that names a request it already answered (libfuse's "
        "interrupt list) and gives the INTERRUPT's buffers back unused ('no reply sent'); the next "
        "request makes it answer that INTERRUPT with EAGAIN, which has no buffer left, and it exits "
        "with status 1 (seen with -d: 'unique: 5, error: -11 ..., outsize: 16', then exit). Linux's "
        "virtio-fs driver sends no INTERRUPT today, so guests do not hit it"),
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
    "FUSE-MACHINE-001": Deviation(
        frozenset({"fuse-overlayfs"}), ("subdirectories' '..'", "(names: none)"),
        "fuse-overlayfs 1.10 counts a directory's links from the subdirectories it holds in "
        "memory: once the kernel FORGETs a subdirectory, GETATTR of the parent answers one link "
        "fewer with nothing changed (find's leaf optimisation then skips it); and GETATTR of a "
        "file unlinked while open answers nlink 1, not 0 (both seen over the socket)"),
    "POSIX-MACHINE-001": (
        Deviation(
            frozenset({"bindfs", "fuse2fs"}), ("os.link(", "timestamps moved differently"),
            "hard links get a nodeid each in libfuse's high-level API (bindfs, fuse2fs): after "
            "link(), the first name's cached nlink stays stale for its attr timeout, and (fuse2fs) "
            "data written through one name is not seen through the other; it shows only while "
            "the stale cache lasts, so a run may miss it; fuse2fs 1.47 also stamps whole seconds, "
            "so a call in the same second as the last shows no time change", strict=False),
        Deviation(
            frozenset({"fuse-overlayfs"}), "timestamps moved differently",
            "fuse-overlayfs 1.10 marks each new directory opaque (sets trusted.overlay.opaque on "
            "it in the upper layer) after taking the attributes its MKDIR reply carries: the "
            "directory's ctime moves 0.5-4 ms later with no call in between (seen: lstat right "
            "after mkdir, then after a listing)")),
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
    "POSIX-ACL-007": Deviation(
        frozenset({"fuse-overlayfs"}), "after alice (groups ()) set the ACL",
        "fuse-overlayfs 1.10 keeps the setgid bit when an owner outside the file's group sets an "
        "access ACL (a 2664 file stays 2664; tmpfs makes it 0664): it does not negotiate "
        "FUSE_SETXATTR_EXT, so the kernel cannot pass FUSE_SETXATTR_ACL_KILL_SGID, and it writes the "
        "ACL to its upper layer as root"),
    "POSIX-ACL-009": Deviation(
        frozenset({"fuse-overlayfs"}), "d/a (umask ignored)",
        "fuse-overlayfs 1.10 ignores the parent's default ACL for a new file: open(O_CREAT, 0666) "
        "with umask 077 under a default ACL gives 0600 and no access ACL (tmpfs: 0664 and the "
        "default ACL, masked by the mode); the same in its upper directory"),
    "POSIX-ACL-010": Deviation(
        frozenset({"fuse-overlayfs"}), "d/sub: stat of d/sub",
        "fuse-overlayfs 1.10: mkdir(0777) with umask 077 under a default ACL gives 0700 and no access "
        "ACL (tmpfs: 0774 with the default as access ACL); the default ACL itself is copied"),
    "POSIX-XATTR-002": Deviation(
        frozenset({"fuse2fs"}), "create again",
        "fuse2fs 1.47 ignores XATTR_CREATE (an existing name is replaced)"),
    "POSIX-XATTR-003": Deviation(
        frozenset({"fuse2fs"}), "remove again",
        "fuse2fs 1.47: removexattr of an absent name succeeds instead of ENODATA"),
    # timestamps, owners, names (conformance/posix/test_times.py, test_owners.py, test_access.py,
    # test_names.py, test_types.py, test_sizes.py)
    **{rule_id: Deviation(
        frozenset({"fuse2fs"}), "times that went up",
        "fuse2fs 1.47 stamps whole seconds (every time it sets reads back with 0 ns, also on the "
        "image's 256-byte inodes), so a call in the same second as the previous stamp shows no "
        "change; it passes only when a second boundary falls between them", strict=False)
       for rule_id in ("POSIX-TIMES-001", "POSIX-TIMES-002", "POSIX-TIMES-003", "POSIX-TIMES-005",
                       "POSIX-TIMES-006", "POSIX-CHMOD-002", "POSIX-CHOWN-002", "POSIX-UTIMENS-002")},
    "POSIX-TIMES-004": Deviation(
        frozenset({"bindfs", "fuse2fs"}), "link f d/g: times that went up",
        "bindfs 1.14.7 answers LINK with a new nodeid (libfuse's high-level API), and since Linux 6.x "
        "fuse_link no longer invalidates the old inode's attributes, so the first name shows its "
        "cached ctime until the attr timeout; fuse2fs 1.47 stamps whole seconds", strict=False),
    "POSIX-OWNER-001": Deviation(
        frozenset({"passthrough_ll"}), "'uid': 0, 'gid'",
        "passthrough_ll (libfuse 3.14) creates every file as the daemon's own uid and gid: a file "
        "another user creates is owned by root"),
    "POSIX-OWNER-002": Deviation(
        frozenset({"passthrough_ll", "fuse-overlayfs", "fuse2fs"}), "stat of sg/f",
        "in a set-group-ID directory: passthrough_ll 3.14 makes root the owner; fuse-overlayfs 1.10 "
        "gives new files and directories the caller's group and no S_ISGID; fuse2fs 1.47 gives them "
        "the caller's group (new directories do get S_ISGID)"),
    "POSIX-OWNER-003": Deviation(
        frozenset({"passthrough_ll", "fuse-overlayfs", "bindfs"}), "stat of pub/f",
        "open(O_CREAT, 06755) by a non-root user: passthrough_ll 3.14 makes root the owner; "
        "fuse-overlayfs 1.10 creates the file and then fchowns it to the caller, which clears "
        "S_ISUID/S_ISGID (0755); bindfs 1.14.7 creates it with the mode less 07000 and then chowns it "
        "(0755, also for root)"),
    "POSIX-CHMOD-003": Deviation(
        frozenset({"fuse2fs"}), "in the group",
        "fuse2fs 1.47 looks at the caller's primary group only: an owner in the file's group by a "
        "supplementary group loses S_ISGID in chmod"),
    "POSIX-WRITE-002": Deviation(
        frozenset({"fuse2fs"}), "writes x: the target gave EPERM",
        "fuse2fs 1.47: a non-owner's write to a set-user-ID file fails with EPERM: the kernel sends "
        "the SETATTR that clears the bits as the writer, and fuse2fs allows a mode change only to "
        "the owner"),
    "POSIX-PERM-005": Deviation(
        frozenset({"fuse2fs"}), "rename alice's file away",
        "fuse2fs 1.47 ignores the sticky bit in rename and rmdir too"),
    "POSIX-TRUNC-002": Deviation(
        frozenset({"fuse2fs"}), "bob truncates r: the target gave ok",
        "fuse2fs 1.47: truncate(2) by a user without write permission returns success and leaves "
        "the size unchanged (tmpfs: EACCES)"),
    "POSIX-NAME-001": Deviation(
        frozenset({"fuse-overlayfs", "fuse2fs"}), "-byte name: the target gave",
        "fuse-overlayfs 1.10 refuses names longer than 251 bytes with ENAMETOOLONG (room for its "
        "'.wh.' whiteout prefix); fuse2fs 1.47 does not check the length: a 256-byte create gives "
        "ENOENT in a small directory, but EIO (and a read-only filesystem) or a crash (SIGABRT, "
        "'munmap_chunk(): invalid pointer') once a 1 KiB directory block holds three 255-byte names; "
        "a rename to a 256-byte name succeeds and the directory then lists with EIO"),
    "POSIX-NAME-002": Deviation(
        frozenset({"fuse2fs"}), "4095-byte target",
        "fuse2fs 1.47 on the suite's 64 MiB image (1 KiB blocks) refuses a symlink target longer "
        "than 1023 bytes with EINVAL (the kernel's ext4 allows one block and answers ENAMETOOLONG)"),
    "POSIX-UNLINK-002": Deviation(
        frozenset({"fuse-overlayfs"}), "the target gave ok (1,",
        "fuse-overlayfs 1.10: fstat through the descriptor of an open file whose last name was "
        "unlinked reports nlink 1, not 0"),
    "POSIX-OPEN-007": Deviation(
        frozenset({"fuse2fs"}), "create 0000",
        "fuse2fs 1.47 checks the new file's mode when it opens it in create: open(O_CREAT|O_RDWR, 0) "
        "by a non-root user fails with EACCES (and leaves the file created)"),
    "POSIX-FALLOCATE-002": Deviation(
        frozenset({"fuse2fs"}), "create 0000",
        "fuse2fs 1.47: open(O_CREAT|O_RDWR, 0) by a non-root user fails with EACCES (see "
        "POSIX-OPEN-007)"),
}


def failure_text(exc: BaseException) -> str:
    """What a failure says, with the failures inside a group: a timing-dependent deviation
    often ends as hypothesis's FlakyFailure, whose own message names none of them."""
    inner = exc.exceptions if isinstance(exc, BaseExceptionGroup) else ()
    return "\n".join((str(exc), *(failure_text(e) for e in inner)))


def deviation(target: str, rule_id: str, param: str = "") -> Deviation | None:
    """The documented deviation of ``target`` from ``rule_id`` (for ``param``), if known; a
    variant of a daemon (``passthrough_ll-asan``) has the deviations of the daemon."""
    from targets.daemons import REGISTRY

    known = REGISTRY.get(target)
    target = known.variant_of or target if known is not None else target
    for key in (f"{rule_id}[{param}]" if param else None, rule_id):
        entries = KNOWN.get(key) if key else None
        for entry in (entries,) if isinstance(entries, Deviation) else entries or ():
            if target in entry.targets:
                return entry
    return None
