"""``ref:record=FILE``: every message on the server's FUSE channel, as a pcap file.

The format is the suite's transcript pcap (``reports.transcript``): link type USER0,
one direction byte before each message, here with nanosecond timestamps (the pcap
magic says so): 0 a request the server read, 1 a message it wrote (a reply or a
notification), 2 a reply the kernel refused (the write failed; the record is a
fuse_out_header with the reply's unique and the write's -errno). Each reply is
recorded before it is written, so whatever the kernel sends because of it comes
later in the file; a record is appended whole, so a reader of a live file sees
whole records (or a torn last one, which it drops). Wireshark and tcpdump read it.
"""

from __future__ import annotations

import os
import struct
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from protocol.layers.header import FUSE_OUT_HEADER_SIZE, FuseOutHeader

LINKTYPE_USER0 = 147  # as reports.transcript
REQUEST, REPLY, REFUSED = 0, 1, 2
_MAGIC_NS = 0xA1B23C4D
_FILE_HEADER = struct.Struct("<IHHiIII")  # magic, version 2.4, thiszone, sigfigs, snaplen, linktype
_RECORD_HEADER = struct.Struct("<IIII")  # seconds, nanoseconds, captured length, original length
SNAPLEN = 262144  # what Wireshark takes; the suite's messages are smaller (max_write 128 KiB)


@dataclass(frozen=True, slots=True)
class Recorded:
    """One recorded message: direction (REQUEST, REPLY, REFUSED), nanoseconds since the
    epoch, and the message's bytes."""

    direction: int
    time_ns: int
    data: bytes

    @property
    def time(self) -> float:
        return self.time_ns / 1e9


class Recorder:
    """Appends records to ``path``; safe to use from the reader and every worker thread."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        self._fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_APPEND, 0o644)
        os.write(self._fd, _FILE_HEADER.pack(_MAGIC_NS, 2, 4, 0, 0, SNAPLEN, LINKTYPE_USER0))

    def record(self, direction: int, data: bytes) -> None:
        message = bytes([direction]) + data
        with self._lock:
            if self._fd < 0:
                return  # closed: the channel has ended
            now = time.time_ns()
            os.write(self._fd, _RECORD_HEADER.pack(now // 1_000_000_000, now % 1_000_000_000,
                                                   len(message), len(message)) + message)

    def close(self) -> None:
        with self._lock:
            if self._fd >= 0:
                os.close(self._fd)
                self._fd = -1

    def wrap(self, read: Callable[[], bytes], write: Callable[[bytes], None]
             ) -> tuple[Callable[[], bytes], Callable[[bytes], None]]:
        """The channel's read and write, recording what passes (b"" is the end: not recorded)."""

        def recorded_read() -> bytes:
            data = read()
            if data:
                self.record(REQUEST, data)
            return data

        def recorded_write(data: bytes) -> None:
            self.record(REPLY, data)
            try:
                write(data)
            except OSError as exc:
                unique = int.from_bytes(data[8:16], "little") if len(data) >= 16 else 0
                self.record(REFUSED, bytes(FuseOutHeader(len=FUSE_OUT_HEADER_SIZE,
                                                         error=-(exc.errno or 0), unique=unique)))
                raise

        return recorded_read, recorded_write


def read_recording(path: str | os.PathLike[str]) -> list[Recorded]:
    """Every whole record of a recording (the file may still be growing)."""
    return RecordingTail(path).read()


class RecordingTail:
    """Reads a recording as it grows: each ``read`` returns the records added since the last."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self.offset = 0

    def read(self) -> list[Recorded]:
        with open(self.path, "rb") as f:
            f.seek(self.offset)
            raw = f.read()
        pos = 0
        if self.offset == 0:
            if len(raw) < _FILE_HEADER.size:
                return []
            magic, *_rest, linktype = _FILE_HEADER.unpack_from(raw)
            if magic != _MAGIC_NS or linktype != LINKTYPE_USER0:
                raise ValueError(f"{self.path}: not a fusecheck recording (magic {magic:#x}, "
                                 f"link type {linktype})")
            pos = _FILE_HEADER.size
        out: list[Recorded] = []
        while pos + _RECORD_HEADER.size <= len(raw):
            sec, nsec, caplen, _wirelen = _RECORD_HEADER.unpack_from(raw, pos)
            start = pos + _RECORD_HEADER.size
            if caplen < 1 or start + caplen > len(raw):
                break  # torn: still being written
            out.append(Recorded(raw[start], sec * 1_000_000_000 + nsec, raw[start + 1: start + caplen]))
            pos = start + caplen
        self.offset += pos
        return out
