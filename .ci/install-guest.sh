#!/usr/bin/env bash
# Installs what the guest tests (tests/guest/) need: QEMU, the reference C virtiofsd,
# busybox-static and cpio for the initramfs, and pre-fetches the guest kernel into
# the cache outside the repo. Idempotent: a second run installs nothing.
set -euo pipefail

here="$(cd "$(dirname "$0")/.." && pwd)"
pkgs=(qemu-system-x86 qemu-system-common busybox-static cpio
      gcc libc6-dev   # a static helper for the two-guest tests (tests/usecases/guesttool.c)
      debootstrap)    # the Debian root tree of the rootfs guest tests (vfsframe.testing.rootfs)

missing=()
for p in "${pkgs[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

# The kernel is fetched with an extra apt list dir, never touching the system's sources.
python="${PYTHON:-python3}"
PYTHONPATH="$here${PYTHONPATH:+:$PYTHONPATH}" "$python" -m vfsframe.testing.guestvm fetch-kernel
# The Debian root file system the rootfs guest tests boot from (debootstrap, ~1 min, cached).
PYTHONPATH="$here${PYTHONPATH:+:$PYTHONPATH}" "$python" -m vfsframe.testing.rootfs build
