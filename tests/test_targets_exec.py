"""Socket transport, daemon processes, builds and ExecTarget: fake and real daemons."""

from __future__ import annotations

import contextlib
import gzip
import os
import shlex
import shutil
import signal
import socket
import sys
import textwrap
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from targets import build
from targets.channel import SeqpacketChannel, Transcript, seqpacket_pair
from targets.daemons import REGISTRY, DaemonEntry, Instance, Requirement, mount_options
from targets.errors import (
    TargetDied,
    TargetError,
    TargetNotInstalled,
    TargetSpecError,
    TargetTimeout,
)
from targets.exec import ExecTarget
from targets.process import Daemon, wait_ready
from targets.skip import require
from targets.spec import parse_spec

PRELUDE = """\
import os, signal, sys, time
fd = int(sys.argv[1].rsplit("/", 1)[1])
"""
FakeSpec = Callable[[str], str]


@pytest.fixture
def fake(tmp_path: Path) -> FakeSpec:
    """Write a fake daemon (Python) that gets the channel as ``fd``; return its spec."""

    def make(body: str) -> str:
        script = tmp_path / "fake_daemon.py"
        script.write_text(PRELUDE + textwrap.dedent(body))
        argv = shlex.join([sys.executable, str(script)])
        return f"exec:{argv} /dev/fd/{{fd}}"

    return make


def reaped(pid: int) -> bool:
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        return True
    return False


def test_fake_daemon_exit_is_target_died_with_status_and_stderr(fake: FakeSpec) -> None:
    spec = fake("""
        data = os.read(fd, 1 << 20)
        sys.stderr.write(f"fake: got {len(data)} bytes, giving up\\n")
        sys.exit(3)
    """)
    with ExecTarget(spec, grace=1.0) as target:
        target.channel.send(b"hello")
        with pytest.raises(TargetDied) as info:
            target.channel.recv(timeout=5.0)
    died = info.value
    assert died.returncode == died.exit_status == 3 and died.signal_name is None
    assert "fake: got 5 bytes, giving up" in died.stderr_tail
    assert str(died).startswith(f"target died: {target.spec.name} exited with status 3 (stderr: fake: got 5")
    assert target.exit_status == 3 and target.exited_by_itself
    assert not target.alive_at_close and not target.exited_cleanly
    assert [(r.direction, r.data) for r in target.transcript] == [("to_target", b"hello")]


def test_daemon_killed_by_a_signal(fake: FakeSpec) -> None:
    spec = fake("""
        os.read(fd, 1 << 20)
        os.abort()
    """)
    with ExecTarget(spec, grace=1.0) as target:
        target.channel.send(b"crash now")
        with pytest.raises(TargetDied, match="was killed by SIGABRT") as info:
            target.channel.recv(timeout=5.0)
    assert info.value.signal_name == "SIGABRT" and info.value.exit_status is None
    assert target.exit_status == -signal.SIGABRT and not target.exited_cleanly


def test_echo_daemon_round_trip_transcript_and_clean_exit(fake: FakeSpec) -> None:
    spec = fake("""
        os.write(fd, os.read(fd, 1 << 20)[::-1])
        while os.read(fd, 1 << 20):
            pass
    """)
    with ExecTarget(spec) as target:
        assert target.backing is None and target.scratch is not None
        target.channel.send(b"abc\x00def")
        assert target.channel.recv(timeout=5.0) == b"fed\x00cba"
        pid = target.daemon.pid if target.daemon else None
    records = target.transcript.records()
    assert [(r.direction, r.data) for r in records] == [
        ("to_target", b"abc\x00def"),
        ("from_target", b"fed\x00cba"),
    ]
    assert records[0].time <= records[1].time
    assert target.exit_status == 0 and target.exited_cleanly
    assert pid is not None and reaped(pid)
    assert target.scratch is None


def test_silent_daemon_times_out_and_is_stopped(fake: FakeSpec) -> None:
    spec = fake("""
        os.read(fd, 1 << 20)
        time.sleep(60)
    """)
    with ExecTarget(spec, grace=0.2) as target:
        target.channel.send(b"anyone?")
        start = time.monotonic()
        with pytest.raises(TargetTimeout, match=r"sent nothing within 0\.3 s"):
            target.channel.recv(timeout=0.3)
        assert 0.25 <= time.monotonic() - start < 2.0
    assert target.exit_status == -signal.SIGTERM
    assert not target.exited_by_itself and not target.exited_cleanly


def test_daemon_that_fails_at_startup(fake: FakeSpec) -> None:
    spec = fake("""
        sys.stderr.write("fake: bad option\\n")
        sys.exit(2)
    """)
    with ExecTarget(spec, grace=1.0) as target, pytest.raises(TargetDied) as info:
        assert target.daemon is not None
        target.daemon.wait_exit(5.0)  # so the INIT meets a dead peer
        target.channel.send(b"init")
    assert info.value.returncode == 2
    assert "fake: bad option" in str(info.value)


def test_daemon_that_closes_the_channel_but_lives(fake: FakeSpec) -> None:
    spec = fake("""
        os.close(fd)
        time.sleep(60)
    """)
    with ExecTarget(spec, grace=0.2) as target:
        with pytest.raises(TargetDied, match="closed the channel") as info:
            target.channel.recv(timeout=5.0)
        assert info.value.returncode is None
    assert target.exit_status == -signal.SIGTERM


def test_daemon_that_exits_without_reading_the_request(fake: FakeSpec) -> None:
    spec = fake("""
        import select
        select.select([fd], [], [], 10)  # the request is there, left unread
        sys.exit(2)
    """)
    with ExecTarget(spec, grace=1.0) as target:
        target.channel.send(b"init")
        with pytest.raises(TargetDied) as info:  # ECONNRESET, not EOF
            target.channel.recv(timeout=5.0)
    assert info.value.returncode == 2


@pytest.mark.parametrize("command", ["/nonexistent/fusecheck-daemon", "fusecheck-no-such-daemon"])
def test_missing_daemon_is_not_installed(command: str, tmp_path: Path) -> None:
    with pytest.raises(TargetNotInstalled, match="not found"):
        ExecTarget(f"exec:{command} -f /dev/fd/{{fd}}", scratch_root=tmp_path).open()
    assert list(tmp_path.iterdir()) == []  # scratch dir removed


def test_requirement_names_the_apt_package() -> None:
    with pytest.raises(TargetNotInstalled) as info:
        Requirement("fusecheck-no-such-program", "fusecheck-pkg").check()
    assert info.value.hint == "apt-get install fusecheck-pkg"


def test_exec_target_refuses_other_kinds() -> None:
    with pytest.raises(TargetSpecError, match="cannot open a 'mount' target"):
        ExecTarget(parse_spec("mount:/mnt", allow_reserved=True))


def test_unservable_entry_is_refused_with_its_reason(tmp_path: Path) -> None:
    entry = DaemonEntry(
        "frob",
        "a test entry",
        (),
        lambda scratch, options: Instance(()),
        unservable="why",
    )
    with pytest.raises(TargetSpecError, match="frob cannot be served over a socket: why"):
        entry.prepare(tmp_path, {})


def test_mount_options() -> None:
    assert mount_options({}) == []
    assert mount_options({"cache": "never", "xattr": True}, "source=/s") == [
        "-o",
        "source=/s,cache=never,xattr",
    ]


def open_registry_target(name: str, tmp_path: Path) -> ExecTarget:
    try:
        return ExecTarget(name, grace=5.0, scratch_root=tmp_path).open()
    except TargetNotInstalled as exc:
        require(False, f"{name} is not available here: {exc.message} ({exc.hint})")
        raise


@pytest.mark.parametrize("name", sorted(REGISTRY))
def test_registry_daemon_spawns_waits_and_exits_on_eof(name: str, tmp_path: Path) -> None:
    entry = REGISTRY[name]
    with open_registry_target(name, tmp_path) as target:
        assert target.daemon is not None and target.daemon.pid is not None
        pid = target.daemon.pid
        assert not target.exited_by_itself and not target.exited_cleanly
        # Alive and reading: nothing sent, nothing back (a dead one: TargetDied).
        with pytest.raises(TargetTimeout):
            target.channel.recv(timeout=0.3)
        if name.removesuffix("-asan") in ("hello_ll", "ref"):
            assert target.backing is None
        else:
            assert target.backing is not None and (target.backing / "dir").is_dir()
    assert target.exit_status == entry.eof_status, target.daemon.stderr_tail()
    assert target.alive_at_close and target.exited_by_itself and target.exited_cleanly
    assert not target.daemon.alive() and reaped(pid)
    assert list(tmp_path.iterdir()) == []


def test_transcript_bound() -> None:
    transcript = Transcript(maxlen=2)
    for data in (b"1", b"2", b"3"):
        transcript.append("to_target", data)
    assert [r.data for r in transcript] == [b"2", b"3"]
    assert (len(transcript), transcript.total, transcript.dropped) == (2, 3, 1)


def test_channel_on_a_bare_socketpair() -> None:
    ours, theirs = seqpacket_pair()
    with SeqpacketChannel(ours, name="peer") as channel, theirs:
        big = bytes(range(256)) * 4096 + b"x" * 4096  # 1 MiB + 4 KiB: one datagram
        channel.send(big)
        assert theirs.recv(len(big) + 1) == big
        theirs.send(big)
        assert channel.recv(timeout=1.0) == big
        with pytest.raises(TargetTimeout):
            channel.recv(timeout=0.05)
        theirs.close()
        with pytest.raises(TargetDied, match="target died: peer closed the channel"):
            channel.recv(timeout=1.0)
        with pytest.raises(TargetDied):
            channel.send(b"x")
    with pytest.raises(TargetError, match="closed"):
        channel.recv(timeout=0.1)


def test_a_pipeline_keeps_its_window_and_stops_sending_in_time() -> None:
    """A peer that answers one datagram each 10 ms: at most ``window`` are unanswered at once,
    and past ``send_for`` no more go out; what went out is answered."""
    ours, theirs = seqpacket_pair()
    seen: list[int] = []

    def answer() -> None:
        with contextlib.suppress(OSError):
            while data := theirs.recv(64):
                time.sleep(0.01)
                seen.append(len(seen))
                theirs.send(data)

    with SeqpacketChannel(ours, name="peer") as channel, theirs:
        peer = threading.Thread(target=answer, daemon=True)
        peer.start()
        started = time.monotonic()
        went, replies = channel.pipeline([b"%d" % i for i in range(1000)], 1000, 1.0, window=4, send_for=0.2)
        took = time.monotonic() - started
        assert 8 <= went < 40 and len(replies) == went and took < 0.2 + 5 * 0.01 + 0.3, (went, took)
        assert replies == [b"%d" % i for i in range(went)]
        assert len(seen) == went and channel.pipeline([b"a", b"b"], 2, 1.0) == (2, [b"a", b"b"])
        theirs.shutdown(socket.SHUT_RDWR)
        peer.join(1.0)


def test_channel_reports_truncated_datagram() -> None:
    ours, theirs = seqpacket_pair()
    with SeqpacketChannel(ours, bufsize=16) as channel, theirs:
        theirs.send(b"y" * 100)
        with pytest.raises(TargetError, match="larger than the 16-byte buffer"):
            channel.recv(timeout=1.0)


def py(code: str) -> list[str]:
    return [sys.executable, "-c", textwrap.dedent(code)]


def test_wait_ready_returns_once_check_holds(tmp_path: Path) -> None:
    flag = tmp_path / "ready"
    with Daemon(py(f"import time; time.sleep(0.2); open({str(flag)!r}, 'w'); time.sleep(60)")) as d:
        wait_ready(d, flag.exists, timeout=10.0)
        assert d.alive()
    assert d.signalled == signal.SIGTERM and not d.alive()


def test_wait_ready_fails_fast_when_the_process_exits() -> None:
    with Daemon(py("import sys; sys.stderr.write('boom\\n'); sys.exit(4)"), name="boom") as d:
        start = time.monotonic()
        with pytest.raises(TargetDied, match="boom exited with status 4 before it was ready"):
            wait_ready(d, lambda: False, timeout=30.0)
        assert time.monotonic() - start < 10.0
        assert "boom" in d.stderr_tail()


def test_wait_ready_times_out() -> None:
    with Daemon(py("import time; time.sleep(60)")) as d, pytest.raises(TargetTimeout):
        wait_ready(d, lambda: False, timeout=0.2)


def test_stop_escalates_to_sigkill() -> None:
    code = """
        import signal, time
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        print("ready", flush=True)
        time.sleep(60)
    """
    with Daemon(py(code)) as d:
        wait_ready(d, lambda: "ready" in d.stdout_tail(), timeout=10.0)
        assert d.stop(timeout=0.2) == -signal.SIGKILL
        assert d.signalled == signal.SIGKILL and d.exit_description() == "was killed by SIGKILL"


def test_build_skips_fresh_binaries_and_reads_gz_sources(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    require(shutil.which("gcc") and shutil.which("pkg-config"), "gcc/pkg-config missing")
    source = build.EXAMPLES_DIR / "hello_ll.c"
    require(source.exists(), f"{source} missing (libfuse3-dev)")
    examples = tmp_path / "examples"
    examples.mkdir()
    with open(source, "rb") as src, gzip.open(examples / "hello_ll.c.gz", "wb") as out:
        shutil.copyfileobj(src, out)
    monkeypatch.setattr(build, "BUILD_DIR", tmp_path / ".build")
    binary = build.build_example("hello_ll", examples=examples)
    assert binary == tmp_path / ".build" / "bin" / "hello_ll" and os.access(binary, os.X_OK)
    mtime = binary.stat().st_mtime_ns
    assert build.build_example("hello_ll", examples=examples).stat().st_mtime_ns == mtime


def test_build_without_toolchain_says_what_to_install(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    examples = tmp_path / "examples"
    examples.mkdir()
    (examples / "hello_ll.c").write_text("int main(void) { return 0; }\n")
    monkeypatch.setattr(build, "BUILD_DIR", tmp_path / ".build")
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(TargetNotInstalled) as info:
        build.build_example("hello_ll", examples=examples)
    assert "apt-get install" in info.value.hint and "libfuse3-dev" in info.value.hint


def test_require_skips_or_fails_under_ci(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CI", raising=False)
    require(True, "never shown")
    with pytest.raises(pytest.skip.Exception, match="no widget"):
        require(False, "no widget")
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="no widget"):
        require(False, "no widget")
