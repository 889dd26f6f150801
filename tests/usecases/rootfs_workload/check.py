"""Python on a virtio-fs root: the standard library (and its C extensions, mmap'd from the
share) imported, a directory tree walked, a file written and renamed over another."""

import hashlib
import json
import os
import sqlite3
import sys
import tempfile

count = sum(
    len([f for f in files if f.endswith(".py")])
    for _, _, files in os.walk(
        os.path.join(
            sys.prefix, "lib", f"python{sys.version_info.major}.{sys.version_info.minor}", "json"
        )
    )
)
payload = json.dumps({"numbers": list(range(1000))}).encode()
with tempfile.NamedTemporaryFile(dir="/root", delete=False) as out:
    out.write(payload)
os.replace(out.name, "/root/payload.json")
with open("/root/payload.json", "rb") as back:
    same = back.read() == payload
os.unlink("/root/payload.json")
print(f"json_py={count} roundtrip={same} sha={hashlib.sha256(payload).hexdigest()[:16]}")
print(f"sqlite={sqlite3.sqlite_version}")
