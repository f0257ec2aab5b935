"""The ACL xattr format: what is refused, and what reads back.

Linux checks an ACL xattr before any filesystem sees it (``posix_acl_from_xattr``, then
``posix_acl_valid`` in ``set_posix_acl``): a FUSE server gets only valid ACLs, re-encoded by
the kernel (``posix_acl_to_xattr``).  Named entries may repeat and come in any id order: the
kernel accepts them (setfacl's own checks refuse duplicates, the kernel does not).
"""

from __future__ import annotations

import os
from pathlib import Path

from conformance.acl.access import BOB, CAROL
from conformance.acl.setup import make, same_mode
from conformance.acl.xattr import (
    ACCESS,
    DEFAULT,
    GROUP,
    GROUP_OBJ,
    MASK,
    OTHER,
    UNDEFINED_ID,
    USER,
    USER_OBJ,
    acl,
    encode,
    text,
)
from conformance.posix.oracle import Outcome, Twin
from conformance.rules import rule

AREA = "acl"
SOURCE = ("Linux acl(5) VALID ACLs; uapi linux/posix_acl_xattr.h; kernel fs/posix_acl.c "
          "posix_acl_from_xattr, posix_acl_valid")
U = UNDEFINED_ID
GOOD = [(USER_OBJ, 6, U), (USER, 4, BOB), (GROUP_OBJ, 4, U), (MASK, 4, U), (OTHER, 0, U)]
#: name -> (value, what tmpfs answers); errno 95 is named ENOTSUP (= EOPNOTSUPP on Linux)
MALFORMED: dict[str, tuple[bytes, str]] = {
    "version 1": (encode(GOOD, version=1), "ENOTSUP"),
    "header cut short": (encode(GOOD)[:2], "EINVAL"),
    "a ragged last entry": (encode(GOOD)[:-2], "EINVAL"),
    "unknown tag 0x40": (encode([GOOD[0], (0x40, 4, U), *GOOD[2:]]), "EINVAL"),
    "perm bit 8": (encode([(USER_OBJ, 8 | 6, U), *GOOD[1:]]), "EINVAL"),
    "no USER_OBJ": (encode(GOOD[1:]), "EINVAL"),
    "no GROUP_OBJ": (encode([*GOOD[:2], *GOOD[3:]]), "EINVAL"),
    "no OTHER": (encode(GOOD[:-1]), "EINVAL"),
    "a named entry without a mask": (encode([*GOOD[:3], GOOD[4]]), "EINVAL"),
    "USER_OBJ twice": (encode([GOOD[0], *GOOD]), "EINVAL"),
    "GROUP_OBJ before USER_OBJ": (encode([GOOD[2], GOOD[0], GOOD[1], *GOOD[3:]]), "EINVAL"),
    "named user with the undefined id": (encode([GOOD[0], (USER, 4, U), *GOOD[2:]]), "EINVAL"),
    "named group with the undefined id": (encode([*GOOD[:3], (GROUP, 4, U), *GOOD[3:]]), "EINVAL"),
}


def _shown(outcome: Outcome) -> str:
    """An ACL getxattr's outcome as text (hex when it is no ACL at all)."""
    if not outcome.ok:
        return str(outcome.error)
    try:
        return text(outcome.value)
    except ValueError:
        return f"not an ACL: {bytes(outcome.value).hex()}"


@rule("POSIX-ACL-012", "A malformed ACL xattr is refused as tmpfs refuses it (EINVAL; EOPNOTSUPP for a "
      "version other than 2) and changes neither the ACL nor the mode", source=SOURCE,
      area=AREA, feature="xattr format")
def test_malformed_refused(acl_twin: Twin) -> None:
    twin = acl_twin
    before = acl("u::rw", f"u:{CAROL}:rw", "g::r", "m::rw", "o::")
    twin.same(lambda r: make(r, "f", before), "setup: u::rw-,u:CAROL:rw-,g::r--,m::rw-,o::---")
    twin.same(lambda r: make(r, "d", mode=0o755, directory=True, default=before), "setup: d with a default")
    wrong = []
    for case, (value, expected) in MALFORMED.items():
        for relpath, name in (("f", ACCESS), ("d", DEFAULT)):
            got, want = twin.run(lambda r, p=relpath, n=name, v=value: os.setxattr(r / p, n, v))  # type: ignore[misc]
            assert want.error == expected, f"tmpfs gives {want} to {case} ({name}): the oracle is broken"
            if got != want:
                wrong.append(f"{case} as {name}: {got}, tmpfs {want}")
    assert not wrong, "malformed ACLs: the target answered differently: " + "; ".join(wrong)
    kept = twin.same(lambda r: os.getxattr(r / "f", ACCESS), "the access ACL after the refusals")
    assert _shown(kept) == f"u::rw-,u:{CAROL}:rw-,g::r--,m::rw-,o::---"
    twin.same(lambda r: os.getxattr(r / "d", DEFAULT), "the default ACL after the refusals")
    assert same_mode(twin, "f", "the mode after the refusals") == 0o660


@rule("POSIX-ACL-013", "An ACL reads back byte for byte as tmpfs returns it (entries in their order, "
      "repeated named entries kept, undefined ids for the object entries), access and default, "
      "and listxattr names both", source=SOURCE, area=AREA, feature="xattr format")
def test_round_trip(acl_twin: Twin) -> None:
    twin = acl_twin
    unusual = encode([(USER_OBJ, 7, 0), (USER, 6, CAROL), (USER, 4, BOB), (USER, 2, CAROL),
                      (GROUP_OBJ, 5, 0), (GROUP, 1, 20101), (MASK, 7, 0), (OTHER, 4, 0)])
    default = encode(acl("u::rwx", f"u:{BOB}:rx", "g::r", "m::rx", "o::"))
    twin.same(lambda r: make(r, "f"), "setup: a file")
    twin.same(lambda r: make(r, "d", directory=True), "setup: a directory")
    twin.same(lambda r: os.setxattr(r / "f", ACCESS, unusual),
              "set an ACL with repeated, unsorted named users and ids on the object entries")
    twin.same(lambda r: os.setxattr(r / "d", DEFAULT, default), "set a default ACL")
    expected = {"f": f"u::rwx,u:{CAROL}:rw-,u:{BOB}:r--,u:{CAROL}:-w-,g::r-x,g:20101:--x,m::rwx,o::r--",
                "d": f"u::rwx,u:{BOB}:r-x,g::r--,m::r-x,o::---"}
    for relpath, name in (("f", ACCESS), ("d", DEFAULT)):
        got, want = twin.run(lambda r, p=relpath, n=name: os.getxattr(r / p, n))  # type: ignore[misc]
        assert got == want, (f"getxattr {name} of {relpath}: the target gave {_shown(got)}, "
                             f"tmpfs {_shown(want)}")
        assert _shown(want) == expected[relpath], f"tmpfs gives {_shown(want)}: the oracle is broken"

    def acl_names(root: Path) -> dict[str, list[str]]:
        return {p: sorted(n for n in os.listxattr(root / p) if n.startswith("system.posix_acl"))
                for p in ("f", "d")}

    assert twin.same(acl_names, "listxattr").value == {"f": [ACCESS], "d": [DEFAULT]}
    assert twin.same(lambda r: len(os.getxattr(r / "f", ACCESS)), "the size of the ACL").value == 4 + 8 * 8
