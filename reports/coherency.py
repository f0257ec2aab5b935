"""The coherency matrix, contract level (DESIGN.md, Coherency): for each target family and
each cache mode it can run in (cache=none, auto, always; writeback off and on), what its
replies promise and whether that keeps the mode's contract, side by side for FUSE over
the /dev/fuse framing and for virtio-fs.

``python -m reports coherency [--target FAMILY ...] [--out DIR]`` opens each family in each
mode (``ref`` and ``ref:vhost-user``, the reference server over SEQPACKET and as a vhost-user
back-end; ``virtiofsd``), prints the matrix and writes ``coherency.md`` and
``coherency.json``; FUSE-CACHE-005 attaches the matrix of the family under test to allure.
The observed level (through a mount, with timings) joins it in the coherency issue.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from html import escape
from pathlib import Path

from conformance.protocol.cache_contract import MODES, contract_problems, promised, writeback_problems
from targets.connection import KernelConnection
from targets.errors import TargetError
from targets.spec import REF_VHOST_USER, TargetSpec, is_cuse, parse_spec
from targets.wire import wire_target

#: families that take cache=MODE and writeback, and what carries their FUSE messages
FAMILIES = {"ref": "FUSE (SEQPACKET)", "ref:vhost-user": "virtio-fs", "virtiofsd": "virtio-fs"}
ROWS = tuple((mode, writeback) for writeback in (False, True) for mode in MODES)


@dataclass
class Cell:
    spec: str
    transport: str
    promise: str = ""
    problems: list[str] = field(default_factory=list)
    error: str = ""

    @property
    def verdict(self) -> str:
        return "error" if self.error else "broken" if self.problems else "kept"


def family_of(spec: TargetSpec) -> str | None:
    """The family of ``spec`` that runs in every cache mode, if it is one."""
    if is_cuse(spec):
        return None  # a character device
    family = "ref:vhost-user" if spec.name == "ref" and REF_VHOST_USER in spec.options else spec.name
    return family if family in FAMILIES else None


def spec_for(family: str, mode: str, writeback: bool, keep: dict[str, str | bool] | None = None) -> str:
    """The spec of ``family`` in one mode, with the other options in ``keep`` (a mutant)."""
    options = [f"cache={mode}", *(["writeback"] if writeback else []),
               *(k if v is True else f"{k}={v}" for k, v in (keep or {}).items()
                 if k not in ("cache", "writeback", REF_VHOST_USER))]
    return f"{family},{','.join(options)}" if ":" in family else f"{family}:{','.join(options)}"


def row_name(mode: str, writeback: bool) -> str:
    return f"cache={mode}" + (" + writeback" if writeback else "")


def probe(spec: str, *, timeout: float = 5.0) -> Cell:
    """One cell: open ``spec``, INIT, read its promises, judge them against its mode."""
    parsed = parse_spec(spec)
    mode = str(parsed.options.get("cache"))
    cell = Cell(spec, "?")
    try:
        with wire_target(parsed) as target:
            cell.transport = target.channel.transport
            conn = KernelConnection(target.channel, timeout=timeout)
            reply = conn.init()
            if not reply.ok:
                cell.error = f"INIT answered {reply.error}"
                return cell
            got = promised(conn)
    except (TargetError, AssertionError) as exc:
        cell.error = str(exc).splitlines()[0]
        return cell
    cell.promise = got.describe()
    declared = bool(parsed.options.get("writeback"))
    cell.problems = contract_problems(mode, got) + writeback_problems(declared, got)
    return cell


def matrix(families: Sequence[str], keep: dict[str, str | bool] | None = None) -> dict[str, dict[str, Cell]]:
    """Row (mode) -> family -> cell."""
    return {row_name(mode, wb): {family: probe(spec_for(family, mode, wb, keep)) for family in families}
            for mode, wb in ROWS}


def html(table: dict[str, dict[str, Cell]]) -> str:
    """The matrix as an HTML table (an allure attachment)."""
    families = list(next(iter(table.values())))
    colour = {"kept": "#dff0d8", "broken": "#f2dede", "error": "#fcf8e3"}
    head = "".join(f"<th>{escape(f)}<br><small>{escape(FAMILIES.get(f, ''))}</small></th>" for f in families)
    rows = []
    for row, cells in table.items():
        shown = "".join(
            f'<td style="background:{colour[c.verdict]}"><b>{c.verdict}</b><br>'
            f"{escape(c.error or '; '.join(c.problems) or c.promise)}</td>" for c in cells.values())
        rows.append(f"<tr><th>{escape(row)}</th>{shown}</tr>")
    return (f"<table border=1 cellpadding=4><tr><th>mode</th>{head}</tr>{''.join(rows)}</table>")


def markdown(table: dict[str, dict[str, Cell]]) -> str:
    families = list(next(iter(table.values())))
    head = "| mode | " + " | ".join(f"{f} ({FAMILIES.get(f, '')})" for f in families) + " |"
    lines = [head, "|" + " --- |" * (len(families) + 1)]
    for row, cells in table.items():
        shown = []
        for family in families:
            cell = cells[family]
            detail = cell.error or "; ".join(cell.problems) or cell.promise
            shown.append(f"**{cell.verdict}**<br>{detail}")
        lines.append(f"| {row} | " + " | ".join(shown) + " |")
    return "\n".join(lines) + "\n"


def as_json(table: dict[str, dict[str, Cell]]) -> str:
    return json.dumps({row: {f: {**asdict(cell), "verdict": cell.verdict} for f, cell in cells.items()}
                       for row, cells in table.items()}, indent=2)


def main(families: Sequence[str], out: Path | None) -> int:
    unknown = [f for f in families if f not in FAMILIES]
    if unknown:
        print(f"not a family with cache modes: {', '.join(unknown)} (known: {', '.join(FAMILIES)})")
        return 2
    table = matrix(families)
    text = markdown(table)
    print(text)
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        (out / "coherency.md").write_text(text)
        (out / "coherency.json").write_text(as_json(table))
        print(f"written: {out / 'coherency.md'}, {out / 'coherency.json'}")
    broken = [c for cells in table.values() for c in cells.values() if c.verdict != "kept"]
    return 1 if broken else 0
