"""What a per-opcode rule acts on: a directory, a regular file open in it, and (once
asked for) a symlink; in a scratch directory where the tree is writable, else among
the entries the server already has (a read-only server still gets every request)."""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass, field

import pytest

from conformance.checks import errno_name
from conformance.protocol.scratch import READ_ONLY, File, Workdir, unique_name
from conformance.walk import O_DIRECTORY, find_entry
from protocol import constants as c
from protocol.events import Reply
from protocol.layers.structs import FuseMkdirIn, FuseOpenIn, FuseReleaseIn
from protocol.layers.variable import FuseName
from targets.connection import KernelConnection

FILE_DATA = b"fusecheck per-opcode data\n" * 8


@dataclass
class Subject:
    conn: KernelConnection
    directory: int  # a directory nodeid the rules may create names in (when writable)
    file: File  # a regular file, open (read-write where writable)
    writable: bool
    workdir: Workdir | None = None
    _dir_fh: int | None = field(default=None, init=False)

    def dir_fh(self) -> int:
        """An OPENDIR handle of ``directory``."""
        if self._dir_fh is None:
            opened = self.conn.call(c.FUSE_OPENDIR, FuseOpenIn(flags=O_DIRECTORY), nodeid=self.directory)
            assert opened.ok and opened.body is not None, f"OPENDIR answered {errno_name(opened.error)}"
            self._dir_fh = int(opened.body.fh)
        return self._dir_fh

    def symlink(self) -> int | None:
        """A symlink's nodeid: made here when writable, else one the root lists (or None)."""
        if self.workdir is not None:
            made = self.conn.call(c.FUSE_SYMLINK, FuseName(name=b"link"), FuseName(name=self.file.name),
                                  nodeid=self.directory)
            if made.ok and made.body is not None:
                return int(made.body.nodeid)
        found = find_entry(self.conn, lambda attr: stat.S_ISLNK(int(attr.mode)))
        return found.nodeid if found else None

    def release_dir(self) -> Reply:
        """RELEASEDIR of the handle ``dir_fh`` gave (a later ``dir_fh`` opens another)."""
        fh, self._dir_fh = self.dir_fh(), None
        return self.conn.call(c.FUSE_RELEASEDIR, FuseReleaseIn(fh=fh), nodeid=self.directory)

    def close(self) -> None:
        if self._dir_fh is not None:
            self.release_dir()


def open_subject(conn: KernelConnection) -> Subject:
    """A scratch directory with a file in it; or, on a read-only tree, the root and a
    regular file it lists opened read-only. Not applicable when there is neither."""
    probe_name = unique_name("fusecheck-probe")
    probe = conn.call(c.FUSE_MKDIR, FuseMkdirIn(mode=0o755), FuseName(name=probe_name))
    if probe.ok:
        conn.call(c.FUSE_RMDIR, FuseName(name=probe_name))
        workdir = Workdir(conn)
        return Subject(conn, workdir.nodeid, workdir.file(b"file", FILE_DATA), True, workdir)
    if -probe.error not in READ_ONLY:
        raise AssertionError(f"MKDIR in the root answered {errno_name(probe.error)}")
    found = find_entry(conn, lambda attr: stat.S_ISREG(int(attr.mode)))
    if found is None:
        pytest.skip("not applicable: the tree is read-only and the root lists no regular file")
    opened = conn.call(c.FUSE_OPEN, FuseOpenIn(flags=os.O_RDONLY), nodeid=found.nodeid)
    assert opened.ok and opened.body is not None, (
        f"OPEN of {found.entry.name!r} answered {errno_name(opened.error)}")
    assert found.lookup.body is not None  # find_entry only gives a LOOKUP that answered an entry
    file = File(found.entry.name, found.nodeid, int(opened.body.fh), found.lookup.body)
    return Subject(conn, c.FUSE_ROOT_ID, file, False)
