#!/bin/bash
# The supervisor's limits (src/cli/supervisor.h):
#  1. a daemon that dies at every start (a test switch) ends in a clean
#     abort within restart_limit restarts: the supervisor exits, and I/O
#     on the image fails at once instead of hanging; the cache is left as
#     after a crash (the next mount replays it, data fsynced before intact);
#  2. restart_limit=0: no supervisor, status says so, and a dead daemon
#     ends the mount as before;
#  3. the supervisor killed: the daemon goes on serving.
source "$(dirname "$0")/lib.sh"
command -v jq >/dev/null || skip "needs jq"
on_cleanup 'grep -l -- "$T/" /run/wbfs/*.log 2>/dev/null | xargs -r tail -n 20 >&2'
mk_files 64 32
head -c $((1 << 20)) /dev/urandom >"$T/data"

# --- 1. A crash loop.
WBFS_TEST_CRASH_AT_TAKEOVER=1 wbfs_mount -o restart_limit=3,restart_interval=60
dd if="$T/data" of="$MNT/image" bs=64k conv=notrunc,fsync status=none
sup=$(supervisor_pid)
[ -n "$sup" ] || fail "no supervisor"
start=$(date +%s%N)
kill_daemon_only
for _ in $(seq 1 200); do kill -0 "$sup" 2>/dev/null || break; sleep 0.05; done
kill -0 "$sup" 2>/dev/null && fail "the supervisor still runs 10 s into a crash loop"
ms=$((($(date +%s%N) - start) / 1000000))
log=$(grep -l -- "$MNT" /run/wbfs/*.log | head -n1)
grep -q "4 crashes within 60 s (restart_limit 3): giving up" "$log" || { cat "$log"; fail "the log does not say why it gave up"; }
[ "$(grep -c "starting .* on the same connection" "$log")" = 3 ] || { cat "$log"; fail "not exactly 3 restarts"; }
# I/O fails now rather than hanging.
rc=0
timeout 10 dd if="$MNT/image" of=/dev/null bs=4k count=1 iflag=direct status=none 2>/dev/null || rc=$?
[ "$rc" != 0 ] || fail "a read of the aborted mount succeeded"
[ "$rc" != 124 ] || fail "a read of the aborted mount hung"
echo "crash loop: gave up after 3 restarts in $ms ms; I/O fails with exit $rc"
umount -l "$MNT"
# As after a crash: the next mount replays the cache.
wbfs_mount
cmp -n $((1 << 20)) "$T/data" "$MNT/image" || fail "fsynced data lost after the crash loop"
wbfs_umount

# --- 2. restart_limit=0: no supervisor. (The last mount's daemon and
# supervisor may still be exiting after its umount: wait for them first,
# or supervisor_pid finds them.)
for _ in $(seq 1 100); do pgrep -f -- "wbfs mount .*$T" >/dev/null || break; sleep 0.1; done
wbfs_mount -o restart_limit=0
[ -z "$(supervisor_pid)" ] || fail "restart_limit=0 started a supervisor"
"$WBFS" status "$MNT" --json | jq -r .no_supervisor | grep -q "restart_limit is 0" ||
  fail "status does not say why there is no supervisor"
kill -9 "$(daemon_pid)"
sleep 0.5
rc=0
timeout 10 dd if="$MNT/image" of=/dev/null bs=4k count=1 iflag=direct status=none 2>/dev/null || rc=$?
[ "$rc" != 0 ] && [ "$rc" != 124 ] || fail "without a supervisor, a dead daemon did not end the mount (rc $rc)"
umount -l "$MNT"

# --- 3. The supervisor killed: the daemon serves on.
wbfs_mount
sup=$(supervisor_pid)
pid=$(daemon_pid)
kill -9 "$sup"
wait_gone "$sup"
dd if="$T/data" of="$MNT/image" bs=64k seek=64 conv=notrunc,fsync status=none
cmp -n $((1 << 20)) "$T/data" <(dd if="$MNT/image" bs=64k skip=64 count=16 status=none) ||
  fail "the daemon stopped serving when its supervisor died"
kill -0 "$pid" || fail "the daemon died with its supervisor"
wbfs_umount
echo PASS
