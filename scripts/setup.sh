#!/usr/bin/env bash
# Set up vfsframe on a fresh Debian machine: system packages, then a virtualenv at .venv
# with vfsframe and its test tools installed (editable). Run as root; safe to run again.
set -euo pipefail
cd "$(dirname "$0")/.."

export DEBIAN_FRONTEND=noninteractive
apt_packages=(
    fuse3 libfuse2    # fusermount3 for unprivileged mounts; libfuse for the fusepy transport
    attr              # setfattr/getfattr, used by the tests
    bindfs            # the C FUSE server the benchmarks compare against
    libseccomp2       # vfsframe serve's syscall filter (docs/security.md)
    python3-venv
    gcc python3-dev   # builds the C split-ring module (vfsframe/virtio/_split_ring.c)
    e2fsprogs         # mkfs.ext4: each server in a guest benchmark gets a fresh file system
)
if [ "$(id -u)" -eq 0 ]; then
    apt-get update -q
    apt-get install -y -q --no-install-recommends "${apt_packages[@]}"
    # What the guest tests need: QEMU, busybox, the reference C virtiofsd, a guest kernel.
    if [ -x .ci/install-guest.sh ] || [ -f .ci/install-guest.sh ]; then
        bash .ci/install-guest.sh
    fi
else
    echo "setup: not root, skipping system packages (${apt_packages[*]})" >&2
fi

python=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
    "$python" -m venv .venv
fi
.venv/bin/pip install -q --upgrade pip
.venv/bin/pip install -q -e '.[test]'
echo "setup: done; try: sudo .venv/bin/vfsframe mount builtin:memory /tmp/vfsframe-demo"
