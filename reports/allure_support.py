"""Allure attachments: the exchange of a failed test, readable and as pcap."""

from __future__ import annotations

import tempfile
from pathlib import Path

import allure

from reports.transcript import dump, write_pcap
from targets.channel import Transcript


def attach_exchange(transcript: Transcript, *, minor: int, name: str = "exchange") -> None:
    """Attach the messages of ``transcript`` as text (scapy show) and as pcap."""
    records = list(transcript)
    if not records:
        return
    kept = f"(the {transcript.dropped} messages before these were not kept)\n\n" if transcript.dropped else ""
    allure.attach(kept + dump(records, minor), name=f"{name}.txt",
                  attachment_type=allure.attachment_type.TEXT)
    with tempfile.TemporaryDirectory() as tmp:
        pcap = write_pcap(records, Path(tmp) / f"{name}.pcap")
        allure.attach(pcap.read_bytes(), name=f"{name}.pcap",
                      attachment_type=allure.attachment_type.PCAP)
