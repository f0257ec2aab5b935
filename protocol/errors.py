"""The two kinds of protocol error: ours (local) and the peer's (remote)."""

from __future__ import annotations

from protocol.findings import Finding


class ProtocolError(Exception):
    """Base class; raise one of the two subclasses."""

    def __new__(cls, *args: object, **kwargs: object) -> ProtocolError:
        if cls is ProtocolError:
            raise TypeError("raise LocalProtocolError or RemoteProtocolError")
        return super().__new__(cls)


class LocalProtocolError(ProtocolError):
    """We asked the session for something illegal (a harness bug, not a finding)."""


class RemoteProtocolError(ProtocolError):
    """The peer broke the protocol so badly that the message cannot be used."""

    def __init__(self, finding: Finding) -> None:
        super().__init__(str(finding))
        self.finding = finding
