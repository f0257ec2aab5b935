"""Which timestamps a call moves: by order, against tmpfs (``stamps.moved``).

Each check names what tmpfs must show too (``"mc"``: mtime and ctime went up, ``"c"``: only
ctime, ``""``: neither), so a broken oracle shows. Only names whose attributes the kernel
invalidates through a FUSE mount are looked at (see ``stamps``).

Left out, on purpose: truncate(2) to the same size (POSIX asks for new times only when the size
changes; tmpfs sets them when the file has pages and not when it is empty, ext4 always) and
chown(-1, -1) (the VFS marks ctime, but FUSE sends a SETATTR without any attribute, so no daemon is
told to change it).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest

from conformance.posix.oracle import Twin
from conformance.posix.stamps import lstats, moved
from conformance.rules import rule

POSIX = "POSIX.1-2017"
AREA = "posix"


def _create(path: Path, flags: int = os.O_WRONLY | os.O_CREAT) -> None:
    os.close(os.open(path, flags, 0o644))


@rule("POSIX-TIMES-001", "Creating a file, directory, FIFO or symlink stamps it and updates its "
      "parent's mtime and ctime; a create that fails or opens an existing file changes no time",
      source=f"{POSIX} open(): O_CREAT, mkdir(), mkfifo(), symlink(): 'shall mark for update'",
      area=AREA)
def test_create_times(twin: Twin, features: frozenset[str]) -> None:
    twin.same(lambda r: os.mkdir(r / "d"), "setup")
    new = [("d/f", lambda r: _create(r / "d" / "f")), ("d/sub", lambda r: os.mkdir(r / "d" / "sub"))]
    if "mknod" in features:
        new.append(("d/p", lambda r: os.mkfifo(r / "d" / "p")))
    if "symlink" in features:
        new.append(("d/l", lambda r: os.symlink("f", r / "d" / "l")))
    for name, call in new:
        assert moved(twin, call, f"create {name}", lstats("d", name))[1] == {"d": "mc", name: "mc"}
    again = [("open O_CREAT", lambda r: _create(r / "d" / "f"), None),
             ("open O_CREAT|O_EXCL", lambda r: _create(r / "d" / "f", os.O_WRONLY | os.O_CREAT | os.O_EXCL),
              "EEXIST"),
             ("mkdir", lambda r: os.mkdir(r / "d" / "f"), "EEXIST")]
    if "mknod" in features:
        again.append(("mkfifo", lambda r: os.mkfifo(r / "d" / "f"), "EEXIST"))
    if "symlink" in features:
        again.append(("symlink", lambda r: os.symlink("x", r / "d" / "f"), "EEXIST"))
    for what, call, error in again:
        outcome, times = moved(twin, call, f"{what} of the existing d/f", lstats("d", "d/f"))
        assert outcome.error == error and times == {"d": "", "d/f": ""}


@rule("POSIX-TIMES-002", "unlink and rmdir update the parent's mtime and ctime and the unlinked "
      "file's ctime; an unlink or rmdir that fails changes no time",
      source=f"{POSIX} unlink(), rmdir(); Linux: the unlinked inode's ctime", area=AREA)
def test_remove_times(twin: Twin) -> None:
    def setup(root: Path) -> None:
        os.mkdir(root / "d")
        (root / "d" / "f").write_bytes(b"data")
        os.mkdir(root / "d" / "empty")
        os.mkdir(root / "d" / "full")
        (root / "d" / "full" / "x").write_bytes(b"")

    twin.same(setup, "setup")
    fds = {root: os.open(root / "d" / "f", os.O_RDONLY) for root in (twin.target, twin.reference)}
    try:
        def look(root: Path) -> dict[str, os.stat_result]:
            return {**lstats("d", "d/full")(root), "f (open)": os.fstat(fds[root])}

        assert moved(twin, lambda r: os.unlink(r / "d" / "f"), "unlink d/f", look
                     )[1] == {"d": "mc", "d/full": "", "f (open)": "c"}
        assert moved(twin, lambda r: os.rmdir(r / "d" / "empty"), "rmdir d/empty", look
                     )[1] == {"d": "mc", "d/full": "", "f (open)": ""}
        for what, call, error in [("unlink d/f again", lambda r: os.unlink(r / "d" / "f"), "ENOENT"),
                                  ("rmdir d/full", lambda r: os.rmdir(r / "d" / "full"), "ENOTEMPTY"),
                                  ("unlink d/full", lambda r: os.unlink(r / "d" / "full"), "EISDIR")]:
            outcome, times = moved(twin, call, what, look)
            assert outcome.error == error and times == {"d": "", "d/full": "", "f (open)": ""}
    finally:
        for fd in fds.values():
            os.close(fd)


@rule("POSIX-TIMES-003", "rename updates the ctime of what it moves (not its mtime) and the mtime and "
      "ctime of both parents; a rename that fails changes no time",
      source=f"{POSIX} rename(); Linux: simple_rename_timestamp (POSIX leaves the moved file's ctime "
      "open, Linux marks it)", area=AREA)
def test_rename_times(twin: Twin) -> None:
    def setup(root: Path) -> None:
        for name in ("a", "b", "a/g"):
            os.mkdir(root / name)
        (root / "a" / "f").write_bytes(b"data")

    twin.same(setup, "setup")
    look = lstats("a", "b", "a/f", "b/f", "a/g", "b/g", "b/h")
    assert moved(twin, lambda r: os.rename(r / "a" / "f", r / "b" / "f"), "rename a/f b/f", look
                 )[1] == {"a": "mc", "b": "mc", "b/f": "c", "a/g": ""}
    assert moved(twin, lambda r: os.rename(r / "a" / "g", r / "b" / "g"), "rename a/g b/g", look
                 )[1] == {"a": "mc", "b": "mc", "b/f": "", "b/g": "c"}
    assert moved(twin, lambda r: os.rename(r / "b" / "f", r / "b" / "h"), "rename b/f b/h", look
                 )[1] == {"a": "", "b": "mc", "b/g": "", "b/h": "c"}
    for old, new, error in [("a/f", "b/x", "ENOENT"), ("b/h", "b/g", "EISDIR"), ("b/g", "b/h", "ENOTDIR")]:
        outcome, times = moved(twin, lambda r, o=old, n=new: os.rename(r / o, r / n),  # type: ignore[misc]
                               f"rename {old} {new}", look)
        assert outcome.error == error and times == {"a": "", "b": "", "b/g": "", "b/h": ""}


@rule("POSIX-TIMES-004", "link updates the file's ctime and the new parent's mtime and ctime; a link "
      "that fails (EEXIST) changes no time", source=f"{POSIX} link(): 'shall mark for update'",
      area=AREA)
def test_link_times(twin: Twin, features: frozenset[str]) -> None:
    if "hardlink" not in features:
        pytest.skip("not applicable: the target does not offer hardlink")
    twin.same(lambda r: ((r / "f").write_bytes(b"data"), os.mkdir(r / "d")), "setup")
    look = lstats(".", "f", "d", "d/g")
    assert moved(twin, lambda r: os.link(r / "f", r / "d" / "g"), "link f d/g", look
                 )[1] == {".": "", "f": "c", "d": "mc", "d/g": "c"}
    outcome, times = moved(twin, lambda r: os.link(r / "f", r / "d" / "g"), "link f d/g again", look)
    assert outcome.error == "EEXIST" and times == {".": "", "f": "", "d": "", "d/g": ""}


@rule("POSIX-TIMES-005", "chmod, chown and utimensat update ctime, not mtime (utimensat sets mtime as "
      "asked); none of them changes the parent's times",
      source=f"{POSIX} chmod(), chown(), futimens(): 'shall mark for update the last file status "
      "change timestamp'", area=AREA)
def test_attr_times(twin: Twin) -> None:
    twin.same(lambda r: ((r / "f").write_bytes(b"data"), os.mkdir(r / "d")), "setup")
    look = lstats(".", "f", "d")
    steps = [("chmod f", lambda r: os.chmod(r / "f", 0o600), {"f": "c"}),
             ("chmod d", lambda r: os.chmod(r / "d", 0o700), {"d": "c"}),
             ("chown f", lambda r: os.chown(r / "f", 1234, 5678), {"f": "c"}),
             ("chown d", lambda r: os.chown(r / "d", -1, 5678), {"d": "c"}),
             ("utimensat f to the past", lambda r: os.utime(r / "f", ns=(10**9, 10**9)), {"f": "c"}),
             ("utimensat f to now", lambda r: os.utime(r / "f"), {"f": "mc"})]
    for what, call, changed in steps:
        assert moved(twin, call, what, look)[1] == {".": "", "f": "", "d": "", **changed}
    outcome, times = moved(twin, lambda r: os.chmod(r / "x", 0o600), "chmod of a missing name", look)
    assert outcome.error == "ENOENT" and times == {".": "", "f": "", "d": ""}


@rule("POSIX-TIMES-006", "write, truncate to a new size, ftruncate (also to the same size) and "
      "O_TRUNC update mtime and ctime; a read or a failed truncate changes neither",
      source=f"{POSIX} write(), truncate(), ftruncate(), open(): O_TRUNC; Linux: ftruncate always "
      "passes ATTR_MTIME|ATTR_CTIME", area=AREA)
def test_data_times(twin: Twin) -> None:
    twin.same(lambda r: ((r / "f").write_bytes(b"0123456789"), os.mkdir(r / "d")), "setup")
    fds = {root: os.open(root / "f", os.O_RDWR) for root in (twin.target, twin.reference)}
    try:
        def look(root: Path) -> dict[str, os.stat_result]:
            return {**lstats(".")(root), "f": os.fstat(fds[root])}

        def on_fd(call: Callable[[int], object]) -> Callable[[Path], object]:
            return lambda root: call(fds[root])

        steps: list[tuple[str, Callable[[Path], object], str]] = [
            ("pwrite", on_fd(lambda fd: os.pwrite(fd, b"ab", 3)), "mc"),
            ("pread", on_fd(lambda fd: os.pread(fd, 4, 0)), ""),
            ("truncate to 4", lambda r: os.truncate(r / "f", 4), "mc"),
            ("ftruncate to 8", on_fd(lambda fd: os.ftruncate(fd, 8)), "mc"),
            ("ftruncate to the same size", on_fd(lambda fd: os.ftruncate(fd, 8)), "mc"),
            ("open O_TRUNC", lambda r: os.close(os.open(r / "f", os.O_WRONLY | os.O_TRUNC)), "mc")]
        for what, call, changed in steps:
            assert moved(twin, call, what, look)[1] == {".": "", "f": changed}
        outcome, times = moved(twin, lambda r: os.truncate(r / "d", 0), "truncate of a directory",
                               lstats(".", "d"))
        assert outcome.error == "EISDIR" and times == {".": "", "d": ""}
    finally:
        for fd in fds.values():
            os.close(fd)


@rule("POSIX-UTIMENS-003", "utimensat sets times after 2038 and before 1970 exactly; with "
      "AT_SYMLINK_NOFOLLOW it sets a symlink's own times and leaves its target's",
      source=f"{POSIX} utimensat(): AT_SYMLINK_NOFOLLOW; Linux: 64-bit time64_t timestamps", area=AREA)
def test_utimens_range_and_symlink(twin: Twin, features: frozenset[str]) -> None:
    twin.same(lambda r: (r / "f").write_bytes(b""), "setup")
    for what, times in [("after 2038", (2**31 + 12345, 2**33)), ("before 1970", (-10**9, -1)),
                        ("at the epoch", (0, 1))]:
        ns = (times[0] * 10**9, times[1] * 10**9)
        twin.same(lambda r, ns=ns: os.utime(r / "f", ns=ns), f"utimensat {what}")  # type: ignore[misc]
        got = twin.same(lambda r: (os.stat(r / "f").st_atime_ns, os.stat(r / "f").st_mtime_ns),
                        f"times {what}").value
        assert got == ns, f"{what}: times {got}, not {ns}"
    if "symlink" not in features:
        return
    twin.same(lambda r: (os.utime(r / "f", ns=(10**9, 10**9)), os.symlink("f", r / "l")), "symlink")
    twin.same(lambda r: os.utime(r / "l", ns=(2 * 10**9, 3 * 10**9), follow_symlinks=False),
              "utimensat AT_SYMLINK_NOFOLLOW")
    link = twin.same(lambda r: os.lstat(r / "l").st_mtime_ns, "the link's mtime").value
    target = twin.same(lambda r: os.stat(r / "f").st_mtime_ns, "the target's mtime").value
    assert (link, target) == (3 * 10**9, 10**9)
