"""What a fuzz machine raises when the target did what it never should: a ``Defect``.

Every kind is one of ``KINDS``; ``signature`` says which defects are the same bug (one
kind, one opcode, one field class), so a campaign keeps one finding per signature.
"""

from __future__ import annotations

from collections import deque

KINDS = {
    "crash": "the target process died (a signal, or an exit nobody asked for)",
    "hang": "the target stopped answering: no reply within the deadline, and none to a "
            "valid request after it",
    "sanitizer": "AddressSanitizer or UBSan reported an error in the target",
    "internal-error": "the target reported a bug of its own (a Python traceback on stderr)",
    "malformed-reply": "a reply the kernel would refuse (length, unique, error range, body size)",
    "unresponsive": "the target is alive but a valid request after the message fails",
    "memory": "the device wrote outside the buffers it was given",
}


#: The newest Defects made in this process, in order: the campaign runner looks here to learn
#: that an example failed (hypothesis keeps the exception to itself while it shrinks).
RAISED: deque[Defect] = deque(maxlen=100)


class Defect(AssertionError):
    """The target failed an oracle; ``str()`` explains it for a person."""

    made = 0  # Defects made in this process so far

    def __init__(self, kind: str, opcode: str, field_class: str, explanation: str) -> None:
        assert kind in KINDS, kind
        super().__init__(f"{kind} after {opcode} ({field_class}): {explanation}")
        self.kind = kind
        self.opcode = opcode
        self.field_class = field_class
        self.explanation = explanation
        Defect.made += 1
        self.number = Defect.made
        RAISED.append(self)

    @property
    def signature(self) -> str:
        return f"{self.kind}:{self.opcode}:{self.field_class}"
