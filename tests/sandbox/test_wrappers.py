"""The ctypes wrappers, each exercised in a child process (a capability drop or a filter
cannot be undone, and pytest must keep its privileges)."""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap

import pytest

from vfsframe.sandbox import capabilities, seccomp
from vfsframe.sandbox.syscalls import FILES, IDENTITY, INTERPRETER, TRANSPORT


def run_child(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)],
                          capture_output=True, text=True, timeout=60)  # fmt: skip


def test_capability_names_and_masks() -> None:
    mask = capabilities.mask_of(["CAP_CHOWN", "CAP_SETUID", "CAP_MKNOD"])
    assert mask == (1 << 0) | (1 << 7) | (1 << 27)
    assert capabilities.names_of(mask) == ["CAP_CHOWN", "CAP_SETUID", "CAP_MKNOD"]
    assert capabilities.last_capability() >= 40
    with pytest.raises(KeyError):
        capabilities.mask_of(["CAP_NOPE"])


def test_drop_keeps_only_the_named_capabilities_and_sets_no_new_privs() -> None:
    out = run_child("""
        from vfsframe.sandbox import capabilities, libc
        capabilities.drop_all_but(["CAP_CHOWN", "CAP_FOWNER"])
        capabilities.set_no_new_privs()
        print(libc.capget(), libc.prctl(libc.PR_GET_NO_NEW_PRIVS))
        print(open("/proc/self/status").read())
    """)
    assert out.returncode == 0, out.stderr
    status = dict(line.split(":\t") for line in out.stdout.splitlines()[1:] if ":\t" in line)
    expected = (1 << 0) | (1 << 3)
    assert out.stdout.splitlines()[0] == f"({expected}, {expected}, 0) 1"
    for field in ("CapEff", "CapPrm", "CapBnd"):
        assert int(status[field], 16) == expected, field
    assert status["NoNewPrivs"] == "1"


def test_syscall_names_resolve_both_ways() -> None:
    assert seccomp.syscall_number("openat") == 257
    assert seccomp.syscall_name(257) == "openat"
    assert seccomp.syscall_number("no_such_call") is None


def test_every_listed_call_is_known_to_libseccomp() -> None:
    # A typo would silently leave a call out of the allow-list.
    legacy = {"open", "creat", "stat", "lstat", "access", "mkdir", "unlink", "rmdir", "rename",
              "chmod", "lchown", "readlink", "futimesat", "getrlimit", "select", "dup2",
              "epoll_wait", "accept"}  # fmt: skip
    for name in INTERPRETER | TRANSPORT | FILES | IDENTITY:
        assert seccomp.syscall_number(name) is not None or name in legacy, name


ALLOWED = sorted(INTERPRETER | TRANSPORT | FILES | IDENTITY)


def test_kill_filter_ends_the_process_on_a_call_off_the_list() -> None:
    out = run_child(f"""
        import ctypes
        from vfsframe.sandbox import seccomp
        print(seccomp.install_filter({ALLOWED!r}, "kill"), flush=True)
        ctypes.CDLL(None).syscall(135, ctypes.c_ulong(0xFFFFFFFF))  # personality
        print("survived")
    """)
    assert out.returncode == -signal.SIGSYS, (out.stdout, out.stderr)
    assert "survived" not in out.stdout
    assert int(out.stdout.split()[0]) > 100


def test_kill_filter_lets_listed_calls_through_and_restricts_unshare() -> None:
    out = run_child(f"""
        import ctypes, os
        from vfsframe.sandbox import seccomp
        seccomp.install_filter({ALLOWED!r}, "kill")
        libc = ctypes.CDLL(None, use_errno=True)
        assert libc.unshare(0x200) == 0  # CLONE_FS: a thread's own umask and cwd
        os.listdir("/")
        print("fine", flush=True)
        libc.unshare(0x10000000)  # CLONE_NEWUSER: not with this argument
    """)
    assert out.stdout.strip() == "fine", out.stderr
    assert out.returncode == -signal.SIGSYS


def test_threads_start_but_no_namespace_can_be_cloned() -> None:
    out = run_child(f"""
        import ctypes, os, threading
        from vfsframe.sandbox import seccomp
        seccomp.install_filter({ALLOWED!r}, "kill")
        t = threading.Thread(target=lambda: print("thread ran", flush=True))
        t.start(); t.join()  # clone3 fails with ENOSYS, the C library falls back to clone
        pid = os.fork()  # clone without namespace flags
        if pid == 0:
            os._exit(0)
        print("forked", flush=True)  # (not waited for: wait4 is off the list)
        ctypes.CDLL(None).syscall(56, ctypes.c_ulong(0x10000000 | 17), None, None, None, None)
        print("survived")
    """)
    assert out.stdout.splitlines() == ["thread ran", "forked"], (out.stdout, out.stderr)
    assert out.returncode == -signal.SIGSYS
