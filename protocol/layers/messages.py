"""Which layers make up each request and each reply, by opcode, and the scapy bindings.

``REQUEST_LAYERS[opcode]`` lists the body parts after ``fuse_in_header`` in
order; ``REPLY_LAYERS[opcode]`` the parts after ``fuse_out_header`` (empty: a
reply has no body; ``Raw``: bytes).  Opcodes in ``NO_REPLY`` get no reply.
"""

from __future__ import annotations

import itertools

from scapy.packet import Packet, Raw, bind_bottom_up, bind_layers, bind_top_down

from protocol import constants as c
from protocol.layers.header import FuseInHeader
from protocol.layers.notify import (
    FuseNodeidList,
    FuseNotifyDeleteOut,
    FuseNotifyInvalEntryOut,
    FuseNotifyInvalInodeOut,
    FuseNotifyPollWakeupOut,
    FuseNotifyPruneOut,
    FuseNotifyRetrieveIn,
    FuseNotifyRetrieveOut,
    FuseNotifyStoreOut,
)
from protocol.layers.structs import (
    CuseInitIn,
    CuseInitOut,
    FuseAccessIn,
    FuseAttrOut,
    FuseBatchForgetIn,
    FuseBmapIn,
    FuseBmapOut,
    FuseCopyFileRangeIn,
    FuseCopyFileRangeOut,
    FuseCreateIn,
    FuseEntryOut,
    FuseFallocateIn,
    FuseFlushIn,
    FuseForgetIn,
    FuseForgetOne,
    FuseFsyncIn,
    FuseGetattrIn,
    FuseGetxattrIn,
    FuseGetxattrOut,
    FuseInitIn,
    FuseInitOut,
    FuseInterruptIn,
    FuseIoctlIn,
    FuseIoctlIovec,
    FuseIoctlOut,
    FuseLinkIn,
    FuseLkIn,
    FuseLkOut,
    FuseLseekIn,
    FuseLseekOut,
    FuseMkdirIn,
    FuseMknodIn,
    FuseOpenIn,
    FuseOpenOut,
    FusePollIn,
    FusePollOut,
    FuseReadIn,
    FuseReleaseIn,
    FuseRemovemappingIn,
    FuseRemovemappingOne,
    FuseRename2In,
    FuseRenameIn,
    FuseSetattrIn,
    FuseSetupmappingIn,
    FuseSetxattrIn,
    FuseStatfsOut,
    FuseStatxIn,
    FuseStatxOut,
    FuseSyncfsIn,
    FuseWriteIn,
    FuseWriteOut,
)
from protocol.layers.variable import FuseDirentList, FuseDirentplusList, FuseName, FuseXattrNames

Layers = tuple[type[Packet], ...]

REQUEST_LAYERS: dict[int, Layers] = {
    c.FUSE_LOOKUP: (FuseName,),
    c.FUSE_FORGET: (FuseForgetIn,),
    c.FUSE_GETATTR: (FuseGetattrIn,),
    c.FUSE_SETATTR: (FuseSetattrIn,),
    c.FUSE_READLINK: (),
    c.FUSE_SYMLINK: (FuseName, FuseName),  # new entry's name, then the link target
    c.FUSE_MKNOD: (FuseMknodIn, FuseName),
    c.FUSE_MKDIR: (FuseMkdirIn, FuseName),
    c.FUSE_UNLINK: (FuseName,),
    c.FUSE_RMDIR: (FuseName,),
    c.FUSE_RENAME: (FuseRenameIn, FuseName, FuseName),
    c.FUSE_LINK: (FuseLinkIn, FuseName),
    c.FUSE_OPEN: (FuseOpenIn,),
    c.FUSE_READ: (FuseReadIn,),
    c.FUSE_WRITE: (FuseWriteIn, Raw),
    c.FUSE_STATFS: (),
    c.FUSE_RELEASE: (FuseReleaseIn,),
    c.FUSE_FSYNC: (FuseFsyncIn,),
    c.FUSE_SETXATTR: (FuseSetxattrIn, FuseName, Raw),
    c.FUSE_GETXATTR: (FuseGetxattrIn, FuseName),
    c.FUSE_LISTXATTR: (FuseGetxattrIn,),
    c.FUSE_REMOVEXATTR: (FuseName,),
    c.FUSE_FLUSH: (FuseFlushIn,),
    c.FUSE_INIT: (FuseInitIn,),
    c.FUSE_OPENDIR: (FuseOpenIn,),
    c.FUSE_READDIR: (FuseReadIn,),
    c.FUSE_RELEASEDIR: (FuseReleaseIn,),
    c.FUSE_FSYNCDIR: (FuseFsyncIn,),
    c.FUSE_GETLK: (FuseLkIn,),
    c.FUSE_SETLK: (FuseLkIn,),
    c.FUSE_SETLKW: (FuseLkIn,),
    c.FUSE_ACCESS: (FuseAccessIn,),
    c.FUSE_CREATE: (FuseCreateIn, FuseName),
    c.FUSE_INTERRUPT: (FuseInterruptIn,),
    c.FUSE_BMAP: (FuseBmapIn,),
    c.FUSE_DESTROY: (),
    c.FUSE_IOCTL: (FuseIoctlIn, Raw),
    c.FUSE_POLL: (FusePollIn,),
    c.FUSE_NOTIFY_REPLY: (FuseNotifyRetrieveIn, Raw),
    c.FUSE_BATCH_FORGET: (FuseBatchForgetIn, FuseForgetOne),  # count x fuse_forget_one
    c.FUSE_FALLOCATE: (FuseFallocateIn,),
    c.FUSE_READDIRPLUS: (FuseReadIn,),
    c.FUSE_RENAME2: (FuseRename2In, FuseName, FuseName),
    c.FUSE_LSEEK: (FuseLseekIn,),
    c.FUSE_COPY_FILE_RANGE: (FuseCopyFileRangeIn,),
    c.FUSE_SETUPMAPPING: (FuseSetupmappingIn,),
    c.FUSE_REMOVEMAPPING: (FuseRemovemappingIn, FuseRemovemappingOne),  # count x one
    c.FUSE_SYNCFS: (FuseSyncfsIn,),
    c.FUSE_TMPFILE: (FuseCreateIn, FuseName),
    c.FUSE_STATX: (FuseStatxIn,),
    c.FUSE_COPY_FILE_RANGE_64: (FuseCopyFileRangeIn,),
    c.CUSE_INIT: (CuseInitIn,),
}

# Replies: an empty tuple is a reply without a body.  GETXATTR and LISTXATTR
# answer FuseGetxattrOut when the request's size is 0 (see ``reply_layers``).
REPLY_LAYERS: dict[int, Layers] = {
    c.FUSE_LOOKUP: (FuseEntryOut,),
    c.FUSE_GETATTR: (FuseAttrOut,),
    c.FUSE_SETATTR: (FuseAttrOut,),
    c.FUSE_READLINK: (Raw,),
    c.FUSE_SYMLINK: (FuseEntryOut,),
    c.FUSE_MKNOD: (FuseEntryOut,),
    c.FUSE_MKDIR: (FuseEntryOut,),
    c.FUSE_UNLINK: (),
    c.FUSE_RMDIR: (),
    c.FUSE_RENAME: (),
    c.FUSE_LINK: (FuseEntryOut,),
    c.FUSE_OPEN: (FuseOpenOut,),
    c.FUSE_READ: (Raw,),
    c.FUSE_WRITE: (FuseWriteOut,),
    c.FUSE_STATFS: (FuseStatfsOut,),
    c.FUSE_RELEASE: (),
    c.FUSE_FSYNC: (),
    c.FUSE_SETXATTR: (),
    c.FUSE_GETXATTR: (Raw,),
    c.FUSE_LISTXATTR: (FuseXattrNames,),
    c.FUSE_REMOVEXATTR: (),
    c.FUSE_FLUSH: (),
    c.FUSE_INIT: (FuseInitOut,),
    c.FUSE_OPENDIR: (FuseOpenOut,),
    c.FUSE_READDIR: (FuseDirentList,),
    c.FUSE_RELEASEDIR: (),
    c.FUSE_FSYNCDIR: (),
    c.FUSE_GETLK: (FuseLkOut,),
    c.FUSE_SETLK: (),
    c.FUSE_SETLKW: (),
    c.FUSE_ACCESS: (),
    c.FUSE_CREATE: (FuseEntryOut, FuseOpenOut),
    c.FUSE_INTERRUPT: (),  # only ever an error reply (EAGAIN, ENOSYS)
    c.FUSE_BMAP: (FuseBmapOut,),
    c.FUSE_DESTROY: (),
    c.FUSE_IOCTL: (FuseIoctlOut, Raw),  # then iovecs (RETRY) or out data
    c.FUSE_POLL: (FusePollOut,),
    c.FUSE_FALLOCATE: (),
    c.FUSE_READDIRPLUS: (FuseDirentplusList,),
    c.FUSE_RENAME2: (),
    c.FUSE_LSEEK: (FuseLseekOut,),
    c.FUSE_COPY_FILE_RANGE: (FuseWriteOut,),
    c.FUSE_SETUPMAPPING: (),
    c.FUSE_REMOVEMAPPING: (),
    c.FUSE_SYNCFS: (),
    c.FUSE_TMPFILE: (FuseEntryOut, FuseOpenOut),
    c.FUSE_STATX: (FuseStatxOut,),
    c.FUSE_COPY_FILE_RANGE_64: (FuseCopyFileRangeOut,),
    c.CUSE_INIT: (CuseInitOut, Raw),  # then the device info strings
}

NO_REPLY = frozenset({c.FUSE_FORGET, c.FUSE_BATCH_FORGET, c.FUSE_NOTIFY_REPLY})

# Reply bodies whose size may be shorter than the layers' sizes (kernel: out_argvar)
VARIABLE_REPLY = frozenset({
    c.FUSE_INIT, c.CUSE_INIT, c.FUSE_READ, c.FUSE_READLINK, c.FUSE_GETXATTR,
    c.FUSE_LISTXATTR, c.FUSE_READDIR, c.FUSE_READDIRPLUS, c.FUSE_IOCTL,
})

NOTIFY_LAYERS: dict[int, Layers] = {
    c.FUSE_NOTIFY_POLL: (FuseNotifyPollWakeupOut,),
    c.FUSE_NOTIFY_INVAL_INODE: (FuseNotifyInvalInodeOut,),
    c.FUSE_NOTIFY_INVAL_ENTRY: (FuseNotifyInvalEntryOut, FuseName),
    c.FUSE_NOTIFY_STORE: (FuseNotifyStoreOut, Raw),
    c.FUSE_NOTIFY_RETRIEVE: (FuseNotifyRetrieveOut,),
    c.FUSE_NOTIFY_DELETE: (FuseNotifyDeleteOut, FuseName),
    c.FUSE_NOTIFY_RESEND: (),
    c.FUSE_NOTIFY_INC_EPOCH: (),
    c.FUSE_NOTIFY_PRUNE: (FuseNotifyPruneOut, FuseNodeidList),
}


def reply_layers(opcode: int, request: Packet | None = None) -> Layers:
    """The reply layers for ``opcode``; xattr size probes (size 0) get FuseGetxattrOut."""
    if opcode in (c.FUSE_GETXATTR, c.FUSE_LISTXATTR) and request is not None:
        if FuseGetxattrIn in request and request[FuseGetxattrIn].size == 0:
            return (FuseGetxattrOut,)
    return REPLY_LAYERS.get(opcode, (Raw,))


def _bind() -> None:
    users: dict[type[Packet], list[int]] = {}
    for opcode, layers in REQUEST_LAYERS.items():
        if layers:
            users.setdefault(layers[0], []).append(opcode)
            bind_bottom_up(FuseInHeader, layers[0], opcode=opcode)
        for lower, upper in itertools.pairwise(layers):
            if upper is not Raw and lower is not FuseName:
                bind_layers(lower, upper)
    for cls, opcodes in users.items():
        if len(opcodes) == 1:  # building FuseInHeader()/cls() fills in the opcode
            bind_top_down(FuseInHeader, cls, opcode=opcodes[0])
    bind_layers(FuseForgetOne, FuseForgetOne)
    bind_layers(FuseIoctlIovec, FuseIoctlIovec)  # a RETRY reply: in_iovs + out_iovs of them
    bind_layers(FuseRemovemappingOne, FuseRemovemappingOne)


_bind()
