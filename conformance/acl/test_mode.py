"""Mode bits and access ACL kept consistent: chmod rewrites the ACL, an ACL rewrites the mode.

With an ACL the mode's group bits are the mask (the owning group's entry when there is no
mask); chmod sets USER_OBJ, the mask (or GROUP_OBJ) and OTHER; setting an ACL sets the mode
(``posix_acl_update_mode``), and an ACL the mode says all of is kept as the mode alone.
A FUSE server with FUSE_POSIX_ACL does this itself: the kernel only forwards the SETATTR and
the SETXATTR, and checks access with whatever GETATTR and GETXATTR answer afterwards.
"""

from __future__ import annotations

import os
from pathlib import Path

from conformance.acl.access import ALICE, BOB, CAROL, STAFF, same_rights
from conformance.acl.setup import make, same_mode
from conformance.acl.xattr import ACCESS, acl, get_acl, set_acl
from conformance.posix.oracle import Twin
from conformance.posix.users import as_user
from conformance.rules import rule

AREA = "acl"
SOURCE = ("Linux acl(5) (ACL_MASK and the file mode); kernel fs/posix_acl.c __posix_acl_chmod, "
          "posix_acl_update_mode; fs/fuse/acl.c fuse_set_acl")


def _acl_text(twin: Twin, relpath: str, what: str) -> str:
    return str(twin.same(lambda r: get_acl(r / relpath), what).value)


@rule("POSIX-ACL-005", "chmod rewrites the ACL: the mask becomes the group bits (the owning group's entry "
      "stays), and access follows the new mask", source=SOURCE, area=AREA, feature="chmod and mask")
def test_chmod_rewrites_mask(acl_twin: Twin) -> None:
    twin = acl_twin
    entries = acl("u::rw", f"u:{BOB}:rw", "g::r", "m::rw", "o::")
    twin.same(lambda r: make(r, "f", entries), "setup: u::rw-,u:BOB:rw-,g::r--,m::rw-,o::---")
    assert same_rights(twin, "bob (u:BOB:rw-, mask rw-)", BOB, "f") == "rw-"
    steps = [  # (mode, the ACL after it, bob's rights, carol's in the owning group)
        (0o640, f"u::rw-,u:{BOB}:rw-,g::r--,m::r--,o::---", "r--", "r--"),
        (0o600, f"u::rw-,u:{BOB}:rw-,g::r--,m::---,o::---", "---", "---"),
        (0o674, f"u::rw-,u:{BOB}:rw-,g::r--,m::rwx,o::r--", "rw-", "r--"),
    ]
    for mode, want_acl, bob, carol in steps:
        twin.same(lambda r, m=mode: os.chmod(r / "f", m), f"chmod {mode:o}")  # type: ignore[misc]
        assert same_mode(twin, "f", f"after chmod {mode:o}") == mode
        assert _acl_text(twin, "f", f"the ACL after chmod {mode:o}") == want_acl
        assert same_rights(twin, f"bob after chmod {mode:o}", BOB, "f") == bob
        assert same_rights(twin, f"carol in STAFF after chmod {mode:o}", CAROL, "f", groups=(STAFF,)) == carol


@rule("POSIX-ACL-006", "Setting an access ACL sets the mode (owner, mask or owning group, other); one the "
      "mode says all of is kept as the mode alone; only the owner may set it (EPERM)",
      source=SOURCE, area=AREA, feature="chmod and mask")
def test_acl_sets_mode(acl_twin: Twin) -> None:
    twin = acl_twin
    twin.same(lambda r: make(r, "f", mode=0o644), "setup: a 0644 file")
    extended = acl("u::rx", f"u:{BOB}:rwx", "g::", "m::rw", "o::x")
    twin.same(lambda r: set_acl(r / "f", extended), "set u::r-x,u:BOB:rwx,g::---,m::rw-,o::--x")
    assert same_mode(twin, "f", "after an ACL with a mask") == 0o561
    assert same_rights(twin, "bob (u:BOB:rwx, mask rw-)", BOB, "f") == "rw-"
    minimal = acl("u::rw", "g::r", "o::")
    twin.same(lambda r: set_acl(r / "f", minimal), "set u::rw-,g::r--,o::--- (no mask)")
    assert same_mode(twin, "f", "after a minimal ACL") == 0o640
    assert twin.same(lambda r: os.getxattr(r / "f", ACCESS), "getxattr of a minimal ACL").error == "ENODATA"

    def bob_sets(root: Path) -> None:
        as_user(BOB, BOB, (), lambda: set_acl(root / "f", extended))

    assert twin.same(bob_sets, "bob sets an ACL on alice's file").error == "EPERM"
    assert same_mode(twin, "f", "after bob's refused ACL") == 0o640


@rule("POSIX-ACL-007", "Setting an access ACL clears the setgid bit unless the caller is in the file's "
      "group", source=f"{SOURCE}; fuse FUSE_SETXATTR_ACL_KILL_SGID", area=AREA, feature="setgid")
def test_acl_clears_setgid(acl_twin: Twin) -> None:
    twin = acl_twin
    entries = acl("u::rw", f"u:{BOB}:r", "g::rw", "m::rw", "o::r")
    for name in ("outside", "inside"):
        twin.same(lambda r, n=name: make(r, n, mode=0o2664), f"setup: a 2664 file {name}")  # type: ignore[misc]
    for name, groups, mode in (("outside", (), 0o664), ("inside", (STAFF,), 0o2664)):
        def alice_sets(root: Path, n: str = name, g: tuple[int, ...] = groups) -> None:
            as_user(ALICE, ALICE, g, lambda: set_acl(root / n, entries))

        twin.same(alice_sets, f"alice (groups {groups}) sets an ACL on her 2664 file")
        assert same_mode(twin, name, f"after alice (groups {groups}) set the ACL") == mode


@rule("POSIX-ACL-008", "Removing the access ACL keeps the mode (group bits: the old mask) and access "
      "falls back to it; a second removal changes nothing", source=SOURCE,
      area=AREA, feature="chmod and mask")
def test_remove_access_acl(acl_twin: Twin) -> None:
    twin = acl_twin
    entries = acl("u::rw", f"u:{BOB}:rw", "g::r", "m::rw", "o::")
    twin.same(lambda r: make(r, "f", entries), "setup: u::rw-,u:BOB:rw-,g::r--,m::rw-,o::---")
    assert same_rights(twin, "carol in STAFF (g::r--)", CAROL, "f", groups=(STAFF,)) == "r--"
    twin.same(lambda r: os.removexattr(r / "f", ACCESS), "removexattr")
    assert twin.same(lambda r: os.getxattr(r / "f", ACCESS), "getxattr after removal").error == "ENODATA"
    assert same_mode(twin, "f", "after removal") == 0o660
    assert same_rights(twin, "bob (no entry now: other ---)", BOB, "f") == "---"
    assert same_rights(twin, "carol in STAFF (group bits rw-)", CAROL, "f", groups=(STAFF,)) == "rw-"
    twin.same(lambda r: os.removexattr(r / "f", ACCESS), "removexattr again")
    assert same_mode(twin, "f", "after the second removal") == 0o660
