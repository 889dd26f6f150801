# Run by two guests at once on the same shared directories (one per device kind). The host
# prepends ME (A or B), PEER, LEADER (1 for A) and DEVICES ("tag:locks" words; locks=1 runs the
# POSIX lock scenario). Guests coordinate through marker files in the shared directory itself
# (new names: a lookup of a name a guest never saw always reaches the server), with waits
# bounded by T. guesttool (tests/usecases/guesttool.c) does the timing-sensitive parts.
T=120000          # ms any wait for the other guest may take (TCG on a busy host)
BOOT_SKEW=600000  # ms the first barrier waits: the other guest may boot much later
ROUNDS=6          # close-to-open rounds
HOPS=20           # marker ping-pong rounds
APPENDS=200       # O_APPEND lines per guest
FILES=25          # files per guest in the listing scenario

step() {  # step NAME CMD...: CHECK NAME ok + RESULT NAME <stdout>, or CHECK NAME fail
    _n=$1; shift
    if _o=$("$@" 2>&1); then echo "CHECK $_n ok"; result "$_n" "$_o"
    else echo "CHECK $_n fail rc=$? $(echo "$_o" | tr '\n' '|' | cut -c1-300)"; fi
}
now_cs() { read -r _up _idle < /proc/uptime; NOW=${_up%.*}${_up#*.}; }
barrier() {  # barrier NAME [TIMEOUT_MS]: both guests reach NAME on this device
    : > "$M/bar/$1.$ME" && /tmp/gt wait "$M/bar/$1.$PEER" "${2:-$T}" \
        || echo "CHECK $D.barrier-$1 fail"
}
poll_until() {  # poll_until NAME SECONDS 'test': CHECK NAME, RESULT NAME-cs (time it took)
    now_cs; _start=$NOW; _limit=$((_start + $2 * 100))
    while ! eval "$3" >/dev/null 2>&1; do
        now_cs
        if [ "$NOW" -gt "$_limit" ]; then echo "CHECK $1 fail not within $2 s"; return 1; fi
        usleep 20000
    done
    now_cs; echo "CHECK $1 ok"; result "$1-cs" "$((NOW - _start))"
}

expected_listing() {
    for _g in A B; do _i=0; while [ $_i -lt $FILES ]; do _i=$((_i + 1)); echo "$_g.$_i"; done; done \
        | sort | tr '\n' ' '
}

scenario_visibility() {
    if [ "$LEADER" = 1 ]; then
        step "$D.hop" /tmp/gt pingpong "$M/hop" "$ME" "$PEER" $HOPS 1 $T
        step "$D.c2o-writer" /tmp/gt writer "$M/c2o/data" "$M/c2o" $ROUNDS $T
    else
        step "$D.hop-peer" /tmp/gt pingpong "$M/hop" "$ME" "$PEER" $HOPS 0 $T
        step "$D.c2o-reader" /tmp/gt reader "$M/c2o/data" "$M/c2o" $ROUNDS $T
    fi
}

scenario_append() {
    barrier append
    _i=0
    while [ $_i -lt $APPENDS ]; do _i=$((_i + 1)); echo "$ME append $_i" >> "$M/append/log"; done
    barrier appended
    poll_until "$D.append-seen-$ME" 15 "[ \$(wc -l < $M/append/log) -eq $((2 * APPENDS)) ]"
}

scenario_lock() {
    barrier lock
    if [ "$LEADER" = 1 ]; then
        /tmp/gt lock "$M/lock/file" "$ME" 3000 > /tmp/lock.out 2>&1 &
        _pid=$!
        poll_until "$D.lock-held" 60 "grep -q got /tmp/lock.out"
        : > "$M/lock/held"
        wait $_pid
        _rc=$?
        if [ $_rc = 0 ]; then echo "CHECK $D.lock-$ME ok"; else echo "CHECK $D.lock-$ME fail rc=$_rc"; fi
        result "$D.lock-$ME" "$(tr '\n' ' ' < /tmp/lock.out)"
    else
        /tmp/gt wait "$M/lock/held" $T || echo "CHECK $D.lock-held-seen fail"
        /tmp/gt trylock "$M/lock/file"
        result "$D.trylock-while-held" "rc=$?"
        step "$D.lock-$ME" /tmp/gt lock "$M/lock/file" "$ME" 0
    fi
    barrier locked
}

scenario_listing() {
    barrier list
    _i=0
    while [ $_i -lt $FILES ]; do _i=$((_i + 1)); : > "$M/list/$ME.$_i"; done
    barrier listed
    _want=$(expected_listing)
    poll_until "$D.list-full-$ME" 15 "[ \"\$(ls $M/list | sort | tr '\n' ' ')\" = \"$_want\" ]"
    barrier checked
    rm -f "$M/list/$ME".*
    barrier removed
    poll_until "$D.list-empty-$ME" 15 "[ -z \"\$(ls $M/list)\" ]"
}

first=""
for spec in $DEVICES; do
    tag=${spec%%:*}
    mkdir -p "/mnt/$tag"
    check "$tag.mount-$ME" "mount -t virtiofs $tag /mnt/$tag"
    [ -n "$first" ] || first=$tag
done
cp "/mnt/$first/.tools/guesttool" /tmp/gt && chmod 755 /tmp/gt || echo "CHECK guesttool fail"

for spec in $DEVICES; do
    D=${spec%%:*}; M=/mnt/$D
    barrier start $BOOT_SKEW
    scenario_visibility
    scenario_append
    [ "${spec#*:}" = 1 ] && scenario_lock
    scenario_listing
    barrier done
    echo "DEVICE-DONE $D"
done
for spec in $DEVICES; do umount "/mnt/${spec%%:*}"; done
