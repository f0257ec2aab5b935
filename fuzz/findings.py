"""A finding on disk: one directory per distinct defect, everything needed to see it again.

- ``finding.json``: the defect (kind, opcode, field class, explanation), the target spec
  and version, the campaign, the seed of the batch, the hypothesis database key and entry
  (hex), when, and the command that replays it;
- ``sequence.pcap``: the shrunk sequence, INIT first (``fuzz.reproducer``), readable in
  Wireshark and by ``python -m fuzz show``;
- ``sequence.txt``: the same sequence as scapy dissects it, one message per line;
- ``stderr.txt``: the end of the target's stderr.
"""

from __future__ import annotations

import json
import re
import shlex
import struct
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from scapy.packet import Packet

from fuzz.reproducer import Exchange, save
from fuzz.verdict import Defect
from protocol.layers.header import FuseInHeader, FuseOutHeader

MAX_SHOWN = 160  # characters of one message's dissection in sequence.txt


@dataclass
class Finding:
    kind: str
    opcode: str
    field_class: str
    explanation: str
    target: str
    version: str
    campaign: str
    seed: int
    signature: str
    database_key: str = ""  # hex
    database_entry: str = ""  # hex: the choice sequence hypothesis replays
    found_at: str = field(default_factory=lambda: time.strftime("%Y-%m-%dT%H:%M:%S%z"))
    messages: int = 0
    reproducer: str = "sequence.pcap"
    after_seconds: float = 0.0  # into the campaign (this worker's), shrinking included
    after_examples: int = 0  # examples the worker ran until the first that failed, that one included
    flaky: bool = False  # hypothesis could not make the shrunk example fail again

    @classmethod
    def of(cls, defect: Defect, *, target: str, version: str, campaign: str, seed: int) -> Finding:
        return cls(defect.kind, defect.opcode, defect.field_class, defect.explanation, target,
                   version, campaign, seed, defect.signature)

    def replay_command(self, directory: Path) -> str:
        return f"python -m fuzz replay {shlex.quote(str(directory))} --target {shlex.quote(self.target)}"

    def headline(self) -> str:
        return f"{self.kind} after {self.opcode} ({self.field_class}) in {self.target}"


def slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("_")[:60]


def dissect(exchanges: list[Exchange]) -> str:
    """One line per message as scapy reads it (a broken one as far as it goes)."""
    lines = []
    for index, exchange in enumerate(exchanges, 1):
        lines.append(f"#{index} -> {_read(FuseInHeader, exchange.request)}")
        lines.append("   <- (no reply)" if exchange.reply is None
                     else f"   <- {_read(FuseOutHeader, exchange.reply)}")
    return "\n".join(lines)


def _read(cls: type[Packet], data: bytes) -> str:
    try:
        return _cut(repr(cls(data)))
    except (struct.error, ValueError, IndexError):  # shorter than its header
        return f"{len(data)} bytes, not a whole {cls.__name__}: {data.hex()}"


def _cut(text: str) -> str:
    return text if len(text) <= MAX_SHOWN else text[:MAX_SHOWN] + "...>"


def keep(root: Path, finding: Finding, exchanges: list[Exchange], stderr: str) -> Path:
    """Write the finding under ``root``; its directory."""
    directory = root / slug(f"{finding.campaign}-{finding.target}-{finding.signature}")
    directory.mkdir(parents=True, exist_ok=True)
    finding.messages = len(exchanges)
    notes = [finding.headline(), finding.explanation[:2000], f"seed {finding.seed}",
             f"replay: {finding.replay_command(directory)}"]
    save(directory / finding.reproducer, exchanges, notes)
    (directory / "sequence.txt").write_text(dissect(exchanges) + "\n")
    (directory / "stderr.txt").write_text(stderr)
    record = asdict(finding) | {"replay": finding.replay_command(directory)}
    (directory / "finding.json").write_text(json.dumps(record, indent=2) + "\n")
    return directory


def load(directory: Path) -> tuple[Finding, Path]:
    """The finding in ``directory`` (or the directory of a ``finding.json``) and its pcap."""
    if directory.is_file():
        directory = directory.parent
    data: dict[str, Any] = json.loads((directory / "finding.json").read_text())
    data.pop("replay", None)
    finding = Finding(**data)
    return finding, directory / finding.reproducer


def found(root: Path) -> list[tuple[Finding, Path]]:
    return [load(path.parent) for path in sorted(root.glob("*/finding.json"))]
