"""Replay a saved sequence (``fuzz.reproducer``) against a fresh target and judge it again.

The requests go out as recorded, except for what the server chose: nodeids and file
handles. Those are mapped from the recorded replies to the live ones (entry_out of
LOOKUP, MKDIR, MKNOD, SYMLINK, LINK, CREATE and READDIRPLUS; open_out of OPEN, OPENDIR
and CREATE), so a daemon that hands out pointers as nodeids (libfuse) replays too.
Each live reply is judged by the model of the namespace (``conformance.protocol.model``);
the finding reproduces when the model finds a problem, a reply does not come, or the
daemon dies.

A fuzz finding (a directory with ``finding.json``) replays by ``replay_finding``: its
hypothesis database entry runs the shrunk example's steps again, judged by the fuzz oracles.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from hypothesis import Phase, settings
from hypothesis.database import InMemoryExampleDatabase
from hypothesis.errors import Unsatisfiable
from scapy.packet import Packet

from conformance.protocol.model import Model, parse_request
from fuzz import findings
from fuzz.hostile import VALID, Twist
from fuzz.reproducer import Exchange, load
from fuzz.stage import CAMPAIGNS, Campaign, Stage
from fuzz.stats import Tally
from fuzz.verdict import Defect
from protocol import constants as c
from protocol.errors import RemoteProtocolError
from protocol.events import Reply
from protocol.layers.header import FuseInHeader
from protocol.layers.structs import FuseEntryOut, FuseOpenOut
from protocol.layers.variable import FuseDirentplus
from protocol.session import KernelSession
from targets.connection import KernelConnection
from targets.errors import TargetError
from targets.spec import TargetSpec
from targets.wire import wire_target

IN_HEADER = 40
NODEID_FIELDS = ("oldnodeid", "newdir")  # nodeids inside request structs (LINK, RENAME, RENAME2)


@dataclass
class Outcome:
    """What the replay saw: each request's line, and the problems (none: not reproduced)."""

    lines: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    same: bool = False  # a finding's replay: its own defect showed (not just another)

    @property
    def reproduced(self) -> bool:
        return bool(self.problems)


@dataclass
class Mapping:
    """Recorded nodeids and handles to the live server's."""

    nodeids: dict[int, int] = field(default_factory=lambda: {c.FUSE_ROOT_ID: c.FUSE_ROOT_ID})
    fhs: dict[int, int] = field(default_factory=dict)

    def learn(self, recorded: Packet | None, live: Packet | None) -> None:
        for (old_nodeid, old_fh), (new_nodeid, new_fh) in zip(_ids(recorded), _ids(live), strict=False):
            if old_nodeid and new_nodeid:
                self.nodeids[old_nodeid] = new_nodeid
            if old_fh is not None and new_fh is not None:
                self.fhs[old_fh] = new_fh

    def learn_listing(self, recorded: Packet | None, live: Packet | None) -> None:
        """READDIRPLUS: entries matched by name (a live listing may come in another order)."""
        live_by_name = {bytes(r.dirent.getfieldval("name")): int(r.entry_out.nodeid) for r in _dirents(live)}
        for record in _dirents(recorded):
            new = live_by_name.get(bytes(record.dirent.getfieldval("name")))
            if int(record.entry_out.nodeid) and new:
                self.nodeids[int(record.entry_out.nodeid)] = new

    def rewrite(self, raw: bytes, minor: int, flags: int) -> bytes:
        """The request with the live server's nodeids and handles in place of the recorded."""
        header = FuseInHeader(raw[:IN_HEADER])
        header.nodeid = self.nodeids.get(int(header.nodeid), int(header.nodeid))
        head = bytes(header)[:IN_HEADER]
        arg = parse_request(raw, minor, flags).arg
        if arg is None:
            return head + raw[IN_HEADER:]
        size = len(bytes(arg))
        for name in NODEID_FIELDS:
            if name in arg.fields:
                old = int(arg.getfieldval(name))
                arg.setfieldval(name, self.nodeids.get(old, old))
        if "fh" in arg.fields:
            arg.setfieldval("fh", self.fhs.get(int(arg.fh), int(arg.fh)))
        return head + bytes(arg)[:size] + raw[IN_HEADER + size:]


def _ids(body: Packet | None) -> Iterator[tuple[int, int | None]]:
    """(nodeid, fh) of each entry_out and open_out in a reply body, in order."""
    layer = body
    while layer is not None and layer.__class__.__name__ not in ("NoPayload", "Raw"):
        if isinstance(layer, FuseEntryOut):
            yield int(layer.nodeid), None
        elif isinstance(layer, FuseOpenOut):
            yield 0, int(layer.fh)
        layer = layer.payload if layer.payload else None


def _dirents(body: Packet | None) -> list[FuseDirentplus]:
    return list(body.dirents) if body is not None and hasattr(body, "dirents") else []


def replay(exchanges: list[Exchange], spec: TargetSpec, *, timeout: float = 5.0) -> Outcome:
    """Send the sequence to a fresh instance of ``spec``; the model judges every reply."""
    outcome = Outcome()
    if not exchanges or FuseInHeader(exchanges[0].request[:IN_HEADER]).opcode != c.FUSE_INIT:
        raise ValueError("a reproducer starts with its INIT request")
    with wire_target(spec) as target:
        conn = KernelConnection(target.channel, timeout=timeout)
        try:
            _run(conn, exchanges, outcome)
        except (TargetError, AssertionError, RemoteProtocolError) as exc:
            outcome.problems.append(f"the target failed: {exc}")
        daemon = target.daemon
        if daemon is not None and not daemon.alive():
            outcome.problems.append(f"the daemon {daemon.exit_description()}; stderr: "
                                    f"{daemon.stderr_tail(300)!r}")
    return outcome


def _run(conn: KernelConnection, exchanges: list[Exchange], outcome: Outcome) -> None:
    recorded = KernelSession()
    live = conn.session
    mapping = Mapping()
    model: Model | None = None
    for index, exchange in enumerate(exchanges, 1):
        recorded.observe(exchange.request)
        try:
            old = recorded.receive(exchange.reply) if exchange.reply is not None else None
        except RemoteProtocolError:
            old = None  # a recorded reply past reading: nothing to map from it
        data = exchange.request if index == 1 else mapping.rewrite(exchange.request, live.proto_minor,
                                                                   live.proto_flags)
        call = parse_request(data, live.proto_minor, live.proto_flags)
        outcome.lines.append(f"#{index} -> {call.name} nodeid={call.nodeid}")
        live.observe(data)
        if exchange.reply is None and call.opcode in (c.FUSE_FORGET, c.FUSE_BATCH_FORGET):
            conn.send_raw(data)
            reply: Reply | None = None
        else:
            reply = conn.wait(call.unique, data)
            outcome.lines[-1] += f"  <- error {reply.error}" if reply.error else "  <- success"
        if index == 1:
            assert reply is not None and reply.ok and live.negotiated, f"INIT refused: error {reply}"
            model = Model(flags=live.negotiated.flags)
            continue
        assert model is not None
        problems = model.judge(call, reply)
        if problems:
            outcome.problems += [f"#{index} {call.name}: {p}" for p in problems]
            return
        if reply is not None and isinstance(old, Reply):
            mapping.learn(old.body, reply.body)
            if call.opcode == c.FUSE_READDIRPLUS:
                mapping.learn_listing(old.body, reply.body)


def replay_finding(directory: Path, spec: TargetSpec, *, timeout: float = 2.0, attempts: int = 1) -> Outcome:
    """A fuzz finding again, on a fresh instance of ``spec``: its hypothesis database entry
    runs the same steps (the machine picks nodeids and handles by position, so the target's
    own values need no mapping); without an entry, the pcap's messages go out as recorded.
    Up to ``attempts`` times, each on a fresh instance, until the finding's own defect shows
    (another defect is what it tells only if its own never showed)."""
    tried, outcome = 1, _replay_once(directory, spec, timeout)
    while not outcome.same and tried < attempts:
        tried, again = tried + 1, _replay_once(directory, spec, timeout)
        outcome = again if again.reproduced or not outcome.reproduced else outcome
    if attempts > 1:
        outcome.lines.append(f"attempts: {tried} of at most {attempts}")
    return outcome


def _replay_once(directory: Path, spec: TargetSpec, timeout: float) -> Outcome:
    finding, pcap_path = findings.load(directory)
    outcome = Outcome(lines=[f"finding: {finding.headline()}", f"recorded: {finding.explanation[:300]}"])
    campaign = CAMPAIGNS[finding.campaign]
    if finding.database_entry:
        outcome.lines.append("replaying the hypothesis database entry (the shrunk example's steps)")
        defect = _replay_entry(campaign, spec, finding, timeout)
    else:
        outcome.lines.append("no database entry: replaying the pcap's messages as recorded")
        defect = _replay_messages(campaign, spec, pcap_path, timeout)
    if defect is not None:
        outcome.same = defect.signature == finding.signature
        outcome.problems.append(f"{'the same' if outcome.same else 'another'} defect: {defect}")
    return outcome


def _replay_entry(campaign: Campaign, spec: TargetSpec, finding: findings.Finding,
                  timeout: float) -> Defect | None:
    from fuzz.campaign import Runner

    database = InMemoryExampleDatabase()
    database.save(bytes.fromhex(finding.database_key), bytes.fromhex(finding.database_entry))
    with tempfile.TemporaryDirectory() as scratch:
        runner = Runner(campaign, spec, Tally(), Path(scratch), database, deadline=timeout)
        chosen = settings(runner.settings(first=True), phases=[Phase.reuse], max_examples=1,
                          database=database)
        test = runner.test(chosen)
        try:
            test()
        except Defect as defect:
            return defect
        except Unsatisfiable:  # the recorded choices ran out before the defect came: the target
            return None  # went on past the step where it failed when recorded (not reproduced)
        finally:
            runner.close()
    return None


def _replay_messages(campaign: Campaign, spec: TargetSpec, pcap_path: Path, timeout: float) -> Defect | None:
    """The recorded requests in order (nodeids and handles mapped from the recorded replies
    to the live ones); a request recorded without a reply is sent without waiting."""
    from fuzz.fuse import FuseFuzzMachine

    if campaign.name != "fuse":
        raise ValueError(f"a {campaign.name} finding replays from its database entry only")
    exchanges, _ = load(pcap_path)
    stage = campaign.open(spec, timeout, Tally())
    machine = FuseFuzzMachine(stage)
    mapping = Mapping()
    recorded = KernelSession()
    try:
        for exchange in exchanges[1:]:
            recorded.observe(exchange.request)
            data = _mapped(mapping, exchange.request, stage)
            opcode = int.from_bytes(data[4:8], "little") if len(data) >= 8 else 0
            twist = Twist("boundary" if exchange.reply is not None else "malformed", "as recorded")
            live = machine.exchange(opcode, data, twist)
            if exchange.reply is not None and live is not None:
                try:
                    old = recorded.receive(exchange.reply)
                except RemoteProtocolError:
                    continue
                if isinstance(old, Reply):
                    mapping.learn(old.body, live.body)
        machine.probe("the sequence", VALID, "the whole sequence")
        machine.watch.check("the sequence", "valid", "the whole sequence")
    except Defect as defect:
        return defect
    finally:
        stage.close()
    return None


def _mapped(mapping: Mapping, data: bytes, stage: Stage) -> bytes:
    session = stage.conn.session
    try:
        return mapping.rewrite(data, session.proto_minor, session.proto_flags)
    except Exception:  # a broken request: map the header's nodeid only
        if len(data) < IN_HEADER:
            return data
        nodeid = int.from_bytes(data[16:24], "little")  # fuse_in_header.nodeid
        return data[:16] + mapping.nodeids.get(nodeid, nodeid).to_bytes(8, "little") + data[24:]
