"""``ref:record=FILE``: the recorder's pcap, its reader, and the recording of a real mount."""

from __future__ import annotations

import errno
import os
import socket
import struct
import threading
from pathlib import Path

import pytest

from protocol import constants as c
from protocol.kernel_audit import KernelAudit
from protocol.layers.header import FuseInHeader, FuseOutHeader
from protocol.session import KernelSession
from targets import fusedev
from targets.daemons import reference_argv
from targets.errors import TargetSpecError
from targets.mounts import ReferenceMount
from targets.reference.__main__ import serve_socket
from targets.reference.fs import Filesystem
from targets.reference.record import (
    LINKTYPE_USER0,
    REFUSED,
    REPLY,
    REQUEST,
    Recorder,
    RecordingTail,
    read_recording,
)
from targets.reference.server import ReferenceServer
from targets.skip import require


def test_records_read_back_in_order(tmp_path: Path) -> None:
    recorder = Recorder(tmp_path / "r.pcap")
    recorder.record(REQUEST, b"request")
    recorder.record(REPLY, b"x" * 200_000)  # larger than scapy's reader's MTU: kept whole
    recorder.close()
    records = read_recording(tmp_path / "r.pcap")
    assert [(r.direction, r.data) for r in records] == [(REQUEST, b"request"), (REPLY, b"x" * 200_000)]
    assert records[0].time_ns <= records[1].time_ns


def test_the_file_is_a_nanosecond_pcap_of_link_type_user0(tmp_path: Path) -> None:
    Recorder(tmp_path / "r.pcap").close()
    magic, major, minor, _zone, _sigfigs, _snaplen, linktype = struct.unpack(
        "<IHHiIII", (tmp_path / "r.pcap").read_bytes())
    assert (magic, major, minor, linktype) == (0xA1B23C4D, 2, 4, LINKTYPE_USER0)


def test_a_torn_last_record_waits_for_the_rest(tmp_path: Path) -> None:
    path = tmp_path / "r.pcap"
    recorder = Recorder(path)
    recorder.record(REQUEST, b"one")
    recorder.record(REQUEST, b"two")
    recorder.close()
    whole = path.read_bytes()
    path.write_bytes(whole[:-2])
    tail = RecordingTail(path)
    assert [r.data for r in tail.read()] == [b"one"]
    path.write_bytes(whole)
    assert [r.data for r in tail.read()] == [b"two"]
    assert tail.read() == []


def test_a_refused_write_is_marked(tmp_path: Path) -> None:
    recorder = Recorder(tmp_path / "r.pcap")
    reply = bytes(FuseOutHeader(unique=42, error=0))

    def gone(data: bytes) -> None:
        raise OSError(errno.ENOENT, "request is gone")

    _read, write = recorder.wrap(lambda: b"", gone)
    with pytest.raises(OSError):
        write(reply)
    recorder.close()
    records = read_recording(tmp_path / "r.pcap")
    assert [r.direction for r in records] == [REPLY, REFUSED]
    marker = FuseOutHeader(records[1].data)
    assert (int(marker.unique), int(marker.error)) == (42, -errno.ENOENT)


def test_record_takes_a_file_resolved_where_the_suite_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                                                           ) -> None:
    monkeypatch.chdir(tmp_path)
    argv = reference_argv({"record": "r.pcap"}, "--fd", "3")
    assert argv[-4:] == ["--record", str(tmp_path / "r.pcap"), "--fd", "3"]
    with pytest.raises(TargetSpecError, match="record=FILE"):
        reference_argv({"record": True})


def test_the_socket_server_records_its_channel(tmp_path: Path) -> None:
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    path = tmp_path / "r.pcap"
    server = threading.Thread(target=serve_socket, args=(ReferenceServer(Filesystem()), theirs.detach(),
                                                         path), daemon=True)
    server.start()
    kernel = KernelSession()
    init = kernel.init()
    ours.settimeout(10)
    ours.send(init)
    reply = ours.recv(1 << 16)
    ours.close()
    server.join(10)
    assert not server.is_alive()
    records = read_recording(path)
    assert [(r.direction, r.data) for r in records] == [(REQUEST, init), (REPLY, reply)]


def test_a_mount_records_what_the_kernel_sends(tmp_path: Path) -> None:
    require(os.geteuid() == 0 and os.access(fusedev.FUSE_DEVICE, os.R_OK | os.W_OK),
            "mounting the reference server needs root and /dev/fuse")
    path = tmp_path / "r.pcap"
    with ReferenceMount({"record": str(path), "cache": "none"}) as mount:
        assert (mount.path / "hello.txt").read_text() == "hello, fusecheck\n"
    records = read_recording(path)
    first = FuseInHeader(records[0].data)
    assert records[0].direction == REQUEST and int(first.opcode) == c.FUSE_INIT
    read: set[int] = set()
    for record in records:  # every reply comes after the request it answers
        unique = int.from_bytes(record.data[8:16], "little")
        if record.direction == REQUEST:
            read.add(unique)
        elif unique:
            assert unique in read, f"reply to {unique} before its request"
    audit = KernelAudit()
    for record in records:
        (audit.request if record.direction == REQUEST else audit.reply)(record.data)
    assert audit.kernel.negotiated is not None and audit.findings == []
    assert audit.resolve("hello.txt") is not None
