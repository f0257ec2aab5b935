"""CUSE's own parts of the protocol, sans-IO: the device info block of a CUSE_INIT reply
(``KEY=VALUE`` strings, each ended by a NUL, DEVNAME required) and what the kernel asks of
the reply (linux fs/fuse/cuse.c cuse_process_init_reply, cuse_parse_devinfo)."""

from __future__ import annotations

from dataclasses import dataclass, field

from protocol import constants as c

KERNEL = "linux fs/fuse/cuse.c cuse_process_init_reply"
MIN_MINOR = 11  # the kernel refuses a CUSE_INIT reply below 7.11
MINORBITS = 20  # dev_t: a 12-bit major and a 20-bit minor
MAX_MAJOR = (1 << (32 - MINORBITS)) - 1
MAX_MINOR = (1 << MINORBITS) - 1


@dataclass(frozen=True)
class DeviceInfo:
    """The device info strings of a CUSE_INIT reply: KEY=VALUE pairs in order, and what in
    the block is not one (``problems``)."""

    pairs: tuple[tuple[str, str], ...] = ()
    problems: tuple[str, ...] = field(default=())

    @property
    def devname(self) -> str | None:
        return next((value for key, value in self.pairs if key == "DEVNAME"), None)


def parse_devinfo(block: bytes) -> DeviceInfo:
    """Read the info block as the kernel does: NUL-separated strings of KEY=VALUE, keys and
    values trimmed of spaces; an empty string (a NUL after a NUL) ends nothing."""
    pairs: list[tuple[str, str]] = []
    problems: list[str] = []
    if len(block) > c.CUSE_INIT_INFO_MAX:
        problems.append(f"the info block is {len(block)} bytes; the kernel's buffer is "
                        f"{c.CUSE_INIT_INFO_MAX}")
    if block and not block.endswith(b"\0"):
        problems.append("the last info string has no NUL after it")
    for raw in block.split(b"\0"):
        if not raw.strip():
            continue
        text = raw.decode(errors="replace")
        key, eq, value = text.partition("=")
        if not eq or not key.strip():
            problems.append(f"info string {text!r} is not KEY=VALUE")
            continue
        pairs.append((key.strip(), value.strip()))
    return DeviceInfo(tuple(pairs), tuple(problems))


def init_reply_problems(offered_flags: int, body: object, info: bytes) -> list[str]:
    """What the kernel would refuse or not expect in a CUSE_INIT reply (``body``: its
    cuse_init_out, ``info``: the bytes after it)."""
    out: list[str] = []
    major, minor = int(getattr(body, "major", 0)), int(getattr(body, "minor", 0))
    if major != c.FUSE_KERNEL_VERSION:
        out.append(f"major {major}: the kernel fails a CUSE device whose reply is not major "
                   f"{c.FUSE_KERNEL_VERSION}")
    if minor < MIN_MINOR:
        out.append(f"minor {minor}: the kernel fails a CUSE device below 7.{MIN_MINOR}")
    extra = int(getattr(body, "flags", 0)) & ~offered_flags
    if extra:
        out.append(f"flags {extra:#x} were not offered (CUSE_INIT offers {offered_flags:#x})")
    dev_major, dev_minor = int(getattr(body, "dev_major", 0)), int(getattr(body, "dev_minor", 0))
    if dev_major > MAX_MAJOR or dev_minor > MAX_MINOR:
        out.append(f"device number {dev_major}:{dev_minor} does not fit a dev_t "
                   f"({MAX_MAJOR}:{MAX_MINOR} at most)")
    parsed = parse_devinfo(info)
    out += parsed.problems
    if not parsed.devname:
        out.append("no DEVNAME=NAME in the device info: the kernel creates no device")
    elif "/" in parsed.devname:
        out.append(f"DEVNAME {parsed.devname!r} holds '/': not a name in /dev")
    return out
