"""The coherency and ACL matrices, built from the allure results of one run or many.

- Coherency: rows are the scenarios (a COHERENCY rule and what it changes), columns the cache
  modes (with the target when results of several targets are read); a cell is what was
  observed: "at once", "after N ms", "stale for > N ms", with the verdict, or n/a.
- ACL: rows are the ACL cases (each POSIX-ACL/FUSE-ACL rule; the random differential rule split
  by the entry that decides), columns the targets; a cell is "match" or how the target's
  decision differed from tmpfs's.

``python -m reports matrices RESULTS [RESULTS ...] OUT`` writes coherency.{md,html,json} and
acl.{md,html,json} to OUT; a pytest run with ``--alluredir`` also adds them to its own results
as the attachments of one result ("coherency and ACL matrices").
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass
from html import escape
from pathlib import Path
from typing import Any

from reports.outcomes import plain

#: the attachment the random ACL rule leaves: entry kind -> {examples, matched, differed}
ACL_DECISIONS = "acl decisions"
MATRIX_RESULT = "coherency and ACL matrices"
SHOWN = 140  # characters of a cell's text shown (the JSON keeps all)
COLOURS = {"passed": "#dff0d8", "failed": "#f2dede", "broken": "#fcf8e3", "skipped": "#eeeeee",
           "stale": "#fff3cd"}


@dataclass
class Cell:
    status: str  # passed | failed | broken | skipped | stale (passed, but stale until the deadline)
    text: str
    stop: int = 0

    @property
    def shown(self) -> str:
        text = self.text if len(self.text) <= SHOWN else self.text[:SHOWN - 1] + "…"
        shown = {"failed": f"FAIL: {text}", "broken": f"error: {text}", "skipped": "n/a"}
        return shown.get(self.status, text)


Table = dict[str, dict[str, Cell]]


def results(dirs: Iterable[Path]) -> Iterator[tuple[Path, dict[str, Any]]]:
    for directory in dirs:
        for path in sorted(directory.glob("*-result.json")):
            try:
                yield directory, json.loads(path.read_text())
            except (OSError, ValueError):
                continue


def _labels(result: dict[str, Any]) -> dict[str, str]:
    return {label["name"]: label["value"] for label in result.get("labels", [])
            if label["name"] in ("epic", "story")}


def _params(result: dict[str, Any]) -> dict[str, str]:
    return {p["name"]: plain(str(p["value"])) for p in result.get("parameters", [])}


def _message(result: dict[str, Any]) -> str:
    text = str(result.get("statusDetails", {}).get("message", "")).strip()
    first = text.splitlines()[0] if text else ""
    return first.removeprefix("AssertionError: ")[:160]


def _put(table: Table, row: str, column: str, cell: Cell) -> None:
    """The latest result wins where a run was repeated into the same results."""
    old = table.setdefault(row, {}).get(column)
    if old is None or cell.stop >= old.stop:
        table[row][column] = cell


def _title(result: dict[str, Any], story: str) -> str:
    name = str(result.get("name", story))
    return name.split(": ", 1)[1] if ": " in name else name


def family(target: str) -> str:
    """A target spec without its cache mode (and ref's default ``acl``): ``ref:cache=none,writeback,
    notify,acl`` -> ``ref``."""
    name, _, options = target.partition(":")
    kept = [o for o in options.split(",")
            if o and not o.startswith(("cache=", "notify")) and o not in ("writeback", "acl", "acl=on")]
    return f"{name}:{','.join(kept)}" if kept else name


def coherency(found: list[tuple[Path, dict[str, Any]]]) -> Table:
    chosen = [(d, r) for d, r in found if _labels(r).get("epic") == "coherency" and "mode" in _params(r)]
    families = {family(_params(r).get("target", "")) for _, r in chosen}
    scenarios = {_labels(r).get("story", "?"): _params(r)["scenario"] for _, r in chosen
                 if _params(r).get("scenario")}  # a rule n/a in one mode has none of its own
    table: Table = {}
    for _, result in chosen:
        params, story = _params(result), _labels(result).get("story", "?")
        column = params["mode"]
        if len(families) > 1:
            column = f"{family(params.get('target', '?'))} {column}"
        status = str(result.get("status"))
        observed = params.get("observed", "")
        if status == "passed" and observed.startswith("stale"):
            status = "stale"
        text = observed or _message(result)
        if status == "skipped":
            text = _message(result)
        row = f"{story}: {scenarios.get(story) or _title(result, story)}"
        _put(table, row, column, Cell(status, text, int(result.get("stop", 0))))
    return table


def _decisions(directory: Path, result: dict[str, Any]) -> dict[str, dict[str, Any]]:
    for attachment in result.get("attachments", []):
        if attachment.get("name") == ACL_DECISIONS:
            try:
                return dict(json.loads((directory / attachment["source"]).read_text()))
            except (OSError, ValueError, KeyError):
                return {}
    return {}


def acl(found: list[tuple[Path, dict[str, Any]]]) -> Table:
    table: Table = {}
    for directory, result in found:
        labels = _labels(result)
        if labels.get("epic") != "acl":
            continue
        story, status = labels.get("story", "?"), str(result.get("status"))
        column = _params(result).get("target", "?")
        stop = int(result.get("stop", 0))
        text = "match" if status == "passed" else _message(result)
        _put(table, f"{story}: {_title(result, story)[:90]}", column, Cell(status, text, stop))
        for kind, tally in sorted(_decisions(directory, result).items()):
            matched, examples = int(tally.get("matched", 0)), int(tally.get("examples", 0))
            differed = str(tally.get("differed") or "")
            cell = (Cell("failed", f"{differed} ({matched}/{examples} matched)", stop) if differed
                    else Cell("passed", f"match ({matched}/{examples})", stop))
            _put(table, f"{story}: random ACLs, {kind} decides", column, cell)
    return table


def _columns(table: Table) -> list[str]:
    return sorted({column for cells in table.values() for column in cells})


def markdown(table: Table, corner: str) -> str:
    if not table:
        return f"(no {corner} results)\n"
    columns = _columns(table)
    lines = [f"| {corner} | " + " | ".join(columns) + " |", "|" + " --- |" * (len(columns) + 1)]
    for row in sorted(table):
        cells = [table[row][c].shown.replace("|", "/") if c in table[row] else "" for c in columns]
        lines.append(f"| {row} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def html(table: Table, corner: str, title: str) -> str:
    columns = _columns(table)
    head = "".join(f"<th>{escape(c)}</th>" for c in columns)
    rows = []
    for row in sorted(table):
        cells = "".join(_td(table[row].get(c)) for c in columns)
        rows.append(f"<tr><th style='text-align:left'>{escape(row)}</th>{cells}</tr>")
    body = (f"<table border=1 cellpadding=4 style='border-collapse:collapse'><tr><th>{escape(corner)}</th>"
            f"{head}</tr>{''.join(rows)}</table>") if table else f"<p>no {escape(corner)} results</p>"
    return (f"<!doctype html><meta charset=utf-8><title>{escape(title)}</title>"
            f"<h2>{escape(title)}</h2>{body}\n")


def _td(cell: Cell | None) -> str:
    if cell is None:
        return "<td></td>"
    return f'<td style="background:{COLOURS.get(cell.status, "#fff")}">{escape(cell.shown)}</td>'


def as_json(table: Table) -> str:
    return json.dumps({row: {c: {**asdict(cell), "shown": cell.shown} for c, cell in cells.items()}
                       for row, cells in table.items()}, indent=2, sort_keys=True)


def from_json(data: dict[str, Any]) -> Table:
    """A table as ``as_json`` wrote it (a summary keeps its matrices so)."""
    return {row: {column: Cell(cell["status"], cell["text"], cell.get("stop", 0))
                  for column, cell in cells.items()} for row, cells in data.items()}


def build(dirs: list[Path]) -> dict[str, Table]:
    found = [(d, r) for d, r in results(dirs) if r.get("name") != MATRIX_RESULT]
    return {"coherency": coherency(found), "acl": acl(found)}


CORNERS = {"coherency": ("scenario", "Coherency: when each side sees the other's change, per cache mode"),
           "acl": ("ACL case", "POSIX ACLs: the target's decisions against tmpfs's, per target")}


def write(tables: dict[str, Table], out: Path) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for name, table in tables.items():
        corner, title = CORNERS[name]
        for suffix, text in (("md", f"# {title}\n\n{markdown(table, corner)}"),
                             ("html", html(table, corner, title)), ("json", as_json(table))):
            path = out / f"{name}.{suffix}"
            path.write_text(text)
            written.append(path)
    return written


def attach_to_results(results_dir: Path) -> bool:
    """Build both matrices from ``results_dir`` and add them there as one result's attachments,
    with the charts (``reports.charts``: outcomes per area, coherency staleness); False when
    the run left no result at all."""
    from reports import charts
    from reports.outcomes import read

    tables = build([results_dir])
    outcomes = read([results_dir])
    if not outcomes:
        return False
    for _, old in list(results([results_dir])):
        if old.get("name") == MATRIX_RESULT:  # a matrix of an earlier run into the same results
            for attachment in old.get("attachments", []):
                (results_dir / attachment["source"]).unlink(missing_ok=True)
            (results_dir / f"{old['uuid']}-result.json").unlink(missing_ok=True)
    attachments = []
    shown = [(f"{name} matrix", suffix, mime, text) for name, table in tables.items() if table
             for suffix, mime, text in (("html", "text/html", html(table, *CORNERS[name])),
                                        ("md", "text/markdown", markdown(table, CORNERS[name][0])))]
    shown.append(("chart: outcomes per area", "svg", "image/svg+xml", charts.outcomes_by_area(outcomes)))
    if tables["coherency"]:
        shown.append(("chart: coherency staleness", "svg", "image/svg+xml",
                      charts.coherency_staleness(tables["coherency"])))
    for name, suffix, mime, text in shown:
        source = f"{uuid.uuid4()}-attachment.{suffix}"
        (results_dir / source).write_text(text)
        attachments.append({"name": name, "source": source, "type": mime})
    now = int(time.time() * 1000)
    result = {"uuid": str(uuid.uuid4()), "name": MATRIX_RESULT, "fullName": "fusecheck.matrices",
              "historyId": "fusecheck-matrices", "status": "passed", "stage": "finished",
              "start": now, "stop": now, "attachments": attachments,
              "labels": [{"name": "epic", "value": "reports"}, {"name": "feature", "value": "matrices"},
                         {"name": "suite", "value": "matrices"}],
              "description": "Built from this run's results: the coherency and ACL matrices "
                             "(python -m reports matrices) and the charts (reports/charts.py)."}
    (results_dir / f"{result['uuid']}-result.json").write_text(json.dumps(result))
    return True


def main(dirs: list[Path], out: Path) -> int:
    missing = [d for d in dirs if not d.is_dir()]
    if missing:
        print(f"not a directory of allure results: {', '.join(map(str, missing))}")
        return 2
    tables = build(dirs)
    for name, table in tables.items():
        print(f"{CORNERS[name][1]}\n\n{markdown(table, CORNERS[name][0])}")
    print("written: " + ", ".join(str(p) for p in write(tables, out)))
    return 0
