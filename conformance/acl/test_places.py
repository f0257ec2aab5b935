"""Where ACLs may live, and that they stay with the inode: default ACLs only on directories, no
ACL on a symlink itself, and access decided by the same ACL after a rename or through a link."""

from __future__ import annotations

import os
from pathlib import Path

from conformance.acl.access import ALICE, BOB, CAROL, DAVE, TEAM, same_rights
from conformance.acl.setup import make
from conformance.acl.xattr import ACCESS, DEFAULT, acl, encode
from conformance.posix.oracle import Twin
from conformance.rules import rule

AREA = "acl"
SOURCE = ("Linux acl(5) (default ACLs are for directories); kernel fs/posix_acl.c set_posix_acl "
          "(EACCES for a default ACL on a non-directory), vfs_set_acl (EOPNOTSUPP for a symlink)")
ENTRIES = acl("u::rw", f"u:{BOB}:rw", f"u:{CAROL}:", "g::r", f"g:{TEAM}:r", "m::rw", "o::r")


@rule("POSIX-ACL-015", "A default ACL is refused on a regular file (EACCES) and removing one there "
      "succeeds; neither an access nor a default ACL can be set on or read from a symlink itself "
      "(EOPNOTSUPP): the answers are tmpfs's", source=SOURCE, area=AREA, feature="where ACLs live")
def test_where_acls_live(acl_twin: Twin) -> None:
    twin = acl_twin
    value = encode(ENTRIES)

    def setup(root: Path) -> None:
        make(root, "f")
        os.symlink("f", root / "l")

    twin.same(setup, "setup: a file f and a symlink l to it")
    twin.same(lambda r: os.setxattr(r / "f", DEFAULT, value), "a default ACL on a regular file")
    twin.same(lambda r: os.removexattr(r / "f", DEFAULT), "removing a default ACL of a regular file")
    for name in (ACCESS, DEFAULT):
        twin.same(lambda r, n=name: os.setxattr(r / "l", n, value, follow_symlinks=False),  # type: ignore[misc]
                  f"{name} set on the symlink itself")
        twin.same(lambda r, n=name: os.getxattr(r / "l", n, follow_symlinks=False),  # type: ignore[misc]
                  f"{name} read from the symlink itself")
    twin.same(lambda r: os.listxattr(r / "f"), "the file's xattrs after all that")


@rule("POSIX-ACL-017", "An access ACL stays with the inode: after a rename into another directory, "
      "and through a hard link, the same users get the same rights as before",
      source="POSIX rename(2), link(2): the inode keeps its attributes; Linux acl(5)",
      area=AREA, feature="named user")
def test_acl_after_rename_and_link(acl_twin: Twin) -> None:
    twin = acl_twin

    def setup(root: Path) -> None:
        make(root, "f", ENTRIES)
        os.mkdir(root / "other", 0o755)

    twin.same(setup, "setup: f with u:BOB:rw-,u:CAROL:---,g:TEAM:r--,m::rw-")
    users = ((BOB, "bob (u:BOB:rw-)"), (CAROL, "carol (u:CAROL:---)"), (DAVE, "dave (other r--)"),
             (ALICE, "alice (the owner)"))
    before = {uid: same_rights(twin, who, uid, "f") for uid, who in users}
    twin.same(lambda r: os.rename(r / "f", r / "other" / "g"), "rename f to other/g")
    twin.same(lambda r: os.link(r / "other" / "g", r / "h"), "link other/g as h")
    for relpath in ("other/g", "h"):
        for uid, who in users:
            assert same_rights(twin, who, uid, relpath) == before[uid], f"{who} on {relpath}"
