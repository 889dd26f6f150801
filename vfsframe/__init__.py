"""vfsframe: file servers that a Linux kernel mounts over virtio-fs or /dev/fuse."""

__version__ = "0.1.0"
