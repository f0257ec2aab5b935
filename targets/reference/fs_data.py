"""File contents as sparse 4 KiB pages, with tmpfs's notion of data and holes.

A page is absent (a hole), allocated but never written (``None``: fallocate's
reservation, which reads as zeros and is a hole to SEEK_DATA, as on tmpfs), or
data. Bytes of a page past the file's size are always zero.
"""

from __future__ import annotations

PAGE = 4096


class SparseData:
    """The pages of one regular file; the file size is kept by the inode."""

    __slots__ = ("pages",)

    def __init__(self) -> None:
        self.pages: dict[int, bytearray | None] = {}

    @property
    def allocated(self) -> int:
        return len(self.pages)

    def new_pages(self, offset: int, length: int) -> int:
        """How many pages writing ``length`` bytes at ``offset`` would allocate."""
        if length <= 0:
            return 0
        first, last = offset // PAGE, (offset + length - 1) // PAGE
        span = last - first + 1
        if span > len(self.pages):
            return span - sum(1 for i in self.pages if first <= i <= last)
        return sum(1 for i in range(first, last + 1) if i not in self.pages)

    def read(self, offset: int, size: int) -> bytes:
        out = bytearray(size)
        pos = offset
        while pos < offset + size:
            index, start = divmod(pos, PAGE)
            chunk = min(PAGE - start, offset + size - pos)
            page = self.pages.get(index)
            if page is not None:
                out[pos - offset:pos - offset + chunk] = page[start:start + chunk]
            pos += chunk
        return bytes(out)

    def write(self, offset: int, data: bytes) -> None:
        pos = 0
        while pos < len(data):
            index, start = divmod(offset + pos, PAGE)
            chunk = min(PAGE - start, len(data) - pos)
            page = self.pages.get(index)
            if page is None:
                page = self.pages[index] = bytearray(PAGE)
            page[start:start + chunk] = data[pos:pos + chunk]
            pos += chunk

    def allocate(self, offset: int, length: int) -> None:
        """Reserve pages (fallocate): written pages stay data, new ones read as zeros."""
        for index in range(offset // PAGE, (offset + length - 1) // PAGE + 1):
            self.pages.setdefault(index, None)

    def _zero(self, index: int, start: int, end: int) -> None:
        page = self.pages.get(index)
        if page is not None:
            page[start:end] = bytes(end - start)

    def punch(self, offset: int, length: int) -> None:
        """Deallocate whole pages in the range, zero the partial ones at its ends."""
        end = offset + length
        first_full, last_full = -(-offset // PAGE), end // PAGE  # [first_full, last_full)
        if first_full > last_full:  # inside one page
            self._zero(offset // PAGE, offset % PAGE, offset % PAGE + length)
            return
        if offset % PAGE:
            self._zero(offset // PAGE, offset % PAGE, PAGE)
        if end % PAGE:
            self._zero(end // PAGE, 0, end % PAGE)
        if last_full - first_full > len(self.pages):
            for index in [i for i in self.pages if first_full <= i < last_full]:
                del self.pages[index]
        else:
            for index in range(first_full, last_full):
                self.pages.pop(index, None)

    def truncate(self, size: int) -> None:
        """Drop everything at or past ``size``; the page holding ``size`` keeps its head."""
        keep = -(-size // PAGE)
        for index in [i for i in self.pages if i >= keep]:
            del self.pages[index]
        if size % PAGE:
            self._zero(size // PAGE, size % PAGE, PAGE)

    def seek(self, offset: int, data: bool, size: int) -> int | None:
        """SEEK_DATA (``data``) or SEEK_HOLE from ``offset`` in a file of ``size`` bytes; None: ENXIO."""
        if offset < 0 or offset >= size:
            return None
        if data:
            found = min((i for i, page in self.pages.items() if page is not None and (i + 1) * PAGE > offset),
                        default=None)
            if found is None or max(offset, found * PAGE) >= size:
                return None
            return max(offset, found * PAGE)
        index = offset // PAGE
        while self.pages.get(index) is not None:
            index += 1
        return min(max(offset, index * PAGE), size)

    def __bytes__(self) -> bytes:
        if not self.pages:
            return b""
        return self.read(0, (max(self.pages) + 1) * PAGE)
