"""Run the reference server: ``python -m targets.reference MOUNTPOINT [options]`` mounts it
on /dev/fuse (foreground; Ctrl-C, SIGTERM or umount end it); ``--fd N`` serves FUSE over an
inherited SEQPACKET socket instead (the suite's kernel-role transport); ``--vhost-user SOCKET``
is a virtio-fs device's back-end on a vhost-user socket; ``--cuse NAME`` is a CUSE
server (a FIFO device) on /dev/cuse; ``--record FILE``
records every message of either channel as pcap (targets.reference.record)."""

from __future__ import annotations

import argparse
import os
import signal
import socket
import stat
import sys
from pathlib import Path

from targets.reference.fs import Cred, Filesystem
from targets.reference.host import HostFilesystem
from targets.reference.record import Recorder
from targets.reference.server import CACHE_TIMEOUTS, Options, ReferenceServer

MAX_MESSAGE = (1 << 20) + 4096


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m targets.reference", description=__doc__)
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("mountpoint", nargs="?", type=Path, help="directory to mount on")
    where.add_argument("--fd", type=int, help="serve over this inherited SEQPACKET socket")
    where.add_argument("--cuse", metavar="DEVNAME",
                       help="be a CUSE server of a FIFO device named DEVNAME, on /dev/cuse")
    where.add_argument("--vhost-user", type=Path, metavar="SOCKET",
                       help="be a vhost-user virtio-fs back-end listening on SOCKET")
    parser.add_argument("--cuse-fd", type=int, metavar="N",
                        help="with --cuse: serve CUSE over this inherited SEQPACKET socket, not /dev/cuse")
    parser.add_argument("--connections", type=int, default=1, metavar="N",
                        help="with --vhost-user: front-ends to serve one after another (0: until "
                             "killed; default 1)")
    parser.add_argument("--cache", choices=sorted(CACHE_TIMEOUTS), default="auto")
    parser.add_argument("--writeback", action="store_true", help="negotiate FUSE_WRITEBACK_CACHE")
    parser.add_argument("--acl", action=argparse.BooleanOptionalAction, default=True,
                        help="FUSE_POSIX_ACL with default_permissions (default: on; --no-acl: off)")
    parser.add_argument("--mutant", help="switch on one named injected fault")
    parser.add_argument("--source", type=Path, metavar="DIR",
                        help="serve this host directory (passed through) instead of memory")
    parser.add_argument("--notify", nargs="?", const="inval", choices=("inval", "store"),
                        help="mounted with --source: notify the kernel of changes on the host "
                             "(inval: INVAL_INODE/INVAL_ENTRY/DELETE; store: data by NOTIFY_STORE); "
                             "otherwise nothing changes behind the server's back: ignored")
    parser.add_argument("--audit", type=Path, metavar="FILE",
                        help="judge every reply with the message layer's validators; findings go to FILE")
    parser.add_argument("--record", type=Path, metavar="FILE",
                        help="record every request read and every reply written, as pcap, in FILE")
    return parser.parse_args(argv)


def seed(fs: Filesystem) -> None:
    """What targets.daemons.populate makes for the suite's other targets: a file, a
    directory with a file, a symlink."""
    root = Cred(uid=0, gid=0)
    _inode, fh = fs.create(1, b"hello.txt", stat.S_IFREG | 0o644, os.O_WRONLY, root)
    fs.write(fh, 0, b"hello, fusecheck\n")
    fs.release(fh)
    directory = fs.mkdir(1, b"dir", 0o755, root)
    _inode, fh = fs.create(directory.ino, b"data.bin", stat.S_IFREG | 0o644, os.O_WRONLY, root)
    fs.write(fh, 0, bytes(range(256)) * 16)
    fs.release(fh)
    fs.symlink(1, b"link", b"hello.txt", root)


def serve_socket(server: ReferenceServer, fd: int, record: Path | None = None) -> int:
    sock = socket.socket(fileno=fd)

    def read() -> bytes:
        return sock.recv(MAX_MESSAGE)

    def write(data: bytes) -> None:
        sock.send(data)  # one datagram per reply; send is safe across threads

    recorder = Recorder(record) if record is not None else None
    try:
        server.serve(*(recorder.wrap(read, write) if recorder is not None else (read, write)))
    finally:
        if recorder is not None:
            recorder.close()
    return 0


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    if args.cuse is not None:
        from targets.reference.cuse import serve_cuse

        signal.signal(signal.SIGTERM, lambda *_: os._exit(0))
        return serve_cuse(args.cuse, mutant=args.mutant, fd=args.cuse_fd)
    if args.source is not None and not args.source.is_dir():
        print(f"--source {args.source}: not a directory", file=sys.stderr)
        return 2
    if args.source is not None and args.mountpoint is not None and (
            args.mountpoint.resolve().is_relative_to(args.source.resolve())):
        print(f"--source {args.source}: holds the mountpoint (the server would serve its own mount)",
              file=sys.stderr)
        return 2
    from targets.reference.device_mutants import DEVICE_MUTANTS

    device_mutant = DEVICE_MUTANTS.get(args.mutant or "")
    if device_mutant is not None and args.vhost_user is None:
        print(f"--mutant {args.mutant}: a fault of the virtio-fs device, for --vhost-user only",
              file=sys.stderr)
        return 2
    server_mutant = None if device_mutant is not None else args.mutant
    options = Options(cache=args.cache, writeback=args.writeback, acl=args.acl, mutant=server_mutant,
                      audit=str(args.audit) if args.audit else None,
                      source=str(args.source) if args.source else None, notify=args.notify)
    fs: Filesystem | HostFilesystem
    if args.source is not None:  # served as it is: no seed
        fs = HostFilesystem(args.source, acl=options.acl, writeback=options.writeback)
    else:
        # the model checks ACLs only when FUSE_POSIX_ACL is on, as the kernel then does
        fs = Filesystem(acl=options.acl, writeback=options.writeback)
        seed(fs)
    server = ReferenceServer(fs, options)
    signal.signal(signal.SIGTERM, lambda *_: os._exit(0))
    if args.fd is not None:
        return serve_socket(server, args.fd, args.record)
    if args.vhost_user is not None:
        from targets.reference.vhost import serve_vhost_user

        return serve_vhost_user(server, args.vhost_user, device_mutant, args.connections)
    from targets.reference.mount import serve_mounted

    return serve_mounted(server, args.mountpoint, args.record)


if __name__ == "__main__":
    sys.exit(main())
