"""Builds the C extensions; everything else about the package is in pyproject.toml."""

import sys

from setuptools import Extension, setup

# The split-ring module loads guest values in host byte order, and virtio's are little-endian.
# Elsewhere the Python implementation (vfsframe/virtio/split_ring.py) serves alone.
COMPILE_ARGS = ["-O2", "-Wall", "-Wextra", "-Werror=implicit-function-declaration"]
# The passthrough sandbox's openat2(2); without it, a ctypes wrapper makes the same call.
ext_modules = [
    Extension(
        "vfsframe_plugins.passthrough._openat2",
        sources=["plugins/vfsframe_plugins/passthrough/_openat2.c"],
        extra_compile_args=COMPILE_ARGS,
    )
]
if sys.byteorder == "little":
    ext_modules.append(
        Extension(
            "vfsframe.virtio._split_ring",
            sources=["vfsframe/virtio/_split_ring.c"],
            extra_compile_args=COMPILE_ARGS,
        )
    )

setup(ext_modules=ext_modules)
