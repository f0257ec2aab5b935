"""Default ACLs: what a new file or directory gets from its parent, and the umask.

``posix_acl_create``: a new inode in a directory with a default ACL gets that ACL as its
access ACL, each of USER_OBJ, the mask (or GROUP_OBJ) and OTHER limited by the mode the
creator asked for, and the umask is not applied; a new directory also gets it as its own
default ACL.  Without a default ACL the umask applies.  Through FUSE with FUSE_POSIX_ACL the
kernel sends the unmasked mode and the umask (FUSE_DONT_MASK): the server must choose.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from conformance.acl.access import ALICE, BOB, DAVE, TEAM, same_rights
from conformance.acl.setup import create_as, make, same_mode
from conformance.acl.xattr import ACCESS, DEFAULT, acl, get_acl
from conformance.posix.oracle import Twin
from conformance.rules import rule

AREA = "acl"
SOURCE = "Linux acl(5) OBJECT CREATION AND DEFAULT ACLs; kernel fs/posix_acl.c posix_acl_create"
DEFAULT_ACL = acl("u::rwx", f"u:{BOB}:rw", "g::rx", f"g:{TEAM}:rwx", "m::rwx", "o::r")
DEFAULT_TEXT = f"u::rwx,u:{BOB}:rw-,g::r-x,g:{TEAM}:rwx,m::rwx,o::r--"


def _acl_text(twin: Twin, relpath: str, what: str, *, default: bool = False) -> str:
    outcome = twin.same(lambda r: get_acl(r / relpath, default=default), what)
    return str(outcome.value) if outcome.ok else str(outcome.error)


def _created(twin: Twin, create: Callable[[Path], None], what: str) -> None:
    outcome = twin.same(create, what)
    assert outcome.ok, f"{what}: {outcome} on both"


def _with_default(twin: Twin) -> None:
    twin.same(lambda r: make(r, "d", mode=0o777, directory=True, default=DEFAULT_ACL),
              f"setup: directory d with the default ACL {DEFAULT_TEXT}")


@rule("POSIX-ACL-009", "A file created under a default ACL gets it as its access ACL, limited by the mode "
      "asked for, and the umask is ignored", source=SOURCE, area=AREA, feature="default ACL")
def test_default_acl_files(acl_twin: Twin) -> None:
    twin = acl_twin
    _with_default(twin)
    _created(twin, create_as(ALICE, 0o077, "d/a", 0o666), "alice creates d/a 0666 with umask 077")
    _created(twin, create_as(ALICE, 0o077, "d/b", 0o600), "alice creates d/b 0600 with umask 077")
    assert same_mode(twin, "d/a", "d/a (umask ignored)") == 0o664
    assert _acl_text(twin, "d/a", "the ACL of d/a") == f"u::rw-,u:{BOB}:rw-,g::r-x,g:{TEAM}:rwx,m::rw-,o::r--"
    assert same_mode(twin, "d/b", "d/b") == 0o600
    assert _acl_text(twin, "d/b", "the ACL of d/b") == f"u::rw-,u:{BOB}:rw-,g::r-x,g:{TEAM}:rwx,m::---,o::---"
    assert _acl_text(twin, "d/a", "a file's default ACL", default=True) == "ENODATA"
    assert same_rights(twin, "bob on d/a (inherited u:BOB:rw-)", BOB, "d/a") == "rw-"
    assert same_rights(twin, "bob on d/b (mask ---)", BOB, "d/b") == "---"


@rule("POSIX-ACL-010", "A directory created under a default ACL gets it as its access ACL (limited by the "
      "mode) and as its own default ACL, so what is created below inherits again",
      source=SOURCE, area=AREA, feature="default ACL")
def test_default_acl_directories(acl_twin: Twin) -> None:
    twin = acl_twin
    _with_default(twin)
    for name, mode in (("d/sub", 0o777), ("d/shut", 0o700)):
        _created(twin, create_as(ALICE, 0o077, name, mode, directory=True),
                 f"alice mkdir {name} {mode:o}, umask 077")
    assert same_mode(twin, "d/sub", "d/sub") == 0o774
    assert _acl_text(twin, "d/sub", "the access ACL of d/sub") == DEFAULT_TEXT
    assert _acl_text(twin, "d/sub", "the default ACL of d/sub", default=True) == DEFAULT_TEXT
    assert same_mode(twin, "d/shut", "d/shut") == 0o700
    assert _acl_text(twin, "d/shut", "the access ACL of d/shut") == (
        f"u::rwx,u:{BOB}:rw-,g::r-x,g:{TEAM}:rwx,m::---,o::---")
    assert _acl_text(twin, "d/shut", "the default ACL of d/shut", default=True) == DEFAULT_TEXT
    _created(twin, create_as(ALICE, 0o077, "d/sub/f", 0o644), "alice creates d/sub/f 0644, umask 077")
    assert same_mode(twin, "d/sub/f", "d/sub/f") == 0o644
    assert _acl_text(twin, "d/sub/f", "the ACL of d/sub/f") == (
        f"u::rw-,u:{BOB}:rw-,g::r-x,g:{TEAM}:rwx,m::r--,o::r--")
    assert same_rights(twin, "dave in TEAM on d/sub (g:TEAM:rwx)", DAVE, "d/sub", groups=(TEAM,)) == "rwx"


@rule("POSIX-ACL-011", "Without a default ACL the umask applies and new files get no ACL; removing a "
      "directory's default ACL brings the umask back", source=SOURCE, area=AREA, feature="default ACL")
def test_umask_without_default(acl_twin: Twin) -> None:
    twin = acl_twin
    twin.same(lambda r: make(r, "plain", mode=0o777, directory=True), "setup: a directory, no default ACL")
    _created(twin, create_as(ALICE, 0o027, "plain/new", 0o666), "alice creates plain/new 0666, umask 027")
    _created(twin, create_as(ALICE, 0o027, "plain/sub", 0o777, directory=True),
             "alice mkdir plain/sub 0777, umask 027")
    assert same_mode(twin, "plain/new", "plain/new") == 0o640
    assert same_mode(twin, "plain/sub", "plain/sub") == 0o750
    for name in ("plain/new", "plain/sub"):
        assert twin.same(lambda r, n=name: os.getxattr(r / n, ACCESS),  # type: ignore[misc]
                         f"the access ACL of {name}").error == "ENODATA"
    _with_default(twin)
    twin.same(lambda r: os.removexattr(r / "d", DEFAULT), "remove d's default ACL")
    _created(twin, create_as(ALICE, 0o027, "d/new", 0o666), "alice creates d/new 0666, umask 027")
    assert same_mode(twin, "d/new", "d/new after the default ACL was removed") == 0o640
    assert _acl_text(twin, "d/new", "the ACL of d/new") == "ENODATA"
