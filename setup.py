"""Builds the one C extension; everything else about the package is in pyproject.toml."""

import sys

from setuptools import Extension, setup

# The split-ring module loads guest values in host byte order, and virtio's are little-endian.
# Elsewhere the Python implementation (vfsframe/virtio/split_ring.py) serves alone.
ext_modules = []
if sys.byteorder == "little":
    ext_modules.append(
        Extension(
            "vfsframe.virtio._split_ring",
            sources=["vfsframe/virtio/_split_ring.c"],
            extra_compile_args=["-O2", "-Wall", "-Wextra", "-Werror=implicit-function-declaration"],
        )
    )

setup(ext_modules=ext_modules)
