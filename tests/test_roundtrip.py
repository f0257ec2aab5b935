"""Every layer and every message round-trips: build -> bytes -> dissect -> same bytes, same fields.

Plus golden bytes for a few messages, written by hand from the kernel layout.
"""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scapy.packet import NoPayload, Packet

from fuzz.strategies import error_replies, notifications, packets, replies, requests
from protocol import LAYER_CLASSES
from protocol import constants as c
from protocol.layers.header import FUSE_OUT_HEADER_SIZE, FuseInHeader, FuseOutHeader
from protocol.layers.messages import NOTIFY_LAYERS, REPLY_LAYERS, REQUEST_LAYERS
from protocol.layers.structs import FuseAttr, FuseEntryOut, FuseInitIn
from protocol.layers.variable import FuseDirent, FuseDirentList, FuseName
from protocol.session import decode_body

SETTINGS = settings(suppress_health_check=[HealthCheck.too_slow])  # counts: the profile's


def _ids(mapping: dict[int, Any], names: dict[int, str]) -> list[Any]:
    return [pytest.param(k, id=names[k]) for k in mapping]


def assert_same(built: Packet, got: Packet, where: str = "") -> None:
    """Every layer has the same class and every field the builder set has the same value.

    A trailing part that encodes to no bytes (an empty dirent list) dissects as nothing.
    """
    while not isinstance(built, NoPayload):
        here = f"{where}{type(built).__name__}"
        if isinstance(got, NoPayload) and bytes(built) == b"":
            return
        assert type(got) is type(built), f"{here}: dissected as {type(got).__name__}"
        for f in built.fields_desc:
            want = built.getfieldval(f.name)
            if want is None:  # computed by the layer: any value
                continue
            _same_value(want, got.getfieldval(f.name), f"{here}.{f.name}")
        built, got = built.payload, got.payload
    assert isinstance(got, NoPayload), f"{where}: extra layer {type(got).__name__}"


def _same_value(want: Any, have: Any, where: str) -> None:
    if isinstance(want, Packet):
        assert_same(want, have, f"{where}/")
    elif isinstance(want, list) and want and isinstance(want[0], Packet):
        assert len(have) == len(want), f"{where}: {len(have)} elements, built {len(want)}"
        for i, (w, h) in enumerate(zip(want, have, strict=True)):
            assert_same(w, h, f"{where}[{i}]/")
    else:
        assert have == want, f"{where}: {have!r} != {want!r}"


# --- every layer class on its own --------------------------------------------


@pytest.mark.parametrize("cls", LAYER_CLASSES, ids=lambda cls: cls.__name__)
def test_layer_roundtrip(cls: type[Packet]) -> None:
    @SETTINGS
    @given(packets(cls))
    def check(pkt: Packet) -> None:
        raw = bytes(pkt)
        again = cls(raw)
        assert bytes(again) == raw
        assert_same(pkt, again)

    check()


# --- whole messages ------------------------------------------------------------


def _reply_roundtrip(msg: Packet, layers: tuple[type[Packet], ...]) -> None:
    raw = bytes(msg)
    head = FuseOutHeader(raw[: FUSE_OUT_HEADER_SIZE])
    assert head.len == len(raw)
    body = decode_body(layers, raw[FUSE_OUT_HEADER_SIZE :])
    again = head if body is None else head / body
    assert bytes(again) == raw
    assert_same(msg, again)


@pytest.mark.parametrize("opcode", _ids(REQUEST_LAYERS, c.OPCODE_NAMES))
def test_request_roundtrip(opcode: int) -> None:
    @SETTINGS
    @given(requests(opcode))
    def check(msg: Packet) -> None:
        raw = bytes(msg)
        again = FuseInHeader(raw)
        assert again.len == len(raw)
        assert bytes(again) == raw
        assert_same(msg, again)

    check()


@pytest.mark.parametrize("opcode", _ids(REPLY_LAYERS, c.OPCODE_NAMES))
def test_reply_roundtrip(opcode: int) -> None:
    @SETTINGS
    @given(replies(opcode))
    def check(msg: Packet) -> None:
        _reply_roundtrip(msg, REPLY_LAYERS[opcode])

    check()


@pytest.mark.parametrize("code", _ids(NOTIFY_LAYERS, c.NOTIFY_CODE_NAMES))
def test_notify_roundtrip(code: int) -> None:
    @SETTINGS
    @given(notifications(code))
    def check(msg: Packet) -> None:
        _reply_roundtrip(msg, NOTIFY_LAYERS[code])

    check()


@SETTINGS
@given(error_replies(), st.sampled_from(sorted(REPLY_LAYERS)))
def test_error_reply_is_header_only(msg: Packet, opcode: int) -> None:
    raw = bytes(msg)
    assert len(raw) == FUSE_OUT_HEADER_SIZE
    _reply_roundtrip(msg, REPLY_LAYERS[opcode])


# --- golden bytes, written from the kernel layout ------------------------------

# INIT at 7.45: fuse_in_header (40) + fuse_init_in (64) = 104 bytes
INIT_REQUEST = bytes.fromhex(
    "68000000" "1a000000"  # len 104, opcode FUSE_INIT (26)
    "0200000000000000"  # unique 2
    "0000000000000000"  # nodeid 0
    "00000000" "00000000" "00000000"  # uid, gid, pid
    "0000" "0000"  # total_extlen, padding
    "07000000" "2d000000"  # major 7, minor 45
    "00000200"  # max_readahead 0x20000
    "01000040"  # flags: FUSE_ASYNC_READ | FUSE_INIT_EXT
    "20000000"  # flags2: FUSE_PASSTHROUGH (bit 37) >> 32
    + "00" * 44  # unused[11]
)

# LOOKUP "hello" in the root, by uid/gid 1000, pid 1234
LOOKUP_REQUEST = bytes.fromhex(
    "2e000000" "01000000"  # len 46, opcode FUSE_LOOKUP (1)
    "0400000000000000"  # unique 4
    "0100000000000000"  # nodeid 1 (FUSE_ROOT_ID)
    "e8030000" "e8030000" "d2040000"  # uid 1000, gid 1000, pid 1234
    "0000" "0000"  # total_extlen, padding
    "68656c6c6f00"  # "hello\0"
)

# Its reply: fuse_out_header (16) + fuse_entry_out (40 + fuse_attr 88) = 144 bytes
ENTRY_REPLY = bytes.fromhex(
    "90000000" "00000000"  # len 144, error 0
    "0400000000000000"  # unique 4
    "0200000000000000"  # nodeid 2
    "0100000000000000"  # generation 1
    "0100000000000000" "0100000000000000"  # entry_valid 1, attr_valid 1
    "00000000" "00000000"  # entry_valid_nsec, attr_valid_nsec
    "0200000000000000"  # attr.ino 2
    "0d00000000000000"  # attr.size 13
    "0100000000000000"  # attr.blocks 1
    + "00" * 24  # atime, mtime, ctime
    + "00000000" * 3  # atimensec, mtimensec, ctimensec
    + "24810000"  # mode 0o100444
    "01000000"  # nlink 1
    "00000000" "00000000" "00000000"  # uid, gid, rdev
    "00100000"  # blksize 4096
    "00000000"  # flags
)

# READDIR reply: ".", "..", "hello" and an 8-byte name; each dirent is 24 bytes
# plus its name, NUL-padded to a multiple of 8
READDIR_REPLY = bytes.fromhex(
    "90000000" "00000000" "0600000000000000"  # len 144, error 0, unique 6
    "0100000000000000" "0100000000000000"  # ino 1, off 1
    "01000000" "04000000"  # namelen 1, type DT_DIR
    "2e00000000000000"  # "." + 7 NULs
    "0100000000000000" "0200000000000000"  # ino 1, off 2
    "02000000" "04000000"  # namelen 2, type DT_DIR
    "2e2e000000000000"  # ".." + 6 NULs
    "0200000000000000" "0300000000000000"  # ino 2, off 3
    "05000000" "08000000"  # namelen 5, type DT_REG
    "68656c6c6f000000"  # "hello" + 3 NULs
    "0300000000000000" "0400000000000000"  # ino 3, off 4
    "08000000" "08000000"  # namelen 8, type DT_REG
    "6162636465666768"  # "abcdefgh", no padding
)
DIRENTS = [(1, 1, 4, b"."), (1, 2, 4, b".."), (2, 3, 8, b"hello"), (3, 4, 8, b"abcdefgh")]


def test_golden_init_request() -> None:
    built = FuseInHeader(unique=2) / FuseInitIn(
        major=7, minor=45, max_readahead=0x20000,
        flags=c.FUSE_ASYNC_READ | c.FUSE_INIT_EXT, flags2=c.FUSE_PASSTHROUGH >> 32,
    )
    assert bytes(built) == INIT_REQUEST
    got = FuseInHeader(INIT_REQUEST)
    assert (got.len, got.opcode, got.unique, got.nodeid) == (104, c.FUSE_INIT, 2, 0)
    init = got[FuseInitIn]
    assert (init.major, init.minor, init.max_readahead) == (7, 45, 0x20000)
    assert init.flags == c.FUSE_ASYNC_READ | c.FUSE_INIT_EXT
    assert init.flags2 << 32 == c.FUSE_PASSTHROUGH
    assert init.unused == [0] * 11


def test_golden_lookup_request() -> None:
    built = FuseInHeader(opcode=c.FUSE_LOOKUP, unique=4, nodeid=1, uid=1000, gid=1000,
                           pid=1234) / FuseName(name=b"hello")
    assert bytes(built) == LOOKUP_REQUEST
    got = FuseInHeader(LOOKUP_REQUEST)
    assert (got.len, got.opcode, got.unique, got.nodeid) == (46, c.FUSE_LOOKUP, 4, 1)
    assert (got.uid, got.gid, got.pid) == (1000, 1000, 1234)
    assert got[FuseName].getfieldval("name") == b"hello"


def test_golden_entry_reply() -> None:
    attr = FuseAttr(ino=2, size=13, blocks=1, mode=0o100444, nlink=1, blksize=4096)
    built = FuseOutHeader(unique=4) / FuseEntryOut(
        nodeid=2, generation=1, entry_valid=1, attr_valid=1, attr=attr
    )
    assert bytes(built) == ENTRY_REPLY
    head = FuseOutHeader(ENTRY_REPLY[:16])
    assert (head.len, head.error, head.unique) == (144, 0, 4)
    entry = FuseEntryOut(ENTRY_REPLY[16:])
    assert (entry.nodeid, entry.generation, entry.entry_valid, entry.attr_valid) == (2, 1, 1, 1)
    assert (entry.attr.ino, entry.attr.size, entry.attr.mode) == (2, 13, 0o100444)
    assert (entry.attr.nlink, entry.attr.blksize) == (1, 4096)


def test_golden_readdir_reply() -> None:
    dirents = [FuseDirent(ino=i, off=o, type=t, name=n) for i, o, t, n in DIRENTS]
    built = FuseOutHeader(unique=6) / FuseDirentList(dirents=dirents)
    assert bytes(built) == READDIR_REPLY
    got = FuseDirentList(READDIR_REPLY[16:])
    seen = [(d.ino, d.off, d.type, d.getfieldval("name")) for d in got.dirents]
    assert seen == DIRENTS
    assert [d.namelen for d in got.dirents] == [1, 2, 5, 8]
