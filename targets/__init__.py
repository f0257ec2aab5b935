"""How the suite reaches a target: specs, transports, daemons and their processes."""

from targets.channel import Record, SeqpacketChannel, Transcript, seqpacket_pair
from targets.daemons import REGISTRY, DaemonEntry, Instance, Requirement
from targets.errors import (
    TargetDied,
    TargetError,
    TargetNotInstalled,
    TargetSpecError,
    TargetTimeout,
)
from targets.exec import ExecTarget
from targets.process import Daemon, wait_ready
from targets.spec import TargetSpec, parse_spec

__all__ = [
    "REGISTRY",
    "Daemon",
    "DaemonEntry",
    "ExecTarget",
    "Instance",
    "Record",
    "Requirement",
    "SeqpacketChannel",
    "TargetDied",
    "TargetError",
    "TargetNotInstalled",
    "TargetSpec",
    "TargetSpecError",
    "TargetTimeout",
    "Transcript",
    "parse_spec",
    "seqpacket_pair",
    "wait_ready",
]
