"""Findings: what is wrong with a message, named and explained."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True, kw_only=True)
class Finding:
    """One problem with one message.

    ``code`` is stable (``reply.len-mismatch``); ``message`` says what was seen
    and what was expected; ``source`` where the rule comes from.
    """

    code: str
    message: str
    source: str = ""
    unique: int | None = None

    def __str__(self) -> str:
        where = f" (unique {self.unique})" if self.unique is not None else ""
        return f"{self.code}{where}: {self.message}"
