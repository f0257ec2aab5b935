"""The session lifecycle as a table: (state, event) -> next state.

A missing key means the event is illegal in that state.  Both roles use the
same table; ``reports/`` can draw it.
"""

from __future__ import annotations

AWAIT_INIT = "AWAIT_INIT"
INIT_SENT = "INIT_SENT"
RUNNING = "RUNNING"
DESTROY_SENT = "DESTROY_SENT"
CLOSED = "CLOSED"

# events
SEND_INIT = "send INIT"
INIT_ACCEPTED = "INIT reply accepted"
INIT_REFUSED = "INIT reply refused"
SEND_DESTROY = "send DESTROY"
DESTROY_DONE = "DESTROY replied"

TRANSITIONS: dict[str, dict[str, str]] = {
    AWAIT_INIT: {SEND_INIT: INIT_SENT},
    INIT_SENT: {INIT_ACCEPTED: RUNNING, INIT_REFUSED: AWAIT_INIT},
    RUNNING: {SEND_DESTROY: DESTROY_SENT},
    DESTROY_SENT: {DESTROY_DONE: CLOSED},
    CLOSED: {},
}


def next_state(state: str, event: str) -> str | None:
    """The state after ``event``, or None when the table has no such transition."""
    return TRANSITIONS.get(state, {}).get(event)
