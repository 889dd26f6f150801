"""Try every kind of change on the installation media; print the errno name of each refusal
(one line per operation, `op ERRNO`, or `op succeeded`)."""

import errno
import os
import sys

media = sys.argv[1]
deb = sorted(name for name in os.listdir(media) if name.endswith(".deb"))[0]
existing = os.path.join(media, deb)
attempts = {
    "create": lambda: open(os.path.join(media, "new"), "x").close(),
    "write": lambda: open(existing, "r+b").close(),
    "truncate": lambda: os.truncate(existing, 0),
    "chmod": lambda: os.chmod(existing, 0o600),
    "utime": lambda: os.utime(existing, (0, 0)),
    "rename": lambda: os.rename(existing, existing + ".moved"),
    "unlink": lambda: os.unlink(existing),
    "mkdir": lambda: os.mkdir(os.path.join(media, "dir")),
    "symlink": lambda: os.symlink("x", os.path.join(media, "link")),
    "link": lambda: os.link(existing, os.path.join(media, "hard")),
    "setxattr": lambda: os.setxattr(existing, "user.test", b"1"),
}
for name, attempt in attempts.items():
    try:
        attempt()
    except OSError as exc:
        print(f"{name} {errno.errorcode.get(exc.errno, exc.errno)}")
    else:
        print(f"{name} succeeded")
