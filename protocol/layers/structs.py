"""Fixed-size structs of ``linux/fuse.h`` (7.45), one class each, kernel field names.

Field comments give the minor version a field appeared in when it is newer
than the struct; ``fields_since`` records the same for the layout probe.
"""

from __future__ import annotations

from protocol import constants as c
from protocol.layers.base import (
    FlagsIntField,
    FuseStruct,
    array,
    i32,
    i64,
    may_end,
    nested,
    u16,
    u32,
    u64,
)

_INIT_LOW = {k: v for k, v in c.INIT_FLAG_NAMES.items() if k < 1 << 32}
_INIT_HIGH = {k >> 32: v for k, v in c.INIT_FLAG_NAMES.items() if k >= 1 << 32}


class FuseAttr(FuseStruct):
    c_name = "fuse_attr"
    fields_desc = [
        u64("ino"), u64("size"), u64("blocks"),
        u64("atime"), u64("mtime"), u64("ctime"),
        u32("atimensec"), u32("mtimensec"), u32("ctimensec"),
        u32("mode"), u32("nlink"), u32("uid"), u32("gid"), u32("rdev"),
        u32("blksize"),  # 7.9
        u32("flags"),  # FUSE_ATTR_*, 7.32 (padding before)
    ]


class FuseSxTime(FuseStruct):
    c_name, since = "fuse_sx_time", 39
    fields_desc = [i64("tv_sec"), u32("tv_nsec"), i32("__reserved")]


class FuseStatx(FuseStruct):
    c_name, since = "fuse_statx", 39
    fields_desc = [
        u32("mask"), u32("blksize"), u64("attributes"),
        u32("nlink"), u32("uid"), u32("gid"), u16("mode"), array("__spare0", u16(""), 1),
        u64("ino"), u64("size"), u64("blocks"), u64("attributes_mask"),
        nested("atime", FuseSxTime), nested("btime", FuseSxTime),
        nested("ctime", FuseSxTime), nested("mtime", FuseSxTime),
        u32("rdev_major"), u32("rdev_minor"), u32("dev_major"), u32("dev_minor"),
        array("__spare2", u64(""), 14),
    ]


class FuseKstatfs(FuseStruct):
    c_name = "fuse_kstatfs"
    fields_desc = [
        u64("blocks"), u64("bfree"), u64("bavail"), u64("files"), u64("ffree"),
        u32("bsize"), u32("namelen"), u32("frsize"), u32("padding"),
        array("spare", u32(""), 6),
    ]


class FuseFileLock(FuseStruct):
    c_name = "fuse_file_lock"
    fields_desc = [u64("start"), u64("end"), u32("type"), u32("pid")]


class FuseEntryOut(FuseStruct):
    c_name = "fuse_entry_out"
    fields_desc = [
        u64("nodeid"), u64("generation"), u64("entry_valid"), u64("attr_valid"),
        u32("entry_valid_nsec"), u32("attr_valid_nsec"), nested("attr", FuseAttr),
    ]


class FuseForgetIn(FuseStruct):
    c_name = "fuse_forget_in"
    fields_desc = [u64("nlookup")]


class FuseForgetOne(FuseStruct):
    c_name, since = "fuse_forget_one", 16
    fields_desc = [u64("nodeid"), u64("nlookup")]


class FuseBatchForgetIn(FuseStruct):
    c_name, since = "fuse_batch_forget_in", 16
    fields_desc = [u32("count"), u32("dummy")]


class FuseGetattrIn(FuseStruct):
    c_name, since = "fuse_getattr_in", 9
    fields_desc = [u32("getattr_flags"), u32("dummy"), u64("fh")]


class FuseAttrOut(FuseStruct):
    c_name = "fuse_attr_out"
    fields_desc = [u64("attr_valid"), u32("attr_valid_nsec"), u32("dummy"), nested("attr", FuseAttr)]


class FuseStatxIn(FuseStruct):
    c_name, since = "fuse_statx_in", 39
    fields_desc = [u32("getattr_flags"), u32("reserved"), u64("fh"), u32("sx_flags"), u32("sx_mask")]


class FuseStatxOut(FuseStruct):
    c_name, since = "fuse_statx_out", 39
    fields_desc = [
        u64("attr_valid"), u32("attr_valid_nsec"), u32("flags"), array("spare", u64(""), 2),
        nested("stat", FuseStatx),
    ]


class FuseMknodIn(FuseStruct):
    c_name = "fuse_mknod_in"
    fields_desc = [u32("mode"), may_end(u32("rdev")), u32("umask"), u32("padding")]  # umask: 7.12


class FuseMkdirIn(FuseStruct):
    c_name = "fuse_mkdir_in"
    fields_desc = [u32("mode"), u32("umask")]


class FuseRenameIn(FuseStruct):
    c_name = "fuse_rename_in"
    fields_desc = [u64("newdir")]


class FuseRename2In(FuseStruct):
    c_name, since = "fuse_rename2_in", 23
    fields_desc = [u64("newdir"), u32("flags"), u32("padding")]


class FuseLinkIn(FuseStruct):
    c_name = "fuse_link_in"
    fields_desc = [u64("oldnodeid")]


class FuseSetattrIn(FuseStruct):
    c_name = "fuse_setattr_in"
    fields_desc = [
        FlagsIntField("valid", 0, c.FATTR_NAMES), u32("padding"), u64("fh"), u64("size"),
        u64("lock_owner"), u64("atime"), u64("mtime"), u64("ctime"),
        u32("atimensec"), u32("mtimensec"), u32("ctimensec"), u32("mode"),
        u32("unused4"), u32("uid"), u32("gid"), u32("unused5"),
    ]


class FuseOpenIn(FuseStruct):
    c_name = "fuse_open_in"
    fields_desc = [u32("flags"), u32("open_flags")]


class FuseCreateIn(FuseStruct):
    c_name = "fuse_create_in"
    fields_desc = [u32("flags"), may_end(u32("mode")), u32("umask"), u32("open_flags")]  # 8 before 7.12


class FuseOpenOut(FuseStruct):
    c_name = "fuse_open_out"
    fields_since = {"backing_id": 40}
    fields_desc = [u64("fh"), FlagsIntField("open_flags", 0, c.FOPEN_NAMES), i32("backing_id")]


class FuseReleaseIn(FuseStruct):
    c_name = "fuse_release_in"
    fields_desc = [u64("fh"), u32("flags"), u32("release_flags"), u64("lock_owner")]


class FuseFlushIn(FuseStruct):
    c_name = "fuse_flush_in"
    fields_desc = [u64("fh"), u32("unused"), u32("padding"), u64("lock_owner")]


class FuseReadIn(FuseStruct):
    c_name = "fuse_read_in"
    fields_desc = [
        u64("fh"), u64("offset"), u32("size"), u32("read_flags"), u64("lock_owner"),
        u32("flags"), u32("padding"),
    ]


class FuseWriteIn(FuseStruct):
    c_name = "fuse_write_in"
    fields_desc = [
        u64("fh"), u64("offset"), u32("size"), may_end(u32("write_flags")),  # 24 bytes before 7.9
        u64("lock_owner"), u32("flags"), u32("padding"),
    ]


class FuseWriteOut(FuseStruct):
    c_name = "fuse_write_out"
    fields_desc = [u32("size"), u32("padding")]


class FuseStatfsOut(FuseStruct):
    c_name = "fuse_statfs_out"
    fields_desc = [nested("st", FuseKstatfs)]


class FuseFsyncIn(FuseStruct):
    c_name = "fuse_fsync_in"
    fields_desc = [u64("fh"), u32("fsync_flags"), u32("padding")]


class FuseSetxattrIn(FuseStruct):
    c_name = "fuse_setxattr_in"
    fields_desc = [u32("size"), may_end(u32("flags")), u32("setxattr_flags"), u32("padding")]  # 7.33


class FuseGetxattrIn(FuseStruct):
    c_name = "fuse_getxattr_in"
    fields_desc = [u32("size"), u32("padding")]


class FuseGetxattrOut(FuseStruct):
    c_name = "fuse_getxattr_out"
    fields_desc = [u32("size"), u32("padding")]


class FuseLkIn(FuseStruct):
    c_name = "fuse_lk_in"
    fields_desc = [u64("fh"), u64("owner"), nested("lk", FuseFileLock), u32("lk_flags"), u32("padding")]


class FuseLkOut(FuseStruct):
    c_name = "fuse_lk_out"
    fields_desc = [nested("lk", FuseFileLock)]


class FuseAccessIn(FuseStruct):
    c_name = "fuse_access_in"
    fields_desc = [u32("mask"), u32("padding")]


class FuseInitIn(FuseStruct):
    c_name = "fuse_init_in"
    fields_desc = [
        u32("major"), u32("minor"), u32("max_readahead"),
        may_end(FlagsIntField("flags", 0, _INIT_LOW)),  # 16 bytes before 7.36
        FlagsIntField("flags2", 0, _INIT_HIGH),  # 7.36
        array("unused", u32(""), 11),
    ]


class FuseInitOut(FuseStruct):
    c_name = "fuse_init_out"
    fields_since = {"max_stack_depth": 40, "request_timeout": 43}
    fields_desc = [
        u32("major"), may_end(u32("minor")),  # 8 bytes before 7.5
        u32("max_readahead"), FlagsIntField("flags", 0, _INIT_LOW),
        u16("max_background"), u16("congestion_threshold"),
        may_end(u32("max_write")),  # 24 bytes before 7.23
        u32("time_gran"),
        u16("max_pages"), u16("map_alignment"),
        FlagsIntField("flags2", 0, _INIT_HIGH),
        u32("max_stack_depth"),  # 7.40
        u16("request_timeout"),  # 7.43, seconds
        array("unused", u16(""), 11),
    ]


class CuseInitIn(FuseStruct):
    c_name = "cuse_init_in"
    fields_desc = [u32("major"), u32("minor"), u32("unused"), u32("flags")]


class CuseInitOut(FuseStruct):
    c_name = "cuse_init_out"
    fields_desc = [
        u32("major"), u32("minor"), u32("unused"), u32("flags"),
        u32("max_read"), u32("max_write"), u32("dev_major"), u32("dev_minor"),
        array("spare", u32(""), 10),
    ]


class FuseInterruptIn(FuseStruct):
    c_name = "fuse_interrupt_in"
    fields_desc = [u64("unique")]


class FuseBmapIn(FuseStruct):
    c_name = "fuse_bmap_in"
    fields_desc = [u64("block"), u32("blocksize"), u32("padding")]


class FuseBmapOut(FuseStruct):
    c_name = "fuse_bmap_out"
    fields_desc = [u64("block")]


class FuseIoctlIn(FuseStruct):
    c_name = "fuse_ioctl_in"
    fields_desc = [u64("fh"), u32("flags"), u32("cmd"), u64("arg"), u32("in_size"), u32("out_size")]


class FuseIoctlIovec(FuseStruct):
    c_name = "fuse_ioctl_iovec"
    fields_desc = [u64("base"), u64("len")]


class FuseIoctlOut(FuseStruct):
    c_name = "fuse_ioctl_out"
    fields_desc = [i32("result"), u32("flags"), u32("in_iovs"), u32("out_iovs")]


class FusePollIn(FuseStruct):
    c_name = "fuse_poll_in"
    fields_desc = [u64("fh"), u64("kh"), u32("flags"), u32("events")]


class FusePollOut(FuseStruct):
    c_name = "fuse_poll_out"
    fields_desc = [u32("revents"), u32("padding")]


class FuseFallocateIn(FuseStruct):
    c_name = "fuse_fallocate_in"
    fields_desc = [u64("fh"), u64("offset"), u64("length"), u32("mode"), u32("padding")]


class FuseLseekIn(FuseStruct):
    c_name = "fuse_lseek_in"
    fields_desc = [u64("fh"), u64("offset"), u32("whence"), u32("padding")]


class FuseLseekOut(FuseStruct):
    c_name = "fuse_lseek_out"
    fields_desc = [u64("offset")]


class FuseCopyFileRangeIn(FuseStruct):
    c_name = "fuse_copy_file_range_in"
    fields_desc = [
        u64("fh_in"), u64("off_in"), u64("nodeid_out"), u64("fh_out"), u64("off_out"),
        u64("len"), u64("flags"),
    ]


class FuseCopyFileRangeOut(FuseStruct):
    c_name, since = "fuse_copy_file_range_out", 45
    fields_desc = [u64("bytes_copied")]


class FuseSetupmappingIn(FuseStruct):
    c_name = "fuse_setupmapping_in"
    fields_desc = [u64("fh"), u64("foffset"), u64("len"), u64("flags"), u64("moffset")]


class FuseRemovemappingIn(FuseStruct):
    c_name = "fuse_removemapping_in"
    fields_desc = [u32("count")]


class FuseRemovemappingOne(FuseStruct):
    c_name = "fuse_removemapping_one"
    fields_desc = [u64("moffset"), u64("len")]


class FuseSyncfsIn(FuseStruct):
    c_name = "fuse_syncfs_in"
    fields_desc = [u64("padding")]


class FuseBackingMap(FuseStruct):
    """Argument of the FUSE_DEV_IOC_BACKING_OPEN ioctl (not a message; for completeness)."""

    c_name, since = "fuse_backing_map", 40
    fields_desc = [i32("fd"), u32("flags"), u64("padding")]
