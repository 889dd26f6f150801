"""The Linux FUSE ABI (include/uapi/linux/fuse.h): opcodes, flags and message layouts.

Layouts are precompiled ``struct.Struct`` objects in the kernel's byte order (little-endian
on every architecture QEMU and Linux share with us here). Names follow the header with the
``FUSE_`` prefix dropped, so the header is the reference for each.
"""

from __future__ import annotations

import enum
from struct import Struct

KERNEL_VERSION = 7
# 7.27 is the oldest minor we negotiate; 7.31 is what we implement features up to
# (max_pages, cache symlinks, ...). Newer kernels are answered with our minor.
MIN_MINOR = 27
MAX_MINOR = 31

ROOT_ID = 1
NAME_MAX = 255  # Linux's limit on one path component (the kernel enforces 1024 for FUSE)
PATH_MAX = 4096


class Opcode(enum.IntEnum):
    LOOKUP = 1
    FORGET = 2
    GETATTR = 3
    SETATTR = 4
    READLINK = 5
    SYMLINK = 6
    MKNOD = 8
    MKDIR = 9
    UNLINK = 10
    RMDIR = 11
    RENAME = 12
    LINK = 13
    OPEN = 14
    READ = 15
    WRITE = 16
    STATFS = 17
    RELEASE = 18
    FSYNC = 20
    SETXATTR = 21
    GETXATTR = 22
    LISTXATTR = 23
    REMOVEXATTR = 24
    FLUSH = 25
    INIT = 26
    OPENDIR = 27
    READDIR = 28
    RELEASEDIR = 29
    FSYNCDIR = 30
    GETLK = 31
    SETLK = 32
    SETLKW = 33
    ACCESS = 34
    CREATE = 35
    INTERRUPT = 36
    BMAP = 37
    DESTROY = 38
    IOCTL = 39
    POLL = 40
    NOTIFY_REPLY = 41
    BATCH_FORGET = 42
    FALLOCATE = 43
    READDIRPLUS = 44
    RENAME2 = 45
    LSEEK = 46
    COPY_FILE_RANGE = 47
    SETUPMAPPING = 48
    REMOVEMAPPING = 49
    SYNCFS = 50
    TMPFILE = 51
    STATX = 52


class InitFlag(enum.IntFlag):
    ASYNC_READ = 1 << 0
    POSIX_LOCKS = 1 << 1
    FILE_OPS = 1 << 2
    ATOMIC_O_TRUNC = 1 << 3
    EXPORT_SUPPORT = 1 << 4
    BIG_WRITES = 1 << 5
    DONT_MASK = 1 << 6
    SPLICE_WRITE = 1 << 7
    SPLICE_MOVE = 1 << 8
    SPLICE_READ = 1 << 9
    FLOCK_LOCKS = 1 << 10
    HAS_IOCTL_DIR = 1 << 11
    AUTO_INVAL_DATA = 1 << 12
    DO_READDIRPLUS = 1 << 13
    READDIRPLUS_AUTO = 1 << 14
    ASYNC_DIO = 1 << 15
    WRITEBACK_CACHE = 1 << 16
    NO_OPEN_SUPPORT = 1 << 17
    PARALLEL_DIROPS = 1 << 18
    HANDLE_KILLPRIV = 1 << 19
    POSIX_ACL = 1 << 20
    ABORT_ERROR = 1 << 21
    MAX_PAGES = 1 << 22
    CACHE_SYMLINKS = 1 << 23
    NO_OPENDIR_SUPPORT = 1 << 24
    EXPLICIT_INVAL_DATA = 1 << 25
    MAP_ALIGNMENT = 1 << 26
    SUBMOUNTS = 1 << 27
    HANDLE_KILLPRIV_V2 = 1 << 28
    SETXATTR_EXT = 1 << 29
    INIT_EXT = 1 << 30


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

# fuse_open_out.open_flags
FOPEN_DIRECT_IO = 1 << 0
FOPEN_KEEP_CACHE = 1 << 1
FOPEN_NONSEEKABLE = 1 << 2
FOPEN_CACHE_DIR = 1 << 3
FOPEN_STREAM = 1 << 4
FOPEN_NOFLUSH = 1 << 5

GETATTR_FH = 1 << 0
READ_LOCKOWNER = 1 << 1
WRITE_CACHE = 1 << 0
WRITE_LOCKOWNER = 1 << 1
WRITE_KILL_SUIDGID = 1 << 2
RELEASE_FLUSH = 1 << 0
RELEASE_FLOCK_UNLOCK = 1 << 1
FSYNC_FDATASYNC = 1 << 0
LK_FLOCK = 1 << 0

IN_HEADER = Struct("<IIQQIIIHH")  # len opcode unique nodeid uid gid pid total_extlen padding
OUT_HEADER = Struct("<IiQ")  # len error unique

# fuse_attr: ino size blocks atime mtime ctime atimensec mtimensec ctimensec mode nlink uid
# gid rdev blksize flags
ATTR = Struct("<QQQQQQIIIIIIIIII")
ENTRY_OUT = Struct("<QQQQII" + ATTR.format[1:])  # nodeid generation entry_valid attr_valid
ATTR_OUT = Struct("<QII" + ATTR.format[1:])  # attr_valid attr_valid_nsec dummy + attr

INIT_IN = Struct("<IIII")  # major minor max_readahead flags
INIT_IN_FLAGS2 = Struct("<I")  # flags2 follows from 7.36 on
# major minor max_readahead flags max_background congestion_threshold max_write time_gran
# max_pages map_alignment flags2 max_stack_depth unused[6]
INIT_OUT = Struct("<IIIIHHIIHHII24x")

FORGET_IN = Struct("<Q")
BATCH_FORGET_IN = Struct("<II")
FORGET_ONE = Struct("<QQ")
GETATTR_IN = Struct("<IIQ")  # getattr_flags dummy fh
# valid padding fh size lock_owner atime mtime ctime atimensec mtimensec ctimensec mode
# unused4 uid gid unused5
SETATTR_IN = Struct("<IIQQQQQQIIIIIIII")
MKNOD_IN = Struct("<IIII")  # mode rdev umask padding
MKDIR_IN = Struct("<II")  # mode umask
RENAME_IN = Struct("<Q")  # newdir
RENAME2_IN = Struct("<QII")  # newdir flags padding
LINK_IN = Struct("<Q")  # oldnodeid
OPEN_IN = Struct("<II")  # flags open_flags
OPEN_OUT = Struct("<QIi")  # fh open_flags backing_id
CREATE_IN = Struct("<IIII")  # flags mode umask open_flags
READ_IN = Struct("<QQIIQII")  # fh offset size read_flags lock_owner flags padding
WRITE_IN = Struct("<QQIIQII")  # fh offset size write_flags lock_owner flags padding
WRITE_OUT = Struct("<II")  # size padding
STATFS_OUT = Struct("<QQQQQIII28x")  # blocks bfree bavail files ffree bsize namelen frsize
RELEASE_IN = Struct("<QIIQ")  # fh flags release_flags lock_owner
FLUSH_IN = Struct("<QIIQ")  # fh unused padding lock_owner
FSYNC_IN = Struct("<QII")  # fh fsync_flags padding
SETXATTR_IN = Struct("<II")  # size flags
SETXATTR_IN_EXT = Struct("<IIII")  # size flags setxattr_flags padding
GETXATTR_IN = Struct("<II")  # size padding
GETXATTR_OUT = Struct("<II")  # size padding
LK_IN = Struct("<QQQQIIII")  # fh owner lk.start lk.end lk.type lk.pid lk_flags padding
LK_OUT = Struct("<QQII")  # lk.start lk.end lk.type lk.pid
ACCESS_IN = Struct("<II")  # mask padding
INTERRUPT_IN = Struct("<Q")  # unique
FALLOCATE_IN = Struct("<QQQII")  # fh offset length mode padding
LSEEK_IN = Struct("<QQII")  # fh offset whence padding
LSEEK_OUT = Struct("<Q")
COPY_FILE_RANGE_IN = Struct("<QQQQQQQ")  # fh_in off_in nodeid_out fh_out off_out len flags
DIRENT = Struct("<QQII")  # ino off namelen type, then the name padded to 8 bytes

# The kernel refuses a /dev/fuse read buffer smaller than this plus max_write.
REQUEST_OVERHEAD = IN_HEADER.size + WRITE_IN.size
MIN_READ_BUFFER = 8192


def dirent_size(namelen: int) -> int:
    """Bytes of one fuse_dirent with its name, aligned to 8 as the kernel walks them."""
    return (DIRENT.size + namelen + 7) & ~7
