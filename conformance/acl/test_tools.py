"""getfacl and setfacl (Debian's acl package) agree on the target and on tmpfs: what setfacl
changes, and what getfacl then prints (the effective rights under the mask included)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from conformance.acl.access import BOB, CAROL, TEAM
from conformance.acl.setup import make
from conformance.posix.oracle import Twin
from conformance.rules import rule
from targets.skip import require

AREA = "acl"
SOURCE = "setfacl(1), getfacl(1) (Debian's acl package); Linux acl(5)"
#: each step: setfacl's arguments, on f (a file) or d (a directory)
STEPS = (
    ("-m", f"u:{BOB}:rw,g:{TEAM}:r", "f"),
    ("-m", "m::r", "f"),
    ("-x", f"u:{BOB}", "f"),
    ("-d", "-m", f"u:{CAROL}:rx,g::r", "d"),
    ("-m", f"u:{CAROL}:rwx", "d"),
    ("-k", "d"),
    ("-b", "f"),
    ("-m", "u:no-such-user-xyz:r", "f"),
)


def _run(*argv: str) -> tuple[int, str]:
    done = subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False)
    return done.returncode, done.stdout


@rule("POSIX-ACL-016", "setfacl changes the target's ACLs as it changes tmpfs's (the same exit "
      "status, the same mode after it) and getfacl then prints the same ACLs, access and "
      "default, with the same effective rights", source=SOURCE, area=AREA, feature="tools")
def test_getfacl_setfacl(acl_twin: Twin) -> None:
    require(shutil.which("setfacl") and shutil.which("getfacl"),
            "machine lacks setfacl/getfacl (Debian package acl; ./fusecheck setup installs it)")
    twin = acl_twin

    def setup(root: Path) -> None:
        make(root, "f")
        make(root, "d", directory=True, mode=0o755)

    twin.same(setup, "setup: a file f and a directory d")
    for *args, relpath in STEPS:
        step = " ".join(["setfacl", *args, relpath])
        twin.same(lambda r, a=args, p=relpath: _run("setfacl", *a, str(r / p))[0],  # type: ignore[misc]
                  f"exit status of {step}")
        for shown in ("f", "d"):
            twin.same_stat(shown, f"after {step}")
            twin.same(lambda r, p=shown: _run("getfacl", "--omit-header", "--numeric", str(r / p)),  # type: ignore[misc]
                      f"getfacl {shown} after {step}")
