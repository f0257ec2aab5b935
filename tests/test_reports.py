"""Transcripts (dump and pcap) and the allure results of a conformance run."""

from __future__ import annotations

import json
from pathlib import Path

from scapy.packet import Raw

from protocol import constants as c
from protocol.layers import FuseEntryOut, FuseGetattrIn, FuseName, FuseOutHeader
from protocol.session import KernelSession
from reports.matrices import MATRIX_RESULT
from reports.transcript import dissect, dump, read_pcap, write_pcap
from targets.channel import Transcript
from tests.helpers import run_conformance, tiny_daemon


def exchange() -> Transcript:
    session = KernelSession()
    transcript = Transcript()
    transcript.append("to_target", session.request(c.FUSE_LOOKUP, FuseName(name=b"hello")))
    transcript.append("from_target", bytes(FuseOutHeader(unique=2) / FuseEntryOut(nodeid=7)))
    transcript.append("to_target", session.request(c.FUSE_GETATTR, FuseGetattrIn()))
    transcript.append("from_target", bytes(FuseOutHeader(unique=4, error=-2) / Raw(b"")))
    return transcript


def test_dump_decodes_replies_by_their_request() -> None:
    packets = dissect(exchange())
    assert [arrow for arrow, _ in packets] == ["->", "<-", "->", "<-"]
    assert isinstance(packets[1][1].payload, FuseEntryOut) and packets[1][1].payload.nodeid == 7
    text = dump(exchange())
    assert "FUSE_LOOKUP" in text and "FuseEntryOut" in text and "hello" in text


def test_pcap_round_trip(tmp_path: Path) -> None:
    records = list(exchange())
    path = write_pcap(records, tmp_path / "x.pcap")
    assert read_pcap(path) == [(r.direction, r.data) for r in records]


def test_allure_labels_and_exchange_on_failure(tmp_path: Path) -> None:
    results = tmp_path / "allure"
    run = run_conformance(tiny_daemon("wrong-unique"), f"--alluredir={results}",
                          "--rule=FUSE-PROTO-001")
    assert run.returncode == 1, run.stdout[-2000:]
    found = [json.loads(p.read_text()) for p in results.glob("*-result.json")]
    [report] = [r for r in found if r["name"] == MATRIX_RESULT]  # the run's charts beside the tests
    assert {a["name"] for a in report["attachments"]} == {"chart: outcomes per area"}  # no matrix rows
    [result] = [r for r in found if r is not report]
    labels = {(label["name"], label["value"]) for label in result["labels"]}
    assert {("epic", "protocol"), ("feature", "PROTO"), ("story", "FUSE-PROTO-001"),
            ("severity", "critical"), ("level", "must")} <= labels
    assert result["status"] == "failed"
    params = {p["name"]: p["value"] for p in result["parameters"]}
    assert params["target version"] == "'unknown'"  # an exec: command has no package to ask
    assert "Run it again: pytest conformance" in result["description"]
    environment = (results / "environment.properties").read_text()
    assert "kernel.fuse = 7." in environment and "fusecheck = " in environment
    attachments = {a["name"]: a for a in result.get("attachments", [])}
    assert {"exchange.txt", "exchange.pcap"} <= set(attachments), attachments
    text = (results / attachments["exchange.txt"]["source"]).read_text()
    assert "FUSE_INIT" in text and "FUSE_GETATTR" in text


def test_transcript_keeps_the_head_of_big_messages(tmp_path: Path) -> None:
    """A 64 KiB READ reply is kept as its first ``snaplen`` bytes; the pcap records the
    whole length (caplen < len, as tcpdump's snaplen) and the dump says what was cut."""
    transcript = Transcript(snaplen=64)
    session = KernelSession()
    transcript.append("to_target", session.request(c.FUSE_GETATTR, FuseGetattrIn()))
    big = bytes(FuseOutHeader(unique=2) / Raw(b"x" * 65536))
    transcript.append("from_target", big)
    record = transcript.records()[-1]
    assert record.truncated and len(record.data) == 64 and record.length == len(big)
    pcap = write_pcap(transcript.records(), tmp_path / "t.pcap")
    from scapy.utils import RawPcapReader
    with RawPcapReader(str(pcap)) as reader:
        lengths = [(meta.caplen, meta.wirelen) for _data, meta in reader]
    assert lengths[1] == (65, len(big) + 1)
    assert f"the first 64 of {len(big)} bytes kept" in dump(transcript.records())


def test_coherency_specs_keep_other_options() -> None:
    from reports.coherency import family_of, spec_for
    from targets.spec import parse_spec

    kept = spec_for("ref", "none", True, {"mutant": "x", "cache": "auto"})
    assert kept == "ref:cache=none,writeback,mutant=x"
    assert spec_for("ref:vhost-user", "always", False) == "ref:vhost-user,cache=always"
    assert family_of(parse_spec("ref:vhost-user,cache=none")) == "ref:vhost-user"
    assert family_of(parse_spec("virtiofsd:writeback")) == "virtiofsd"
    assert family_of(parse_spec("passthrough_ll")) is None


def test_coherency_matrix_command(tmp_path: Path) -> None:
    """``python -m reports coherency --target ref``: six modes, each kept, as Markdown and JSON."""
    import subprocess
    import sys

    from tests.helpers import ROOT

    result = subprocess.run([sys.executable, "-m", "reports", "coherency", "--target", "ref",
                             "--out", str(tmp_path)],
                            cwd=ROOT, capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    table = json.loads((tmp_path / "coherency.json").read_text())
    assert list(table) == ["cache=none", "cache=auto", "cache=always", "cache=none + writeback",
                           "cache=auto + writeback", "cache=always + writeback"]
    assert all(row["ref"]["verdict"] == "kept" for row in table.values()), table
    assert "open KEEP_CACHE" in table["cache=always"]["ref"]["promise"]
    assert "| cache=none |" in (tmp_path / "coherency.md").read_text()
