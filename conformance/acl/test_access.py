"""Access decided by an access ACL: named users, the group class, the mask, directories.

The kernel's algorithm (``posix_acl_permission``): the owner gets USER_OBJ; else a matching
USER entry, limited by the mask; else every group entry (GROUP_OBJ and GROUP) that matches
one of the caller's groups (primary or supplementary), limited by the mask: granted if any
of them holds all the asked bits, EACCES if some matched but none does; else OTHER.
"""

from __future__ import annotations

from conformance.acl.access import ALICE, AUDIT, BOB, CAROL, DAVE, STAFF, TEAM, same_rights
from conformance.acl.setup import make, same_mode
from conformance.acl.xattr import acl
from conformance.posix.oracle import Twin
from conformance.rules import rule

AREA = "acl"
SOURCE = "Linux acl(5) ACCESS CHECK ALGORITHM; kernel fs/posix_acl.c posix_acl_permission"


@rule("POSIX-ACL-001", "A named-user entry decides for that user: it grants what it holds and refuses "
      "the rest with EACCES, even what the other entry grants", source=SOURCE,
      area=AREA, feature="named user")
def test_named_user(acl_twin: Twin) -> None:
    twin = acl_twin
    entries = acl("u::rw", f"u:{BOB}:rw", f"u:{CAROL}:", "g::r", "m::rw", "o::r")
    twin.same(lambda r: make(r, "f", entries), "setup: u::rw-,u:BOB:rw-,u:CAROL:---,g::r--,m::rw-,o::r--")
    assert same_mode(twin, "f", "after the ACL") == 0o664
    assert same_rights(twin, "bob (u:BOB:rw-)", BOB, "f") == "rw-"
    assert same_rights(twin, "carol (u:CAROL:---, other r--)", CAROL, "f") == "---"
    assert same_rights(twin, "dave (no entry: other r--)", DAVE, "f") == "r--"
    assert same_rights(twin, "alice (the owner, u::rw-)", ALICE, "f") == "rw-"


@rule("POSIX-ACL-002", "The group class: the owning-group and named-group entries match the primary and "
      "supplementary groups; one matching entry that grants suffices, a match that grants nothing "
      "refuses (EACCES) whatever the other entry says", source=SOURCE, area=AREA, feature="group class")
def test_group_class(acl_twin: Twin) -> None:
    twin = acl_twin
    entries = acl("u::rw", "g::r", f"g:{TEAM}:rw", f"g:{AUDIT}:", "m::rwx", "o::r")
    twin.same(lambda r: make(r, "f", entries, group=STAFF), "setup: g::r--,g:TEAM:rw-,g:AUDIT:---,o::r--")
    cases = [  # (who, gid, supplementary groups, expected)
        ("primary group = owning group", STAFF, (), "r--"),
        ("supplementary owning group", BOB, (STAFF,), "r--"),
        ("primary group = named group", TEAM, (), "rw-"),
        ("supplementary named group", BOB, (TEAM,), "rw-"),
        ("owning and named group: the one that grants", BOB, (STAFF, TEAM), "rw-"),
        ("matched a group entry granting nothing", BOB, (AUDIT,), "---"),
        ("a group that grants r, one that grants nothing", AUDIT, (STAFF,), "r--"),
        ("in no group of the ACL: other", BOB, (), "r--"),
    ]
    for who, gid, groups, expected in cases:
        got = same_rights(twin, f"bob, {who} (gid {gid}, groups {groups})", BOB, "f", gid=gid, groups=groups)
        assert got == expected, f"tmpfs gives {got} to bob, {who}: the oracle is broken"


@rule("POSIX-ACL-003", "The mask limits named-user, owning-group and named-group entries, never the owner "
      "or other", source=SOURCE, area=AREA, feature="mask")
def test_mask(acl_twin: Twin) -> None:
    twin = acl_twin
    entries = acl("u::rw", f"u:{BOB}:rw", "g::rw", f"g:{TEAM}:rw", "m::r", "o::rw")
    twin.same(lambda r: make(r, "f", entries), "setup: u:BOB:rw-,g::rw-,g:TEAM:rw-,m::r--,o::rw-")
    assert same_mode(twin, "f", "group bits are the mask") == 0o646
    assert same_rights(twin, "alice (owner)", ALICE, "f") == "rw-"
    assert same_rights(twin, "bob (u:BOB:rw- masked)", BOB, "f") == "r--"
    assert same_rights(twin, "carol (owning group rw- masked)", CAROL, "f", groups=(STAFF,)) == "r--"
    assert same_rights(twin, "carol (named group rw- masked)", CAROL, "f", groups=(TEAM,)) == "r--"
    assert same_rights(twin, "dave (other rw-, not masked)", DAVE, "f") == "rw-"


@rule("POSIX-ACL-004", "A directory's access ACL decides listing (r), creating (w) and search (x) for "
      "named users and groups", source=f"{SOURCE}; Linux path_resolution(7)",
      area=AREA, feature="directory rights")
def test_directory(acl_twin: Twin) -> None:
    twin = acl_twin
    entries = acl("u::rwx", f"u:{BOB}:rx", f"u:{CAROL}:x", "g::", f"g:{TEAM}:rwx", "m::rwx", "o::")
    twin.same(lambda r: make(r, "d", entries, mode=0o700, directory=True),
              "setup: a 0700 directory with u:BOB:r-x,u:CAROL:--x,g:TEAM:rwx")
    assert same_rights(twin, "bob (u:BOB:r-x)", BOB, "d") == "r-x"
    assert same_rights(twin, "carol (u:CAROL:--x)", CAROL, "d") == "--x"
    assert same_rights(twin, "dave (other ---)", DAVE, "d") == "---"
    assert same_rights(twin, "dave in TEAM (g:TEAM:rwx)", DAVE, "d", groups=(TEAM,)) == "rwx"
