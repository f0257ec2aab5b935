"""The layer's layouts and numbers against the machine's ``linux/fuse.h``, through a C probe.

A C program generated here prints ``sizeof`` of every struct in ``STRUCTS``,
``offsetof``/``sizeof`` of every member the layer names, and the value of every
constant of ``protocol.constants``.  The header is older than the layer (7.38
here, the layer is 7.45): what it lacks makes gcc fail, those probes are
dropped and the program is compiled again, and every dropped item must be one
the layer marks as newer than the header.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from scapy.fields import MayEnd, PacketField
from scapy.packet import Packet

from protocol import STRUCTS
from protocol import constants as c
from protocol.layers.base import field_size
from targets.skip import require

HEADER = Path("/usr/include/linux/fuse.h")

#: Constants newer than 7.38, with the minor each came with (upstream uapi changelog).
CONSTANT_SINCE = {
    "FUSE_STATX": 39, "FUSE_DIRECT_IO_ALLOW_MMAP": 39,
    "FUSE_PASSTHROUGH": 40, "FUSE_NO_EXPORT_SUPPORT": 40, "FUSE_HAS_RESEND": 40,
    "FOPEN_PASSTHROUGH": 40, "FUSE_NOTIFY_RESEND": 40, "FUSE_UNIQUE_RESEND": 40,
    "FUSE_INVALID_UIDGID": 41,
    "FUSE_ALLOW_IDMAP": 41,
    "FUSE_OVER_IO_URING": 42,
    "FUSE_REQUEST_TIMEOUT": 43,
    "FUSE_NOTIFY_INC_EPOCH": 44,
    "FUSE_COPY_FILE_RANGE_64": 45, "FUSE_NOTIFY_PRUNE": 45,
    # 7.38 upstream, but Debian's 7.38 header (Linux 6.1) predates them
    "FUSE_EXT_GROUPS": 38, "FUSE_CREATE_SUPP_GROUP": 38,
}
#: sizeof of the structs newer than the machine's header, from the upstream 7.45 uapi
#: header (linux include/uapi/linux/fuse.h, checked with gcc on x86-64).
UPSTREAM_SIZES = {
    "fuse_sx_time": 16, "fuse_statx": 256, "fuse_statx_in": 24, "fuse_statx_out": 288,
    "fuse_backing_map": 16, "fuse_notify_prune_out": 16, "fuse_copy_file_range_out": 8,
    "fuse_uring_ent_in_out": 32, "fuse_uring_req_header": 288, "fuse_uring_cmd_req": 24,
    "fuse_supp_groups": 4,
}
DEBIAN_7_38_GAPS = frozenset({"FUSE_EXT_GROUPS", "FUSE_CREATE_SUPP_GROUP", "fuse_supp_groups"})
#: protocol.constants entries that are the suite's, not the uapi header's.
NOT_IN_HEADER = frozenset({"FUSE_REQ_ID_STEP", "FUSE_INT_REQ_BIT"})
#: Member names the kernel uses for reserved space; later minors carve fields out of it.
RESERVED = ("padding", "unused", "spare", "reserved", "dummy")
#: gcc's words for "the header has no such thing" (LC_ALL=C).
MISSING = re.compile(
    r"has no member named|invalid application of 'sizeof' to incomplete type"
    r"|undeclared|invalid use of undefined type|dereferencing pointer to incomplete type"
)

Key = tuple[str, ...]


# --- what to probe -------------------------------------------------------------


def members(cls: type[Packet]) -> list[tuple[str, int, int]]:
    """``(name, offset, size)`` of each member before a flexible tail."""
    out: list[tuple[str, int, int]] = []
    offset = 0
    fields: list[Any] = list(cls.fields_desc)  # Fields, or a PadField/MayEnd around one
    for f in fields:
        while isinstance(f, MayEnd):  # marks where an older minor's struct ends
            f = f.fld
        try:
            size = field_size(f)
        except TypeError:
            if not isinstance(f, PacketField):
                break  # a flexible array member (``name[]``, ``groups[]``)
            size = fixed_part(f.cls)  # type: ignore[arg-type]  # struct with a flexible tail
        out.append((f.name, offset, size))
        offset += size
    return out


def fixed_part(cls: type[Packet]) -> int:
    """``sizeof`` in C: the members before any flexible tail."""
    return sum(size for _, _, size in members(cls))


def constant_names() -> list[str]:
    return sorted(
        name for name, value in vars(c).items()
        if name.isupper() and isinstance(value, int) and name not in NOT_IN_HEADER
    )


def _group(name: str) -> str:
    value = getattr(c, name)
    for group, names in (
        ("opcodes", c.OPCODE_NAMES), ("notify_codes", c.NOTIFY_CODE_NAMES),
        ("init_flags", c.INIT_FLAG_NAMES), ("fattr", c.FATTR_NAMES), ("fopen", c.FOPEN_NAMES),
    ):
        if names.get(value) == name:
            return group
    if "NAME_OFFSET" in name or name.endswith(("_SIZE", "_BUFFER", "_INFO_MAX", "_MAX_IOV")):
        return "sizes"
    if name.startswith("FUSE_KERNEL_"):
        return "version"
    return "other_flags"


CONSTANT_GROUPS: dict[str, list[str]] = {}
for _name in constant_names():
    CONSTANT_GROUPS.setdefault(_group(_name), []).append(_name)


@dataclass(frozen=True)
class Probe:
    key: Key
    exprs: tuple[str, ...]  # C expressions whose values are printed, on one line
    optional: bool = False  # may be missing without being newer (old reserved names)


def probes() -> list[Probe]:
    out: list[Probe] = []
    for c_name, cls in sorted(STRUCTS.items()):
        out.append(Probe(("size", c_name), (f"sizeof(struct {c_name})",)))
        names = [name for name, _, _ in members(cls)]
        extra = [r for r in RESERVED if r not in names] if cls.fields_since else []
        for name in names + extra:
            member = (f"offsetof(struct {c_name}, {name})", f"sizeof(((struct {c_name} *)0)->{name})")
            out.append(Probe(("member", c_name, name), member, optional=name in extra))
    for name in constant_names():
        out.append(Probe(("const", name), (f"U({name})",)))
    return out


# --- compile, drop what is missing, run ------------------------------------------


@dataclass
class Result:
    values: dict[Key, list[int]] = field(default_factory=dict)
    dropped: dict[Key, str] = field(default_factory=dict)  # key -> gcc's message

    @property
    def minor(self) -> int:
        return self.values[("const", "FUSE_KERNEL_MINOR_VERSION")][0]


PRELUDE = """#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <linux/fuse.h>
#define U(x) (sizeof(x) <= 4 ? (unsigned long long)(uint32_t)(x) : (unsigned long long)(x))
int main(void) {
"""


def _program(live: list[Probe]) -> str:
    lines = []
    for i, p in enumerate(live):
        args = ", ".join(f"(unsigned long long)({expr})" for expr in p.exprs)
        lines.append(f'printf("{i}' + " %llu" * len(p.exprs) + f'\\n", {args});')
    return PRELUDE + "\n".join(lines) + "\nreturn 0;\n}\n"


def _missing(stderr: str, live: list[Probe]) -> dict[Key, str]:
    first = PRELUDE.count("\n") + 1
    found: dict[Key, str] = {}
    for line, message in re.findall(r"^probe\.c:(\d+):\d+: error: (.*)$", stderr, re.M):
        index = int(line) - first
        assert 0 <= index < len(live) and MISSING.search(message), f"unexpected gcc error:\n{stderr}"
        found.setdefault(live[index].key, message)
    return found


def run_probe(workdir: Path) -> Result:
    result = Result()
    all_probes = probes()
    env = {**os.environ, "LC_ALL": "C"}
    for _attempt in range(3):
        live = [p for p in all_probes if p.key not in result.dropped]
        (workdir / "probe.c").write_text(_program(live))
        gcc = subprocess.run(
            ["gcc", "-std=gnu11", "-w", "-o", "probe", "probe.c"],
            cwd=workdir, env=env, capture_output=True, text=True, check=False,
        )
        if gcc.returncode == 0:
            break
        missing = _missing(gcc.stderr, live)
        assert missing, f"gcc failed without naming a probe:\n{gcc.stderr}"
        result.dropped.update(missing)
    else:
        pytest.fail(f"the probe still does not compile:\n{gcc.stderr}")
    out = subprocess.run([str(workdir / "probe")], capture_output=True, text=True, check=True)
    for line in out.stdout.splitlines():
        index, *numbers = line.split()
        result.values[live[int(index)].key] = [int(n) for n in numbers]
    optional = {p.key for p in all_probes if p.optional}
    result.dropped = {k: v for k, v in result.dropped.items() if k not in optional}
    return result


@pytest.fixture(scope="session")
def probe(tmp_path_factory: pytest.TempPathFactory) -> Result:
    require(shutil.which("gcc"), "gcc not found: the layout probe compiles C (apt-get install gcc)")
    require(HEADER.exists(), f"{HEADER} not found (apt-get install linux-libc-dev)")
    return run_probe(tmp_path_factory.mktemp("layout_probe"))


def _newer(name: str, minor: int, header_minor: int) -> bool:
    """May the header lack ``name``, which the layer says came with ``minor``?"""
    return minor > header_minor or (header_minor == 38 and name in DEBIAN_7_38_GAPS)


# --- the tests -------------------------------------------------------------------


@pytest.mark.parametrize("c_name", sorted(STRUCTS))
def test_struct_layout(probe: Result, c_name: str) -> None:
    cls = STRUCTS[c_name]
    header_minor = probe.minor
    if ("size", c_name) in probe.dropped:
        assert _newer(c_name, cls.since, header_minor), (
            f"the 7.{header_minor} header lacks struct {c_name}, but the layer says 7.{cls.since}"
        )
        assert c_name in UPSTREAM_SIZES, f"struct {c_name} is in neither the header nor UPSTREAM_SIZES"
        assert fixed_part(cls) == UPSTREAM_SIZES[c_name], f"sizeof(struct {c_name}) upstream"
        return
    assert cls.since <= header_minor, f"{c_name} is marked 7.{cls.since}, the 7.{header_minor} header has it"
    assert probe.values[("size", c_name)] == [fixed_part(cls)], f"sizeof(struct {c_name})"

    reserved = [
        probe.values[key] for key in (("member", c_name, r) for r in RESERVED) if key in probe.values
    ]
    carved = False  # a field newer than the header took space from a reserved member
    for name, offset, size in members(cls):
        key = ("member", c_name, name)
        minor = cls.fields_since.get(name, cls.since)
        if key in probe.dropped:
            assert minor > header_minor, (
                f"the 7.{header_minor} header lacks {c_name}.{name}, but the layer says 7.{minor}"
            )
            assert any(off <= offset and offset + size <= off + sz for off, sz in reserved), (
                f"{c_name}.{name} (7.{minor}) is not carved out of the header's reserved space"
            )
            carved = True
            continue
        assert minor <= header_minor, f"{c_name}.{name} is marked 7.{minor}, the header has it"
        got: Any = tuple(probe.values[key])
        if carved and name.startswith(RESERVED):  # what is left of the reserved tail
            assert got[0] + got[1] == offset + size, f"{c_name}.{name} must end where it did"
        else:
            assert got == (offset, size), f"{c_name}.{name}: header (offset, size) {got}"


@pytest.mark.parametrize("group", sorted(CONSTANT_GROUPS))
def test_constants(probe: Result, group: str) -> None:
    header_minor = probe.minor
    wrong = []
    for name in CONSTANT_GROUPS[group]:
        minor = CONSTANT_SINCE.get(name, 0)
        if ("const", name) in probe.dropped:
            assert _newer(name, minor, header_minor), (
                f"the 7.{header_minor} header lacks {name}; add it to CONSTANT_SINCE if it is newer"
            )
            continue
        assert minor <= header_minor, f"{name} is listed as 7.{minor}, the header has it"
        value = probe.values[("const", name)][0]
        if name == "FUSE_KERNEL_MINOR_VERSION":
            assert value <= c.FUSE_KERNEL_MINOR_VERSION, "the header is newer than the layer"
        elif value != getattr(c, name):
            wrong.append(f"{name}: header {value:#x}, layer {getattr(c, name):#x}")
    assert not wrong, "\n".join(wrong)


def test_every_drop_is_accounted_for(probe: Result) -> None:
    """Nothing was dropped that no test above looks at (e.g. a probe of a misspelt name)."""
    structs = {k for k in probe.dropped if k[0] in ("size", "member") and k[1] in STRUCTS}
    consts = {k for k in probe.dropped if k[0] == "const"}
    assert set(probe.dropped) == structs | consts
