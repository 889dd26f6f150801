"""The seccomp allow-list: the system calls a file server written in Python makes.

Found by serving the guest workload (tests/guest/fs_workload.sh) over a passthrough share
under strace -c (about 50 distinct calls) and under ``seccomp = "log"``, then completed with
the calls of the backends' other paths (xattrs, locks, fallocate, copy_file_range, ...) and
grouped by who needs them. Left out on purpose: open_by_handle_at (the classic container
escape), mount, ptrace, bpf, keyctl, kexec, module and namespace calls. Backends add theirs through ``SandboxNeeds.syscalls``; the
network group is added only when a plugin declares it needs the network.
"""

from __future__ import annotations

from .needs import SandboxNeeds

# The interpreter itself: memory, threads, signals, time, its own files.
INTERPRETER = frozenset({
    "brk", "mmap", "munmap", "mremap", "mprotect", "madvise", "futex", "set_robust_list",
    "get_robust_list", "rseq", "clone", "clone3", "exit", "exit_group", "gettid", "getpid",
    "getppid", "tgkill", "rt_sigaction", "rt_sigprocmask", "rt_sigreturn", "rt_sigtimedwait",
    "sigaltstack", "clock_gettime", "clock_nanosleep", "nanosleep", "gettimeofday", "getrandom",
    "sched_yield", "sched_getaffinity", "getuid", "geteuid", "getgid", "getegid", "getresuid",
    "getresgid", "getgroups", "prlimit64", "getrlimit", "uname", "sysinfo", "getcwd", "dup",
    "dup2", "dup3", "close", "close_range", "read", "write", "readv", "writev", "pread64",
    "pwrite64", "lseek", "ioctl", "fcntl", "pipe2", "restart_syscall", "membarrier",
    "set_tid_address", "arch_prctl",
})  # fmt: skip

# The vhost-user transport: its socket, eventfds, epoll, and guest memory (memfds).
TRANSPORT = frozenset({
    "accept", "accept4", "recvmsg", "sendmsg", "recvfrom", "sendto", "shutdown",
    "getsockopt", "setsockopt", "getsockname", "getpeername", "poll", "ppoll", "select",
    "pselect6", "epoll_create1", "epoll_ctl", "epoll_wait", "epoll_pwait", "eventfd2",
})  # fmt: skip

# What the backends do with files.
FILES = frozenset({
    "openat", "openat2", "open", "creat", "newfstatat", "fstat", "stat", "lstat", "statx",
    "statfs", "fstatfs", "getdents64", "readlinkat", "readlink", "faccessat", "faccessat2",
    "access", "mkdirat", "mkdir", "mknodat", "symlinkat", "linkat", "unlinkat", "unlink",
    "rmdir", "renameat", "renameat2", "rename", "fchmod", "fchmodat", "chmod", "fchown",
    "fchmodat2", "fchownat", "lchown", "utimensat", "futimesat", "ftruncate", "truncate", "fallocate",
    "fsync", "fdatasync", "sync_file_range", "syncfs", "flock", "copy_file_range",
    "sendfile", "splice", "getxattr", "lgetxattr", "fgetxattr", "setxattr", "lsetxattr",
    "fsetxattr", "listxattr", "llistxattr", "flistxattr", "removexattr", "lremovexattr",
    "fremovexattr", "umask", "preadv", "pwritev", "preadv2", "pwritev2", "fadvise64", "readahead", "lseek",
})  # fmt: skip

# Per-thread file-system identity (creating files as the guest caller) and its fs_struct.
IDENTITY = frozenset({"setfsuid", "setfsgid", "unshare", "capget", "capset"})

# Talking to the network (S3 stores): DNS, TCP and TLS.
NETWORK = frozenset({
    "socket", "connect", "bind", "listen", "socketpair", "recvmmsg", "sendmmsg",
})  # fmt: skip


def allowed_syscalls(needs: SandboxNeeds) -> frozenset[str]:
    allowed = INTERPRETER | TRANSPORT | FILES | IDENTITY | needs.syscalls
    return allowed | NETWORK if needs.network else allowed
