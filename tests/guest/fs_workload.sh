# The guest-side workload: run inside the test guest (see vfsframe.testing.guestvm), against
# any virtio-fs server. Every line it prints that matters is a `check` (ok|fail) or a
# `result` (a value compared between servers), so the same script is the test for vfsframe
# and the oracle run against the reference C virtiofsd. Nothing here depends on which
# server it is: no inode numbers, owners, times or block counts are reported.
M=/mnt/a

check mount "mount -t virtiofs $TAG $M"
check mount_listed "grep -q ' $M virtiofs ' /proc/mounts"
check root_empty '[ -z "$(ls -A $M)" ]'
check ls_l 'ls -l $M >/dev/null'

check create 'echo hello > $M/file && [ "$(cat $M/file)" = hello ]'
check append 'echo world >> $M/file && [ "$(cat $M/file)" = "$(printf "hello\nworld")" ]'
check overwrite_middle 'printf XY | dd of=$M/file bs=1 seek=1 conv=notrunc 2>/dev/null &&
    [ "$(head -n 1 $M/file)" = hXYlo ]'
result file_size "$(stat -c %s $M/file)"

check mkdir_p 'mkdir -p $M/d1/d2/d3 && [ -d $M/d1/d2/d3 ]'
check nested_file 'echo deep > $M/d1/d2/d3/deep.txt && [ "$(cat $M/d1/d2/d3/deep.txt)" = deep ]'
check rename_file 'mv $M/file $M/renamed && [ ! -e $M/file ] && [ "$(head -n 1 $M/renamed)" = hXYlo ]'
check rename_dir 'mv $M/d1/d2 $M/d1/moved && [ ! -e $M/d1/d2 ] &&
    [ "$(cat $M/d1/moved/d3/deep.txt)" = deep ]'
check rename_over 'echo new > $M/src && echo old > $M/dst && mv $M/src $M/dst &&
    [ "$(cat $M/dst)" = new ] && [ ! -e $M/src ]'

check hardlink 'ln $M/renamed $M/hard && [ "$(stat -c %h $M/renamed)" = 2 ] &&
    [ "$(stat -c %i $M/renamed)" = "$(stat -c %i $M/hard)" ]'
check hardlink_shares_data 'echo more >> $M/hard && [ "$(tail -n 1 $M/renamed)" = more ]'
check symlink 'ln -s renamed $M/sym && [ -L $M/sym ] && [ "$(readlink $M/sym)" = renamed ] &&
    cmp $M/sym $M/renamed'
check symlink_dangling 'ln -s nowhere $M/dangling && [ -L $M/dangling ] && [ ! -e $M/dangling ]'

check chmod 'chmod 640 $M/renamed && [ "$(stat -c %a $M/renamed)" = 640 ]'
check chmod_dir 'chmod 711 $M/d1 && [ "$(stat -c %a $M/d1)" = 711 ]'
check truncate_shrink 'truncate -s 3 $M/renamed && [ "$(cat $M/renamed)" = hXY ]'
check truncate_grow 'truncate -s 100000 $M/renamed && [ "$(stat -c %s $M/renamed)" = 100000 ] &&
    [ "$(tail -c 4 $M/renamed | od -An -tx1 | tr -d " ")" = 00000000 ]'
check unlink_link 'rm $M/hard && [ "$(stat -c %h $M/renamed)" = 1 ] && [ ! -e $M/hard ]'

# 64 MiB through the page cache and back from the server (caches dropped in between).
check dd_64m 'dd if=/dev/urandom of=/tmp/src bs=1M count=64 2>/dev/null &&
    dd if=/tmp/src of=$M/big bs=1M 2>/dev/null && sync &&
    echo 3 > /proc/sys/vm/drop_caches &&
    [ "$(md5sum < $M/big)" = "$(md5sum < /tmp/src)" ]'
rm -f /tmp/src
result big_size "$(stat -c %s $M/big)"

# Concurrent writers: separate files, and disjoint ranges of one shared file.
check concurrent_writers '
    for i in 1 2 3 4; do yes "writer $i" | head -c 3000000 > $M/w$i & done; wait
    for i in 1 2 3 4; do
        [ "$(md5sum < $M/w$i)" = "$(yes "writer $i" | head -c 3000000 | md5sum)" ] || exit 1
    done'
check concurrent_ranges '
    for i in 0 1 2 3; do
        yes "range $i" | head -c 1048576 | dd of=$M/shared bs=1M seek=$i conv=notrunc 2>/dev/null &
    done; wait
    echo 3 > /proc/sys/vm/drop_caches
    for i in 0 1 2 3; do
        [ "$(dd if=$M/shared bs=1M skip=$i count=1 2>/dev/null | md5sum)" = \
          "$(yes "range $i" | head -c 1048576 | md5sum)" ] || exit 1
    done'

check readdir_many 'mkdir $M/many && for i in $(seq 1 300); do : > $M/many/f$i; done &&
    [ "$(ls $M/many | wc -l)" = 300 ] && [ "$(ls $M/many | sort | head -n 1)" = f1 ]'

result tree "$(cd $M && find . | sort)"
result files "$(cd $M && find . -type f | sort | while read -r f; do stat -c '%n %a %s %h' "$f"; done)"
result dirs "$(cd $M && find . -type d | sort | while read -r f; do stat -c '%n %a' "$f"; done)"
result links "$(cd $M && find . -type l | sort | while read -r f; do echo "$f -> $(readlink "$f")"; done)"

# Errors must be the same errors as the reference's.
result err_enoent "$(cat $M/missing 2>&1)"
result err_enotdir "$(mkdir $M/renamed/x 2>&1)"
result err_eexist "$(mkdir $M/d1 2>&1)"
result err_enotempty "$(rmdir $M/d1 2>&1)"
result err_eisdir "$(sh -c "echo x > $M/d1" 2>&1)"
result err_rename_dir_over_file "$(mv $M/d1 $M/dst 2>&1 | sed 's/^mv: //')"

check statfs 'df $M >/dev/null && [ "$(stat -f -c %b $M)" -gt 0 ] && [ "$(stat -f -c %S $M)" -gt 0 ]'
check rm_rf_tree 'rm -rf $M/d1 $M/many && [ ! -e $M/d1 ] && [ ! -e $M/many ]'
check rm_rf_all 'rm -rf $M/* && [ -z "$(ls -A $M)" ]'
check umount "umount $M && ! grep -q ' $M ' /proc/mounts"
