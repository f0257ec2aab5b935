"""libfuse's examples built with ASan and UBSan (``NAME-asan`` targets), and
``fuzz.sanitizer.report``, which finds a sanitizer's report in a daemon's stderr."""

from __future__ import annotations

import re
import signal
import subprocess
from pathlib import Path

import pytest

from fuzz.sanitizer import report
from targets import build
from targets.connection import KernelConnection
from targets.daemons import REGISTRY
from targets.errors import TargetNotInstalled
from targets.skip import require
from targets.wire import wire_target

HEAP_OVERFLOW = """\
=================================================================
==4242==ERROR: AddressSanitizer: heap-buffer-overflow on address 0x602000000031 at pc 0x55e0c1 bp 0x7ffd
READ of size 1 at 0x602000000031 thread T0
    #0 0x55e0c1a2 in lo_lookup /tmp/src/passthrough_ll.c:312
    #1 0x7f11aa30 in do_lookup ../lib/fuse_lowlevel.c:1210
    #2 0x7f11ab44 in fuse_session_process_buf_int ../lib/fuse_lowlevel.c:2769
    #3 0x7f11ac01 in fuse_session_loop ../lib/fuse_loop.c:41
    #4 0x55e0c2f0 in main /tmp/src/passthrough_ll.c:1301
    #5 0x7f11b249 in __libc_start_call_main ../sysdeps/nptl/libc_start_call_main.h:58

0x602000000031 is located 0 bytes to the right of 1-byte region [0x602000000030,0x602000000031)
allocated by thread T0 here:
    #0 0x7f11c9cf in __interceptor_malloc ../../../../src/libsanitizer/asan/asan_malloc_linux.cpp:69

SUMMARY: AddressSanitizer: heap-buffer-overflow /tmp/src/passthrough_ll.c:312 in lo_lookup
Shadow bytes around the buggy address:
=>0x0c047fff8000: fa fa fd fa fa fa[01]fa fa fa fa fa fa fa fa fa
==4242==ABORTING
"""

SEGV = """\
fuse: warning: library too old, some operations may not work
AddressSanitizer:DEADLYSIGNAL
=================================================================
==77==ERROR: AddressSanitizer: SEGV on unknown address 0x000000000000 (pc 0x5611 bp 0x7ffe sp 0x7ffd T0)
==77==The signal is caused by a READ memory access.
==77==Hint: address points to the zero page.
    #0 0x561100aa in hello_ll_read /tmp/src/hello_ll.c:151
    #1 0x7f0000bb in fuse_session_loop ../lib/fuse_loop.c:41

AddressSanitizer can not provide additional info.
SUMMARY: AddressSanitizer: SEGV /tmp/src/hello_ll.c:151 in hello_ll_read
==77==ABORTING
"""

UBSAN = """\
passthrough_ll.c:807:17: runtime error: signed integer overflow: 2147483647 + 1 cannot be represented
    #0 0x55d7f0 in lo_do_readdir /tmp/src/passthrough_ll.c:807
    #1 0x7f3a10 in fuse_session_loop ../lib/fuse_loop.c:41

"""

HEAP_OVERFLOW_C = """\
#include <stdlib.h>
#include <string.h>
int main(int argc, char **argv) {
    char *buffer = malloc(8);
    memset(buffer, 'x', 8 + argc); /* one byte past the end, on purpose */
    return buffer[0];
}
"""

SIGNED_OVERFLOW_C = """\
#include <limits.h>
int main(int argc, char **argv) {
    int n = INT_MAX;
    n += argc; /* signed overflow, on purpose */
    return n > 0;
}
"""


def test_report_of_a_heap_overflow_keeps_headline_frames_and_summary() -> None:
    assert report(HEAP_OVERFLOW) == "\n".join([
        "==4242==ERROR: AddressSanitizer: heap-buffer-overflow on address 0x602000000031 "
        "at pc 0x55e0c1 bp 0x7ffd",
        "    #0 0x55e0c1a2 in lo_lookup /tmp/src/passthrough_ll.c:312",
        "    #1 0x7f11aa30 in do_lookup ../lib/fuse_lowlevel.c:1210",
        "    #2 0x7f11ab44 in fuse_session_process_buf_int ../lib/fuse_lowlevel.c:2769",
        "    #3 0x7f11ac01 in fuse_session_loop ../lib/fuse_loop.c:41",
        "SUMMARY: AddressSanitizer: heap-buffer-overflow /tmp/src/passthrough_ll.c:312 in lo_lookup",
    ])


def test_report_of_a_segv_skips_the_hints_and_stops_at_the_stack_end() -> None:
    found = report(SEGV, frames=10)
    assert found is not None
    lines = found.splitlines()
    assert lines[0].startswith("==77==ERROR: AddressSanitizer: SEGV on unknown address")
    assert [line.split(" in ")[1] for line in lines[1:3]] == [
        "hello_ll_read /tmp/src/hello_ll.c:151", "fuse_session_loop ../lib/fuse_loop.c:41"]
    assert lines[3:] == ["SUMMARY: AddressSanitizer: SEGV /tmp/src/hello_ll.c:151 in hello_ll_read"]


def test_report_of_ubsan_has_no_summary_line() -> None:
    found = report("fuse: some log line\n" + UBSAN)
    assert found is not None and found.splitlines()[0].startswith("passthrough_ll.c:807:17: runtime error:")
    assert found.splitlines()[1:] == UBSAN.splitlines()[1:3]


def test_report_from_a_cut_tail_or_coloured_output() -> None:
    tail = HEAP_OVERFLOW[HEAP_OVERFLOW.index("allocated by"):]  # the headline fell off the tail
    assert report(tail) == HEAP_OVERFLOW.splitlines()[14]  # the SUMMARY line
    coloured = HEAP_OVERFLOW.replace("==4242==ERROR", "\x1b[1m\x1b[31m==4242==ERROR").replace(
        "    #0", "\x1b[1m\x1b[0m    #0")
    assert report(coloured) == report(HEAP_OVERFLOW)


@pytest.mark.parametrize("stderr", ["", "fuse: short read on fuse device\n",
                                    "error: runtime was long\n    #0 0x1 in main x.c:1\n"])
def test_no_report_without_a_sanitizer(stderr: str) -> None:
    assert report(stderr) is None


@pytest.fixture(scope="module")
def sanitizers(tmp_path_factory: pytest.TempPathFactory) -> None:
    """gcc links -fsanitize=address,undefined (else skip; under CI=true, fail)."""
    where = tmp_path_factory.mktemp("probe")
    (where / "probe.c").write_text("int main(void) { return 0; }\n")
    try:
        result = subprocess.run(["gcc", *build.SANITIZER_FLAGS, "probe.c", "-o", "probe"], cwd=where,
                                capture_output=True, text=True, check=False)
    except FileNotFoundError:
        require(False, "gcc is not installed (apt-get install gcc)")
        return
    last = (result.stderr.strip().splitlines() or [""])[-1]
    require(result.returncode == 0, f"gcc cannot link -fsanitize=address,undefined ({last}); "
            "apt-get install libasan8 libubsan1")


@pytest.mark.parametrize("name", build.EXAMPLES)
def test_sanitized_build_exists(sanitizers: None, name: str) -> None:
    try:
        binary = build.build_example(name, sanitize=True)
    except TargetNotInstalled as exc:
        require(False, f"cannot build {name} with sanitizers: {exc.message} ({exc.hint})")
        return
    assert binary == build.BUILD_DIR / "asan" / "bin" / name
    image = binary.read_bytes()
    assert b"libasan.so" in image and b"__asan_default_options" in image
    assert build.build_example(name, sanitize=True).stat().st_mtime == binary.stat().st_mtime  # up to date


def test_asan_targets_are_registered_beside_their_plain_ones() -> None:
    for name in ("hello_ll", "passthrough_ll"):
        entry = REGISTRY[f"{name}-asan"]
        assert entry.variant_of == name and entry.eof_status == REGISTRY[name].eof_status


@pytest.mark.parametrize("name", ["passthrough_ll-asan", "hello_ll-asan"])
def test_asan_daemon_answers_init_and_reports_nothing(sanitizers: None, name: str, tmp_path: Path) -> None:
    try:
        target = wire_target(name, grace=5.0, scratch_root=tmp_path).open()
    except TargetNotInstalled as exc:
        require(False, f"{name} is not available here: {exc.message} ({exc.hint})")
        return
    with target:
        assert target.daemon is not None
        assert Path(target.daemon.argv[0]).parent == build.bin_dir(sanitize=True)
        reply = KernelConnection(target.channel, timeout=10.0).init()
        assert reply.ok, reply.error
    assert target.exited_cleanly, target.daemon.stderr_tail()
    assert report(target.daemon.stderr_tail(64 * 1024)) is None


@pytest.mark.parametrize(("source", "expected", "line"), [
    (HEAP_OVERFLOW_C, "SUMMARY: AddressSanitizer: heap-buffer-overflow", 5),
    (SIGNED_OVERFLOW_C, "runtime error: signed integer overflow", 4),
])
def test_a_crash_built_like_the_targets_aborts_with_a_report(sanitizers: None, tmp_path: Path, source: str,
                                                            expected: str, line: int) -> None:
    (tmp_path / "crash.c").write_text(source)
    defaults = build.sanitizer_options_source()
    subprocess.run(["gcc", *build.SANITIZER_FLAGS, "crash.c", str(defaults), "-o", "crash"],
                   cwd=tmp_path, check=True, capture_output=True)
    env = {"PATH": "/usr/bin:/bin"}  # no ASAN_OPTIONS: the compiled-in defaults alone
    result = subprocess.run(["./crash"], cwd=tmp_path, env=env, capture_output=True, text=True,
                            timeout=60, check=False)
    assert result.returncode == -signal.SIGABRT, result.stderr
    found = report(result.stderr)
    assert found is not None and expected in found, result.stderr
    assert re.search(rf"#\d+ 0x[0-9a-f]+ in main \S*/crash\.c:{line}$", found, re.M), found  # symbolized
