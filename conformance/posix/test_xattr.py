"""Extended attributes: ENODATA, ERANGE, XATTR_CREATE/XATTR_REPLACE, listing, removal."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from conformance.posix.oracle import Twin
from conformance.rules import rule

SOURCE = "Linux man-pages setxattr(2), getxattr(2), listxattr(2)"
AREA = "posix"


@pytest.fixture
def xattr_file(twin: Twin, features: frozenset[str]) -> Twin:
    if "xattr" not in features:
        pytest.skip("not applicable: the target does not offer xattrs")
    twin.same(lambda r: (r / "f").write_bytes(b""), "create")
    return twin


@rule("POSIX-XATTR-001", "A user. xattr reads back as set; an absent one fails with ENODATA",
      source=SOURCE, area=AREA)
def test_set_get(xattr_file: Twin) -> None:
    twin = xattr_file
    twin.same(lambda r: os.setxattr(r / "f", "user.k", b"value\0bytes"), "setxattr")
    assert twin.same(lambda r: os.getxattr(r / "f", "user.k"), "getxattr").value == b"value\0bytes"
    assert twin.same(lambda r: os.getxattr(r / "f", "user.none"), "absent").error == "ENODATA"


@rule("POSIX-XATTR-002", "XATTR_CREATE on an existing name fails with EEXIST, XATTR_REPLACE on "
      "an absent one with ENODATA", source=SOURCE, area=AREA)
def test_create_replace(xattr_file: Twin) -> None:
    twin = xattr_file
    twin.same(lambda r: os.setxattr(r / "f", "user.k", b"1", os.XATTR_CREATE), "create")
    assert twin.same(lambda r: os.setxattr(r / "f", "user.k", b"2", os.XATTR_CREATE),
                     "create again").error == "EEXIST"
    assert twin.same(lambda r: os.setxattr(r / "f", "user.x", b"2", os.XATTR_REPLACE),
                     "replace absent").error == "ENODATA"
    twin.same(lambda r: os.setxattr(r / "f", "user.k", b"3", os.XATTR_REPLACE), "replace")
    assert twin.same(lambda r: os.getxattr(r / "f", "user.k"), "value").value == b"3"


@rule("POSIX-XATTR-003", "listxattr lists each name once; removexattr removes it, twice gives "
      "ENODATA", source=SOURCE, area=AREA)
def test_list_remove(xattr_file: Twin) -> None:
    twin = xattr_file

    def user_names(root: Path) -> list[str]:
        return sorted(n for n in os.listxattr(root / "f") if n.startswith("user."))

    twin.same(lambda r: [os.setxattr(r / "f", f"user.{n}", b"v") for n in "abc"], "set three")
    assert twin.same(user_names, "listxattr").value == ["user.a", "user.b", "user.c"]
    twin.same(lambda r: os.removexattr(r / "f", "user.b"), "remove")
    assert twin.same(lambda r: os.removexattr(r / "f", "user.b"), "remove again").error == "ENODATA"
    assert twin.same(user_names, "listxattr").value == ["user.a", "user.c"]


@rule("POSIX-XATTR-004", "getxattr into a buffer too small fails with ERANGE",
      source=SOURCE, area=AREA)
def test_erange(xattr_file: Twin) -> None:
    import ctypes

    twin = xattr_file
    libc = ctypes.CDLL(None, use_errno=True)

    def small_get(root: Path) -> int:
        buf = ctypes.create_string_buffer(2)
        n = libc.getxattr(bytes(root / "f"), b"user.k", buf, 2)
        if n < 0:
            code = ctypes.get_errno()
            raise OSError(code, os.strerror(code))
        return int(n)

    twin.same(lambda r: os.setxattr(r / "f", "user.k", b"longer than two"), "set")
    assert twin.same(small_get, "getxattr into 2 bytes").error == "ERANGE"
