"""The seed's cache modes and what each lets a mount show, as data.

``expected(kind, mode)`` is how soon a change of ``kind`` must be seen on the other side:
at once (the first look after it), within cache=auto's timeout, or "may stay stale" (reported,
never failed: cache=always caches until invalidated). The kinds are host-side changes seen
through the mount (data at the next open, attributes, size, names) and mount-side writes seen
on the host (after write(2), fsync, close, msync).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

SEED = ("seed: virtio-fs design note, cache=none|auto|always (none: at once both ways; auto: "
        "metadata within the timeout, data close-to-open; always: may stay stale; writeback: the "
        "host sees data after fsync or close)")
MODES = ("none", "auto", "always")
#: cache=auto's timeouts (about a second), and the room a loaded machine needs beyond them
AUTO_TIMEOUT, SLACK = 1.0, 1.5
#: how long a change is looked for before it is reported stale
DEADLINE = 3.0


#: how soon a server that notifies (``notify``) must have made the kernel drop its cache
NOTIFIED_WITHIN = 1.0


class Expect(Enum):
    AT_ONCE = "at once"
    WITHIN = f"within {AUTO_TIMEOUT:g} s (+{SLACK:g} s)"
    NOTIFIED = f"within {NOTIFIED_WITHIN:g} s (the server notifies)"
    STALE_OK = "may stay stale"

    def limit(self) -> float | None:
        """Seconds by which the change must show; None: no limit."""
        return {Expect.AT_ONCE: 0.0, Expect.WITHIN: AUTO_TIMEOUT + SLACK,
                Expect.NOTIFIED: NOTIFIED_WITHIN}.get(self)


@dataclass(frozen=True)
class Mode:
    """A cache mode; ``notify``: the server notifies the kernel of changes on the host
    (``inval`` or ``store``, as the reference server's ``notify`` option)."""

    cache: str
    writeback: bool = False
    notify: str | None = None

    def __post_init__(self) -> None:
        if self.cache not in MODES:
            raise ValueError(f"no cache mode {self.cache!r}; one of {', '.join(MODES)}")

    def __str__(self) -> str:
        notify = {None: "", "inval": ",notify", "store": ",notify=store"}[self.notify]
        return f"cache={self.cache}" + (",writeback" if self.writeback else "") + notify

    @classmethod
    def parse(cls, text: str) -> Mode:
        """``none|auto|always[,writeback][,notify[=store]]`` (a leading ``cache=`` is allowed)."""
        parts = [p.strip() for p in text.split(",") if p.strip()]
        cache = next((p.removeprefix("cache=") for p in parts
                      if p != "writeback" and not p.startswith("notify")), "auto")
        notify = next((p.partition("=")[2] or "inval" for p in parts if p.startswith("notify")), None)
        return cls(cache, "writeback" in parts, notify)


#: (kind, cache) -> expectation; kinds seen through the mount, then kinds seen on the host
_TABLE: dict[tuple[str, str], Expect] = {
    **{(kind, "none"): Expect.AT_ONCE for kind in ("data", "attr", "size", "name")},
    ("data", "auto"): Expect.AT_ONCE,  # close-to-open: an open without KEEP_CACHE drops the pages
    **{(kind, "auto"): Expect.WITHIN for kind in ("attr", "size", "name")},
    **{(kind, "always"): Expect.STALE_OK for kind in ("data", "attr", "size", "name")},
    **{(kind, cache): Expect.AT_ONCE for kind in ("write", "fsync", "close", "msync") for cache in MODES},
}
#: why a writeback cache changes an expectation (linux fs/fuse/inode.c, file.c)
WRITEBACK_WHY = {
    "size": "with FUSE_WRITEBACK_CACHE the kernel keeps a regular file's size itself and does not take "
            "the server's (fs/fuse/inode.c fuse_change_attributes_i)",
    "write": "with FUSE_WRITEBACK_CACHE a write(2) fills the page cache; the server gets the data at "
             "writeback, fsync or close (fs/fuse/file.c fuse_cache_write_iter, fuse_flush)",
}


#: the kinds changed on the host, which a notifying server reports
HOST_KINDS = ("data", "attr", "size", "name")


def expected(kind: str, mode: Mode) -> Expect:
    if mode.writeback and kind in WRITEBACK_WHY:
        return Expect.STALE_OK
    found = _TABLE[(kind, mode.cache)]
    if mode.notify and kind in HOST_KINDS and found is not Expect.AT_ONCE:
        return Expect.NOTIFIED
    return found
