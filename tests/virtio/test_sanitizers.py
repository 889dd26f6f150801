"""The C ring under AddressSanitizer and UndefinedBehaviorSanitizer: the module is built again
with both, and the ring's property tests and the device and malformed-ring tests run against
that build in a child interpreter. Any out-of-bounds access, use after free or undefined
operation aborts the child, whatever the tests themselves check."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
TESTS = ["test_virtqueue_fuzz.py", "test_malformed.py", "test_device.py", "test_queue_threads.py"]
CHILD = """
import sys, pytest, vfsframe.virtio._split_ring as ring
print("ring module:", ring.__file__, flush=True)
sys.exit(pytest.main(sys.argv[1:]))
"""


def _runtime(library: str) -> str:
    path = subprocess.run(["gcc", f"-print-file-name={library}"], capture_output=True, text=True)
    assert os.path.isabs(path.stdout.strip()), f"gcc has no {library}: {path.stdout}"
    return path.stdout.strip()


def test_the_c_ring_is_clean_under_asan_and_ubsan(tmp_path: Path) -> None:
    package = tmp_path / "vfsframe"
    shutil.copytree(
        REPO / "vfsframe", package, ignore=shutil.ignore_patterns("*.so", "__pycache__")
    )
    module = package / "virtio" / f"_split_ring{sysconfig.get_config_var('EXT_SUFFIX')}"
    subprocess.run(
        ["gcc", "-shared", "-fPIC", "-O1", "-g", "-fno-omit-frame-pointer",
         "-fsanitize=address,undefined", "-fno-sanitize-recover=undefined",
         f"-I{sysconfig.get_paths()['include']}", str(package / "virtio" / "_split_ring.c"),
         "-o", str(module)],
        check=True,
    )  # fmt: skip
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(tmp_path), str(REPO / "plugins"), str(REPO)]),
        "LD_PRELOAD": f"{_runtime('libasan.so')} {_runtime('libubsan.so')}",
        # Every object its own allocation, so ASan sees past the end of each (not of an arena).
        "PYTHONMALLOC": "malloc",
        # CPython keeps objects alive to the end on purpose: leaks are not what is looked for.
        "ASAN_OPTIONS": "detect_leaks=0:abort_on_error=1",
        "UBSAN_OPTIONS": "print_stacktrace=1:halt_on_error=1",
    }
    # One child: it names the module it imported, then runs the tests with that module.
    # Not from the checkout's directory, and the tests' packages after PYTHONPATH: the copy
    # with the sanitized module must be the vfsframe imported.
    run = subprocess.run(
        [sys.executable, "-c", CHILD, "-q", "-p", "no:cacheprovider", "--import-mode=append",
         *(str(REPO / "tests" / "virtio" / name) for name in TESTS)],
        env=env, cwd=tmp_path, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-5000:]
    assert run.stdout.splitlines()[0] == f"ring module: {module}"
    assert " passed" in run.stdout and "failed" not in run.stdout
