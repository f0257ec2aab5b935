"""Find a sanitizer's report (AddressSanitizer, UBSan, LeakSanitizer) in a daemon's stderr.

``report(stderr)`` shortens it to the headline (``==PID==ERROR: AddressSanitizer: ...`` or
UBSan's ``FILE:LINE:COL: runtime error: ...``), the first few frames of the first stack and
the ``SUMMARY:`` line. Pass the whole captured tail: ASan's shadow-byte map and legend
alone take some 1.5 KB after the SUMMARY line.
"""

from __future__ import annotations

import re

FRAMES = 4
_HEADLINE = re.compile(r"==\d+==ERROR: \w+Sanitizer: |: runtime error: ")
_FRAME = re.compile(r"\s*#\d+ 0x[0-9a-fA-F]+ ")
_SUMMARY = re.compile(r"SUMMARY: \w+Sanitizer: ")
_COLOUR = re.compile(r"\x1b\[[0-9;]*m")


def report(stderr: str, *, frames: int = FRAMES) -> str | None:
    """The short report found in ``stderr``; None when no sanitizer spoke."""
    lines = _COLOUR.sub("", stderr).splitlines()
    start = next((i for i, line in enumerate(lines) if _HEADLINE.search(line)), None)
    after = 0 if start is None else start + 1
    end = next((i for i in range(after, len(lines)) if _SUMMARY.match(lines[i])), None)
    if start is None and end is None:
        return None
    picked = []
    if start is not None:
        picked = [lines[start].strip(), *_first_stack(lines[after:end], frames)]
    if end is not None:
        picked.append(lines[end].strip())
    return "\n".join(picked)


def _first_stack(lines: list[str], limit: int) -> list[str]:
    """Up to ``limit`` frames of the first stack in ``lines``, as printed."""
    stack: list[str] = []
    for line in lines:
        if _FRAME.match(line):
            stack.append(line.rstrip())
            if len(stack) == limit:
                break
        elif stack:
            break
    return stack
