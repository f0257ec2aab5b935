"""The reference server: an in-memory POSIX filesystem (``fs``) served over FUSE (``server``)."""
