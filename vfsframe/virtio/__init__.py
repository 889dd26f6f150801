"""The virtio-fs device engine: vhost-user backend, guest memory, split virtqueues.

Layers, each in its own module: protocol (wire format), memory (guest RAM mappings and address
checks), virtqueue (descriptor chains and the used ring), dispatch (queue pollers and worker
pool), device (vhost-user message handling), server (the listening socket).
"""

from vfsframe.virtio.device import VhostUserFsDevice
from vfsframe.virtio.dispatch import FuseHandler
from vfsframe.virtio.server import VhostUserServer

__all__ = ["FuseHandler", "VhostUserFsDevice", "VhostUserServer"]
