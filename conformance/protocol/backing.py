"""The differential oracle: the host directory a server serves against the model of it.

After a request that changes something, the same names must be in the backing
directory, with the same types and mode bits, link counts, sizes, contents, set
times and ``user.fc.*`` xattrs, and two names of one model inode must be one host
inode (and names of different inodes different ones).
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Callable
from pathlib import Path

from conformance.protocol.model import XATTR_PREFIX, Inode, Model, Problems

Hidden = Callable[[str, os.stat_result], bool]  # the daemon's own metadata in the directory


def host_problems(model: Model, root: Path, hidden: Hidden | None = None) -> Problems:
    """Where ``root`` (the host path of the model's top directory) differs from the model;
    entries ``hidden`` says are the daemon's metadata are left out."""
    out: Problems = []
    if model.top is None:
        return out
    seen: dict[tuple[int, int], int] = {}  # host (dev, ino) -> model inode key
    _compare_dir(model, model.top, os.fsencode(root), seen, out, hidden)
    return out


def _compare_dir(model: Model, node: Inode, path: bytes, seen: dict[tuple[int, int], int],
                 out: Problems, hidden: Hidden | None) -> None:
    shown = model.path(node)
    try:
        names = set(_list_quietly(path))
    except OSError as exc:
        out.append(f"host: listing {shown!r} fails: {exc}")
        return
    if hidden is not None:
        names = {n for n in names if n in node.entries or not _is_hidden(hidden, path + b"/" + n)}
    if names != set(node.entries):
        out.append(f"host: {shown!r} holds {sorted(names)}, the model has {sorted(node.entries)}")
    for name, key in node.entries.items():
        if name in names:
            _compare(model, model.inodes[key], path + b"/" + name, seen, out, hidden)


def _is_hidden(hidden: Hidden, path: bytes) -> bool:
    try:
        return hidden(os.fsdecode(os.path.basename(path)), os.lstat(path))
    except OSError:
        return False


def _compare(model: Model, node: Inode, path: bytes, seen: dict[tuple[int, int], int],
             out: Problems, hidden: Hidden | None) -> None:
    shown = model.path(node)
    try:
        st = os.lstat(path)
    except OSError as exc:
        out.append(f"host: lstat of {os.fsdecode(path)} fails: {exc}")
        return
    identity = (st.st_dev, st.st_ino)
    other = seen.setdefault(identity, node.key)
    if other != node.key:
        out.append(f"host: {os.fsdecode(path)} is the same host inode as "
                   f"{model.path(model.inodes[other])!r}, the model has them apart")
    if st.st_mode != node.mode:
        out.append(f"host: {shown!r} has mode {st.st_mode:#o}, the model says {node.mode:#o}")
    want_links = 2 + model.subdirs(node) if node.is_dir else len(node.links)
    if st.st_nlink != want_links:
        out.append(f"host: {shown!r} has nlink {st.st_nlink}, the model says {want_links}")
    if node.mtime is not None and st.st_mtime_ns != node.mtime[0] * 10**9 + node.mtime[1]:
        out.append(f"host: {shown!r} has mtime {st.st_mtime_ns} ns, SETATTR set "
                   f"{node.mtime[0] * 10**9 + node.mtime[1]}")
    if stat.S_ISREG(st.st_mode) and node.is_reg:
        try:
            held = _read_quietly(path)
        except OSError as exc:
            out.append(f"host: reading {shown!r} fails: {exc}")
            held = bytes(node.data)
        if held != node.data:
            out.append(f"host: {shown!r} holds {len(held)} bytes {held[:24]!r}..., the model "
                       f"{len(node.data)} bytes {bytes(node.data[:24])!r}...")
    if (node.is_reg or node.is_dir) and "xattr" not in model.refused:
        _compare_xattrs(model, node, path, out)
    if node.is_dir and stat.S_ISDIR(st.st_mode):
        _compare_dir(model, node, path, seen, out, hidden)


def _compare_xattrs(model: Model, node: Inode, path: bytes, out: Problems) -> None:
    try:
        names = sorted(os.fsencode(n) for n in os.listxattr(path, follow_symlinks=False)
                       if os.fsencode(n).startswith(XATTR_PREFIX))
        held = {n: os.getxattr(path, n, follow_symlinks=False) for n in names}
    except OSError as exc:
        if exc.errno in (errno.ENOTSUP, errno.ENOSYS):
            return
        out.append(f"host: xattrs of {model.path(node)!r}: {exc}")
        return
    if held != node.xattrs:
        out.append(f"host: {model.path(node)!r} has xattrs {held}, "
                   f"the model {dict(sorted(node.xattrs.items()))}")


def _read_quietly(path: bytes) -> bytes:
    """The file's bytes, without touching its atime (relatime would: SETATTR set one older
    than ctime), so the oracle does not change what it compares."""
    fd = os.open(path, os.O_RDONLY | os.O_NOATIME | os.O_NOFOLLOW)
    try:
        chunks = []
        while chunk := os.read(fd, 1 << 20):
            chunks.append(chunk)
        return b"".join(chunks)
    finally:
        os.close(fd)


def _list_quietly(path: bytes) -> list[bytes]:
    """The directory's names, without touching its atime."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOATIME)
    try:
        return [os.fsencode(name) for name in os.listdir(fd)]
    finally:
        os.close(fd)
