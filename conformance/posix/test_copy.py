"""copy_file_range(2): between files, into holes, at the source's end, within one file."""

from __future__ import annotations

import os
from pathlib import Path

from conformance.posix.oracle import Twin
from conformance.rules import rule

SOURCE = "Linux man-pages copy_file_range(2)"
AREA = "posix"
DATA = bytes(range(256)) * 64  # 16 KiB


def _copy(root: Path, src: str, dst: str, count: int, off_in: int, off_out: int) -> int:
    fd_in = os.open(root / src, os.O_RDONLY)
    fd_out = os.open(root / dst, os.O_RDWR)
    try:
        return os.copy_file_range(fd_in, fd_out, count, off_in, off_out)
    finally:
        os.close(fd_in)
        os.close(fd_out)


def _setup(root: Path) -> None:
    (root / "src").write_bytes(DATA)
    (root / "dst").write_bytes(b"d" * 1000)


@rule("POSIX-COPY-001", "copy_file_range copies a range into another file (over its data, past its "
      "end leaving a hole), returns fewer bytes at the source's end and 0 past it",
      source=SOURCE, area=AREA)
def test_copy_between_files(twin: Twin) -> None:
    twin.same(_setup, "setup")
    for what, count, off_in, off_out, copied in [("into the middle", 100, 10, 500, 100),
                                                 ("past the end, leaving a hole", 4096, 4096, 20000, 4096),
                                                 ("short at the source's end", 1000, len(DATA) - 300, 0, 300),
                                                 ("past the source's end", 100, len(DATA) + 10, 0, 0)]:
        got = twin.same(lambda r, c=count, i=off_in, o=off_out: _copy(r, "src", "dst", c, i, o),  # type: ignore[misc]
                        f"copy {what}")
        assert got.value == copied, f"copy {what}: {got.value} bytes, not {copied}"
    want = DATA[-300:] + b"d" * 200 + DATA[10:110] + b"d" * 400 + bytes(20000 - 1000) + DATA[4096:8192]
    assert twin.same(lambda r: (r / "dst").read_bytes(), "destination").value == want
    assert twin.same_stat("dst", "destination")["size"] == 24096
    assert twin.same(lambda r: (r / "src").read_bytes(), "source").value == DATA


@rule("POSIX-COPY-002", "copy_file_range within one file copies between disjoint ranges and fails "
      "with EINVAL when they overlap", source=f"{SOURCE}: EINVAL", area=AREA)
def test_copy_same_file(twin: Twin) -> None:
    twin.same(_setup, "setup")
    assert twin.same(lambda r: _copy(r, "src", "src", 1000, 0, 8192), "disjoint ranges").value == 1000
    assert twin.same(lambda r: _copy(r, "src", "src", 1000, 0, 500), "overlapping ranges"
                     ).error == "EINVAL"
    want = DATA[:8192] + DATA[:1000] + DATA[9192:]
    assert twin.same(lambda r: (r / "src").read_bytes(), "after the copies").value == want
