"""Numbers of the FUSE wire protocol (kernel uapi ``linux/fuse.h``, up to 7.45).

Names are the kernel's macro and enum names.  Each group also has a name map
(``OPCODE_NAMES``, ``INIT_FLAG_NAMES``, ...) built from the constants below, so
a number is never written twice.
"""

from __future__ import annotations


def _names_since(mark: set[str]) -> dict[int, str]:
    """Value -> name of the constants defined after ``mark`` was taken."""
    g = globals()
    return {g[name]: name for name in g.keys() - mark - {"_mark"} if name.isupper()}


FUSE_KERNEL_VERSION = 7
FUSE_KERNEL_MINOR_VERSION = 45
FUSE_ROOT_ID = 1

_mark = set(globals())
# enum fuse_opcode
FUSE_LOOKUP = 1
FUSE_FORGET = 2  # no reply
FUSE_GETATTR = 3
FUSE_SETATTR = 4
FUSE_READLINK = 5
FUSE_SYMLINK = 6
FUSE_MKNOD = 8
FUSE_MKDIR = 9
FUSE_UNLINK = 10
FUSE_RMDIR = 11
FUSE_RENAME = 12
FUSE_LINK = 13
FUSE_OPEN = 14
FUSE_READ = 15
FUSE_WRITE = 16
FUSE_STATFS = 17
FUSE_RELEASE = 18
FUSE_FSYNC = 20
FUSE_SETXATTR = 21
FUSE_GETXATTR = 22
FUSE_LISTXATTR = 23
FUSE_REMOVEXATTR = 24
FUSE_FLUSH = 25
FUSE_INIT = 26
FUSE_OPENDIR = 27
FUSE_READDIR = 28
FUSE_RELEASEDIR = 29
FUSE_FSYNCDIR = 30
FUSE_GETLK = 31
FUSE_SETLK = 32
FUSE_SETLKW = 33
FUSE_ACCESS = 34
FUSE_CREATE = 35
FUSE_INTERRUPT = 36
FUSE_BMAP = 37
FUSE_DESTROY = 38
FUSE_IOCTL = 39
FUSE_POLL = 40
FUSE_NOTIFY_REPLY = 41
FUSE_BATCH_FORGET = 42
FUSE_FALLOCATE = 43
FUSE_READDIRPLUS = 44
FUSE_RENAME2 = 45
FUSE_LSEEK = 46
FUSE_COPY_FILE_RANGE = 47
FUSE_SETUPMAPPING = 48
FUSE_REMOVEMAPPING = 49
FUSE_SYNCFS = 50
FUSE_TMPFILE = 51
FUSE_STATX = 52
FUSE_COPY_FILE_RANGE_64 = 53
CUSE_INIT = 4096
CUSE_INIT_BSWAP_RESERVED = 1048576
FUSE_INIT_BSWAP_RESERVED = 436207616
OPCODE_NAMES: dict[int, str] = _names_since(_mark)

_mark = set(globals())
# enum fuse_notify_code (fuse_out_header.error of a message with unique 0)
FUSE_NOTIFY_POLL = 1
FUSE_NOTIFY_INVAL_INODE = 2
FUSE_NOTIFY_INVAL_ENTRY = 3
FUSE_NOTIFY_STORE = 4
FUSE_NOTIFY_RETRIEVE = 5
FUSE_NOTIFY_DELETE = 6
FUSE_NOTIFY_RESEND = 7
FUSE_NOTIFY_INC_EPOCH = 8
FUSE_NOTIFY_PRUNE = 9
NOTIFY_CODE_NAMES: dict[int, str] = _names_since(_mark)

_mark = set(globals())
# INIT flags: bits 0..31 travel in fuse_init_in/out.flags, 32..63 in flags2
FUSE_ASYNC_READ = 1 << 0
FUSE_POSIX_LOCKS = 1 << 1
FUSE_FILE_OPS = 1 << 2
FUSE_ATOMIC_O_TRUNC = 1 << 3
FUSE_EXPORT_SUPPORT = 1 << 4
FUSE_BIG_WRITES = 1 << 5
FUSE_DONT_MASK = 1 << 6
FUSE_SPLICE_WRITE = 1 << 7
FUSE_SPLICE_MOVE = 1 << 8
FUSE_SPLICE_READ = 1 << 9
FUSE_FLOCK_LOCKS = 1 << 10
FUSE_HAS_IOCTL_DIR = 1 << 11
FUSE_AUTO_INVAL_DATA = 1 << 12
FUSE_DO_READDIRPLUS = 1 << 13
FUSE_READDIRPLUS_AUTO = 1 << 14
FUSE_ASYNC_DIO = 1 << 15
FUSE_WRITEBACK_CACHE = 1 << 16
FUSE_NO_OPEN_SUPPORT = 1 << 17
FUSE_PARALLEL_DIROPS = 1 << 18
FUSE_HANDLE_KILLPRIV = 1 << 19
FUSE_POSIX_ACL = 1 << 20
FUSE_ABORT_ERROR = 1 << 21
FUSE_MAX_PAGES = 1 << 22
FUSE_CACHE_SYMLINKS = 1 << 23
FUSE_NO_OPENDIR_SUPPORT = 1 << 24
FUSE_EXPLICIT_INVAL_DATA = 1 << 25
FUSE_MAP_ALIGNMENT = 1 << 26
FUSE_SUBMOUNTS = 1 << 27
FUSE_HANDLE_KILLPRIV_V2 = 1 << 28
FUSE_SETXATTR_EXT = 1 << 29
FUSE_INIT_EXT = 1 << 30
FUSE_INIT_RESERVED = 1 << 31
FUSE_SECURITY_CTX = 1 << 32
FUSE_HAS_INODE_DAX = 1 << 33
FUSE_CREATE_SUPP_GROUP = 1 << 34
FUSE_HAS_EXPIRE_ONLY = 1 << 35
FUSE_DIRECT_IO_ALLOW_MMAP = 1 << 36
FUSE_PASSTHROUGH = 1 << 37
FUSE_NO_EXPORT_SUPPORT = 1 << 38
FUSE_HAS_RESEND = 1 << 39
FUSE_ALLOW_IDMAP = 1 << 40
FUSE_OVER_IO_URING = 1 << 41
FUSE_REQUEST_TIMEOUT = 1 << 42
INIT_FLAG_NAMES: dict[int, str] = _names_since(_mark)

# CUSE INIT flags
CUSE_UNRESTRICTED_IOCTL = 1 << 0
CUSE_INIT_INFO_MAX = 4096

_mark = set(globals())
# fuse_setattr_in.valid
FATTR_MODE = 1 << 0
FATTR_UID = 1 << 1
FATTR_GID = 1 << 2
FATTR_SIZE = 1 << 3
FATTR_ATIME = 1 << 4
FATTR_MTIME = 1 << 5
FATTR_FH = 1 << 6
FATTR_ATIME_NOW = 1 << 7
FATTR_MTIME_NOW = 1 << 8
FATTR_LOCKOWNER = 1 << 9
FATTR_CTIME = 1 << 10
FATTR_KILL_SUIDGID = 1 << 11
FATTR_NAMES: dict[int, str] = _names_since(_mark)

_mark = set(globals())
# fuse_open_out.open_flags
FOPEN_DIRECT_IO = 1 << 0
FOPEN_KEEP_CACHE = 1 << 1
FOPEN_NONSEEKABLE = 1 << 2
FOPEN_CACHE_DIR = 1 << 3
FOPEN_STREAM = 1 << 4
FOPEN_NOFLUSH = 1 << 5
FOPEN_PARALLEL_DIRECT_WRITES = 1 << 6
FOPEN_PASSTHROUGH = 1 << 7
FOPEN_NAMES: dict[int, str] = _names_since(_mark)

# fuse_attr.flags
FUSE_ATTR_SUBMOUNT = 1 << 0
FUSE_ATTR_DAX = 1 << 1

# fuse_open_in.open_flags / fuse_create_in.open_flags
FUSE_OPEN_KILL_SUIDGID = 1 << 0
# fuse_release_in.release_flags
FUSE_RELEASE_FLUSH = 1 << 0
FUSE_RELEASE_FLOCK_UNLOCK = 1 << 1
# fuse_getattr_in.getattr_flags
FUSE_GETATTR_FH = 1 << 0
# fuse_lk_in.lk_flags
FUSE_LK_FLOCK = 1 << 0
# fuse_write_in.write_flags
FUSE_WRITE_CACHE = 1 << 0
FUSE_WRITE_LOCKOWNER = 1 << 1
FUSE_WRITE_KILL_SUIDGID = 1 << 2
FUSE_WRITE_KILL_PRIV = FUSE_WRITE_KILL_SUIDGID
# fuse_read_in.read_flags
FUSE_READ_LOCKOWNER = 1 << 1
# fuse_ioctl_in.flags / fuse_ioctl_out.flags
FUSE_IOCTL_COMPAT = 1 << 0
FUSE_IOCTL_UNRESTRICTED = 1 << 1
FUSE_IOCTL_RETRY = 1 << 2
FUSE_IOCTL_32BIT = 1 << 3
FUSE_IOCTL_DIR = 1 << 4
FUSE_IOCTL_COMPAT_X32 = 1 << 5
FUSE_IOCTL_MAX_IOV = 256
# fuse_poll_in.flags
FUSE_POLL_SCHEDULE_NOTIFY = 1 << 0
# fuse_fsync_in.fsync_flags
FUSE_FSYNC_FDATASYNC = 1 << 0
# fuse_notify_inval_entry_out.flags
FUSE_EXPIRE_ONLY = 1 << 0
# fuse_setxattr_in.setxattr_flags
FUSE_SETXATTR_ACL_KILL_SGID = 1 << 0
# fuse_setupmapping_in.flags
FUSE_SETUPMAPPING_FLAG_WRITE = 1 << 0
FUSE_SETUPMAPPING_FLAG_READ = 1 << 1

# enum fuse_ext_type (fuse_ext_header.type)
FUSE_MAX_NR_SECCTX = 31
FUSE_EXT_GROUPS = 32

# Sizes the kernel uses for older minors, and fixed offsets
FUSE_COMPAT_ENTRY_OUT_SIZE = 120
FUSE_COMPAT_ATTR_OUT_SIZE = 96
FUSE_COMPAT_MKNOD_IN_SIZE = 8
FUSE_COMPAT_WRITE_IN_SIZE = 24
FUSE_COMPAT_STATFS_SIZE = 48
FUSE_COMPAT_SETXATTR_IN_SIZE = 8
FUSE_COMPAT_INIT_OUT_SIZE = 8
FUSE_COMPAT_22_INIT_OUT_SIZE = 24
FUSE_MIN_READ_BUFFER = 8192
FUSE_NAME_OFFSET = 24
FUSE_NAME_OFFSET_DIRENTPLUS = 152

# A resent request's unique has this bit set (7.40); an unmapped id under idmap (7.41)
FUSE_UNIQUE_RESEND = 1 << 63
FUSE_INVALID_UIDGID = 0xFFFFFFFF

# The kernel's request ids step by 2; bit 0 marks the INTERRUPT of a request.
FUSE_REQ_ID_STEP = 2
FUSE_INT_REQ_BIT = 1

