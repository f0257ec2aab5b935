"""Fixtures of the ACL rules: the posix area's (target mount, tmpfs twin, watchdog), re-exported,
and the two checks every ACL rule needs first.

- The target must do POSIX ACLs: the probe's ``acl`` feature (``targets/probe.py``: an ACL
  xattr round-trips, and a named-user entry that denies is enforced for that user). A
  target without it (EOPNOTSUPP, or ACLs stored but not enforced) makes every rule here
  "not applicable".
- The oracle must do them too: tmpfs with CONFIG_TMPFS_POSIX_ACL. Without it no rule can be
  judged; that is the machine's lack, a skip that CI turns into a failure.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

import pytest

from conformance.acl.xattr import ACCESS, acl, encode
from conformance.posix.conftest import features, mounted, reference_root, twin
from conformance.posix.oracle import Twin
from targets.skip import require

__all__ = ["acl_twin", "features", "mounted", "oracle_acls", "reference_root", "twin"]


@pytest.fixture(scope="session")
def oracle_acls(reference_root: Path) -> None:
    """tmpfs keeps and enforces an ACL (else the kernel lacks CONFIG_TMPFS_POSIX_ACL)."""
    probe = reference_root / f".acl-probe-{os.getpid()}"
    probe.write_bytes(b"")
    value = encode(acl("u::rw", "u:65534:r", "g::r", "m::r", "o::"))
    try:
        os.setxattr(probe, ACCESS, value)
        kept = os.getxattr(probe, ACCESS) == value
    except OSError:
        kept = False
    finally:
        with contextlib.suppress(OSError):
            probe.unlink()
    require(kept, "machine lacks POSIX ACLs on tmpfs (CONFIG_TMPFS_POSIX_ACL), the oracle of the ACL rules")


@pytest.fixture
def acl_twin(features: frozenset[str], oracle_acls: None, twin: Twin) -> Twin:
    """The twin, for a target that keeps and enforces POSIX ACLs; else the rule is not applicable."""
    if "acl" not in features:
        pytest.skip("not applicable: the target does not do POSIX ACLs (an ACL set on a scratch file "
                    "is refused, not kept, or not enforced for another user)")
    return twin
