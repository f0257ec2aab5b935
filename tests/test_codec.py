"""The struct codec agrees with the scapy class it is derived from, for every fixed-size class."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from scapy.fields import MayEnd
from scapy.packet import Packet

from fuzz.strategies import packets
from protocol import LAYER_CLASSES
from protocol.codec import Encoded, codec, head_codec
from protocol.layers.base import ArrayField, NestedField, fixed_size
from protocol.layers.header import FuseInHeader
from protocol.layers.structs import FuseEntryOut, FuseInitIn


def _is_fixed(cls: type[Packet]) -> bool:
    try:
        fixed_size(cls)
    except TypeError:
        return False
    return True


FIXED = [cls for cls in LAYER_CLASSES if _is_fixed(cls)]
VARIABLE = [cls for cls in LAYER_CLASSES if not _is_fixed(cls)]


def flatten(pkt: Packet, prefix: str = "") -> dict[str, Any]:
    """``{flat name: value}`` of a dissected packet, in wire order (as ``flat_names``)."""
    out: dict[str, Any] = {}
    for f in pkt.fields_desc:
        while isinstance(f, MayEnd):  # marks where an older minor's struct ends
            f = f.fld
        value = pkt.getfieldval(f.name)
        if isinstance(f, NestedField):
            out.update(flatten(value, f"{prefix}{f.name}."))
        elif isinstance(f, ArrayField):
            out.update({f"{prefix}{f.name}[{i}]": v for i, v in enumerate(value)})
        else:
            out[prefix + f.name] = value
    return out


@pytest.mark.parametrize("cls", FIXED, ids=lambda cls: cls.__name__)
def test_codec_matches_scapy(cls: type[Packet]) -> None:
    k = codec(cls)
    assert k.size == fixed_size(cls)
    assert k is codec(cls)

    @given(packets(cls))
    def check(pkt: Packet) -> None:
        raw = bytes(pkt)
        fields = flatten(cls(raw))
        assert list(fields) == list(k.names)
        assert k.pack(**fields) == raw
        assert k.unpack(raw) == tuple(fields.values())
        assert k.unpack_dict(raw) == fields
        buf = bytearray(3 + k.size + 5)
        k.pack_into(buf, 3, **fields)
        assert bytes(buf[3 : 3 + k.size]) == raw
        assert k.unpack(buf, 3) == tuple(fields.values())

    check()


@pytest.mark.parametrize("cls", FIXED, ids=lambda cls: cls.__name__)
def test_missing_fields_are_zero(cls: type[Packet]) -> None:
    k = codec(cls)
    assert k.pack() == bytes(k.size)
    last = k.names[-1]
    values = k.unpack(k.pack(**{last: 1}))
    assert values[-1] == 1 and values[:-1] == k.unpack(bytes(k.size))[:-1]


def test_unknown_field_is_an_error() -> None:
    with pytest.raises(TypeError, match="no field 'nope'"):
        codec(FuseInHeader).pack(nope=1)


def test_flat_names_of_nested_and_arrays() -> None:
    names = codec(FuseEntryOut).names
    assert names[:2] == ("nodeid", "generation") and "attr.ino" in names
    assert codec(FuseInitIn).names[-1] == "unused[10]"


@pytest.mark.parametrize("cls", VARIABLE, ids=lambda cls: cls.__name__)
def test_variable_parts_have_no_codec(cls: type[Packet]) -> None:
    with pytest.raises(TypeError):
        codec(cls)


def test_field_patches_one_field_in_place() -> None:
    from protocol.layers.header import FuseInHeader as Header

    header = codec(Header)
    buf = bytearray(header.pack(len=40, opcode=3, unique=2, nodeid=1))
    unique, offset = header.field("unique")
    assert offset == 8
    unique.pack_into(buf, offset, 0xABCDEF)
    assert Header(bytes(buf)).unique == 0xABCDEF and Header(bytes(buf)).opcode == 3


@pytest.mark.parametrize("cls", FIXED, ids=lambda cls: cls.__name__)
def test_build_is_scapy_with_the_class_defaults(cls: type[Packet]) -> None:
    k = codec(cls)
    assert k.build() == bytes(cls())

    @given(packets(cls))
    def check(pkt: Packet) -> None:
        fields = flatten(cls(bytes(pkt)))
        assert k.build(**fields) == bytes(pkt)
        some = dict(list(fields.items())[::2])  # every other field given, the rest defaults
        assert k.builder(*some)(*some.values()) == k.build(**some)
        if all(name.isidentifier() and name[0] != "_" for name in k.names):
            assert k.record(bytes(pkt))._asdict() == fields
        else:
            with pytest.raises(TypeError):
                k.record(bytes(pkt))

    check()


def test_builder_of_one_field_and_unknown_names() -> None:
    from protocol.layers.structs import FuseForgetIn

    assert codec(FuseForgetIn).builder("nlookup")(7) == bytes(FuseForgetIn(nlookup=7))
    with pytest.raises(TypeError, match="no field 'nope'"):
        codec(FuseForgetIn).builder("nope")
    with pytest.raises(TypeError, match="nested or array"):
        codec(FuseEntryOut).record(bytes(codec(FuseEntryOut).size))


@pytest.mark.parametrize("cls", VARIABLE, ids=lambda cls: cls.__name__)
def test_head_codec_reads_the_fixed_fields_a_variable_part_opens_with(cls: type[Packet]) -> None:
    head = head_codec(cls)

    @given(packets(cls))
    def check(pkt: Packet) -> None:
        raw = bytes(pkt)
        fields = flatten(cls(raw))
        assert list(fields)[: len(head.names)] == list(head.names)
        if len(raw) >= head.size:
            assert head.unpack(raw) == tuple(fields[name] for name in head.names)

    check()


def test_encoded_is_not_a_tuple() -> None:
    """A handler's tuple of parts must stay unambiguous."""
    assert not isinstance(Encoded(FuseEntryOut, b""), tuple)
