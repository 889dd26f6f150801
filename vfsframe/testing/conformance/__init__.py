"""The backend conformance kit: one suite of checks any backend package runs against itself.

    from vfsframe.testing.conformance import BackendConformance, Capabilities

The pytest side (layers as parameters, deselecting what does not apply, the report of it) is
``vfsframe.testing.conformance.pytest_plugin``, loaded through the ``pytest11`` entry point.
See docs/writing-a-backend.md.
"""

from vfsframe.testing.conformance.capabilities import Capabilities
from vfsframe.testing.conformance.drivers import ChainDriver, Driver, MountDriver
from vfsframe.testing.conformance.marks import (
    LAYERS,
    MOUNT_LAYERS,
    only_in_process,
    only_mounted,
    requires,
)
from vfsframe.testing.conformance.seed import (
    Dir,
    File,
    HardLink,
    Seed,
    Symlink,
    default_seed,
    pseudo_random,
)
from vfsframe.testing.conformance.suite import BackendConformance

__all__ = [
    "LAYERS",
    "MOUNT_LAYERS",
    "BackendConformance",
    "Capabilities",
    "ChainDriver",
    "Dir",
    "Driver",
    "File",
    "HardLink",
    "MountDriver",
    "Seed",
    "Symlink",
    "default_seed",
    "only_in_process",
    "only_mounted",
    "pseudo_random",
    "requires",
]
