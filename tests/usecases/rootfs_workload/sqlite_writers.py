"""Two processes insert into one SQLite database at once, each row its own transaction, so
every insert takes and releases SQLite's POSIX locks (and, in WAL mode, writes through the
shared mmap of the -shm file). Prints the rows, the integrity check, the journal mode, and
FIGURE lines with the insert rate.

Usage: sqlite_writers.py DB wal|delete        (the parent: creates, spawns, checks)
       sqlite_writers.py DB MODE writer N     (a child)"""

import sqlite3
import subprocess
import sys
import time

ROWS_PER_WRITER = 300
WRITERS = 2


def connect(path: str) -> sqlite3.Connection:
    db = sqlite3.connect(path, timeout=60, isolation_level=None)
    db.execute("PRAGMA busy_timeout = 60000")
    return db


def writer(path: str, number: int) -> None:
    db = connect(path)
    for i in range(ROWS_PER_WRITER):
        db.execute("BEGIN IMMEDIATE")
        db.execute("INSERT INTO t (writer, seq, body) VALUES (?, ?, ?)", (number, i, "x" * 200))
        db.execute("COMMIT")
    db.close()


def main() -> None:
    path, mode = sys.argv[1], sys.argv[2]
    if sys.argv[3:4] == ["writer"]:
        writer(path, int(sys.argv[4]))
        return
    db = connect(path)
    journal = db.execute(f"PRAGMA journal_mode = {mode}").fetchone()[0]
    db.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, writer INT, seq INT, body TEXT)")
    start = time.monotonic()
    children = [
        subprocess.Popen([sys.executable, __file__, path, mode, "writer", str(n)])
        for n in range(WRITERS)
    ]
    failed = [code for code in (child.wait() for child in children) if code != 0]
    elapsed = time.monotonic() - start
    rows = db.execute("SELECT count(*) FROM t").fetchone()[0]
    # Each writer's rows must all be there, in its own order.
    ordered = all(
        [s for (s,) in db.execute("SELECT seq FROM t WHERE writer = ? ORDER BY id", (n,))]
        == list(range(ROWS_PER_WRITER))
        for n in range(WRITERS)
    )
    integrity = db.execute("PRAGMA integrity_check").fetchone()[0]
    db.close()
    status = "" if not failed and ordered else f" failed={failed} ordered={ordered}"
    print(f"rows={rows} writers={WRITERS} integrity={integrity} journal={journal}{status}")
    print(f"FIGURE insert_rate {rows / elapsed:.1f}")
    print(f"FIGURE insert_seconds {elapsed:.2f}")


if __name__ == "__main__":
    main()
