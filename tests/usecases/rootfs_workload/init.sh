#!/bin/sh
# PID 1 of a guest whose root file system is a virtio-fs share (kernel arguments
# `rootfstype=virtiofs root=TAG rw init=/vfsframe/init.sh`). The kernel mounted the share and
# exec'd this script with dash from it: the first line printed is the boot-time marker.
#
# Every line that matters is `CHECK name ok|fail detail` or `RESULT name value` (compared
# between servers, so nothing here prints inode numbers, times or sizes that differ between
# servers), or `FIGURE name value` (a measurement, not compared). The helpers sit in
# /vfsframe/ next to this script.
export PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root LANG=C.UTF-8 PYTHONDONTWRITEBYTECODE=1
W=/vfsframe
. $W/env  # ROOT_TAG, MEDIA_TAG, MEDIA_ACL_TAG (empty: no such share): from the harness
mount -t proc proc /proc
read -r uptime _ < /proc/uptime
echo "ROOTFS-INIT uptime=$uptime"
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
mount -t tmpfs tmp /tmp
cd /root || exit 1

check() {  # check NAME 'shell code': CHECK NAME ok|fail <first output lines>
    _name=$1; shift
    if _out=$(eval "$1" 2>&1); then echo "CHECK $_name ok"
    else echo "CHECK $_name fail $(echo "$_out" | head -n 3 | tr '\n' '|' | cut -c1-300)"; fi
}
result() { echo "RESULT $1 $(printf '%s' "$2" | tr '\n' '|')"; }
figure() { echo "FIGURE $1 $2"; }

echo "GUEST-START $(uname -r) cpus=$(nproc)"
figure init_uptime "$uptime"

# -- the root itself -----------------------------------------------------------------------
check root_is_virtiofs 'grep -q "^$ROOT_TAG / virtiofs rw" /proc/mounts'
result os_release "$(grep ^PRETTY_NAME= /etc/os-release)"

# -- dynamically linked programs: exec, and their shared libraries mapped from the share -----
check exec_dynamic 'ldd /usr/bin/sort | grep -q "libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6"'
check libc_mapped_from_share 'grep -q "/usr/lib/x86_64-linux-gnu/libc.so.6" /proc/self/maps'
check pipeline 'seq 1 20000 | sort -rn | head -n 1 | grep -qx 20000'
result coreutils_sha "$(seq 1 5000 | sha256sum | cut -c1-16)"

# -- interpreters ----------------------------------------------------------------------------
result perl_out "$(perl $W/check.pl /var/lib/dpkg/status 2>&1)"
check perl 'perl $W/check.pl /var/lib/dpkg/status | grep -q "^packages="'
result python_out "$(python3 $W/check.py 2>&1)"
check python 'python3 $W/check.py | grep -q "^sqlite="'

# -- SQLite: two processes write one database at once (POSIX locks; WAL's shared mmap) -------
for mode in wal delete; do
    out=$(python3 $W/sqlite_writers.py /root/db-$mode.sqlite $mode 2>&1)
    echo "$out" | grep '^FIGURE' | sed "s/^FIGURE /FIGURE ${mode}_/"
    result sqlite_$mode "$(echo "$out" | grep -v '^FIGURE')"
    check sqlite_$mode '[ "$(echo "$out" | grep -v "^FIGURE")" = "rows=600 writers=2 integrity=ok journal=$mode" ]'
    check sqlite_cli_$mode '[ "$(sqlite3 /root/db-$mode.sqlite "PRAGMA integrity_check; SELECT count(*) FROM t")" = "$(printf "ok\n600")" ]'
done
rm -f /root/db-*

# -- dpkg -i of a package built here ---------------------------------------------------------
mkdir -p /root/pkg/DEBIAN /root/pkg/usr/bin
cat > /root/pkg/DEBIAN/control <<'EOF'
Package: vfsframe-hello
Version: 1.0
Architecture: all
Maintainer: vfsframe tests <tests@vfsframe.invalid>
Description: a package built and installed inside a guest booted from virtio-fs
EOF
printf '#!/bin/sh\necho hello from a virtio-fs root\n' > /root/pkg/usr/bin/vfsframe-hello
chmod 755 /root/pkg/usr/bin/vfsframe-hello
check dpkg_build 'dpkg-deb --root-owner-group --build /root/pkg /root/hello.deb'
check dpkg_install 'dpkg -i /root/hello.deb'
check dpkg_status '[ "$(dpkg-query -W -f="\${Status}" vfsframe-hello)" = "install ok installed" ]'
result hello_out "$(vfsframe-hello 2>&1)"
check dpkg_remove 'dpkg -r vfsframe-hello && [ ! -e /usr/bin/vfsframe-hello ]'
check dpkg_audit '[ -z "$(dpkg --audit)" ]'
rm -rf /root/pkg /root/hello.deb

# -- a file tree made with tar, compared, and removed ----------------------------------------
check tar_create 'tar -C /usr -cf /root/tree.tar share/perl5 lib/python3.11/json lib/python3.11/email'
check tar_extract 'mkdir /root/tree && tar -C /root/tree -xf /root/tree.tar'
check tar_same 'diff -r /usr/share/perl5 /root/tree/share/perl5 &&
    diff -r /usr/lib/python3.11/json /root/tree/lib/python3.11/json'
result tar_files "$(find /root/tree -type f | wc -l) $(tar -tf /root/tree.tar | wc -l)"
check tar_remove 'rm -rf /root/tree /root/tree.tar && [ ! -e /root/tree ]'

# -- installation media: read-only shares ----------------------------------------------------
media() {  # media NAME TAG: mount the share at /NAME, install from it, try to change it
    n=$1; d=/$1
    mkdir -p $d
    # Mounted read-write on purpose: the refusal must come from the server, not this kernel.
    check ${n}_mount "mount -t virtiofs $2 $d"
    result ${n}_list "$(ls $d)"
    check ${n}_install 'dpkg -i $d/*.deb'
    result ${n}_tool "$(vfsframe-media-tool 2>&1)"
    result ${n}_data "$(vfsframe-media-data 2>&1)"
    before=$(ls -lR $d)
    errnos=$(python3 $W/media_writes.py $d 2>&1)
    result ${n}_write_errnos "$errnos"
    check ${n}_writes_erofs '[ -n "$errnos" ] && [ -z "$(echo "$errnos" | grep -v " EROFS$")" ]'
    check ${n}_unchanged '[ "$(ls -lR $d)" = "$before" ]'
    check ${n}_purge 'dpkg -P vfsframe-media-data vfsframe-media-tool &&
        [ ! -e /usr/bin/vfsframe-media-tool ]'
    check ${n}_umount "umount $d"
}
[ -n "$MEDIA_TAG" ] && media media "$MEDIA_TAG"          # passthrough, readonly = true
[ -n "$MEDIA_ACL_TAG" ] && media media_acl "$MEDIA_ACL_TAG"  # acl middleware, readonly = true

# A trace on the root the host looks for afterwards (in the tree, or not in an overlay's lower).
check leave_trace 'echo booted > /root/guest-was-here'

# -- clean poweroff --------------------------------------------------------------------------
check sync 'sync'
check umount_tmp 'umount /tmp'
cd /
check remount_ro 'mount -o remount,ro /'
check root_ro 'grep -q "^$ROOT_TAG / virtiofs ro" /proc/mounts'
echo "GUEST-DONE rc=0"
sleep 0.3  # let the UART drain before the power goes
busybox poweroff -f
