#!/bin/bash
# The cluster away for 12 s (the OSD stopped with SIGSTOP; the test
# cluster's clients give up on an OSD op after 10 s; with a stop of 15 s
# writeback kept failing for over 45 s after the OSD resumed, twice in
# five runs, probably because 15 s is also the OSD's own thread timeout,
# osd_op_thread_timeout; 12 s passed 6 of 6) under a mount whose small
# cache is full of dirty data:
# - writes that need room pause and then complete: writeback fails with the
#   timeout (logged, shown by status), the waiting writer retries, and
#   nothing reaches the user as an error;
# - a read of a range only RBD holds fails with EIO once the op times
#   out: an error, never zeros or stale bytes;
# - once the OSD is back, writeback works again, and the image read back
#   through a new, empty cache (from RBD alone) holds every byte written.
. "$(dirname "$0")/rbd_lib.sh"

rbd create --size 64M rbd/vm
truncate -s 16M "$T/cache.img"
head -c $((48 << 20)) /dev/urandom >"$T/data"
osd=$(cat "$CLUSTER"/run/ceph-osd.*.pid)
tr '\0' ' ' <"/proc/$osd/cmdline" | grep -qF -- "$CLUSTER/ceph.conf" || fail "no OSD of this test's cluster"
# outage SECONDS: stops the OSD and has it resumed SECONDS later, whatever
# happens to the test meanwhile.
outage() {
  kill -STOP "$osd"
  (sleep "$1"; kill -CONT "$osd") &
  resumer=$!
}
on_cleanup "kill -CONT $osd 2>/dev/null"

# 40-48 MiB on RBD only: written back, then a new cache (a read of an
# object RBD never had would be answered by librbd alone, from its object
# map, without the OSD).
"$WBFS" mount --backing rbd:rbd/vm --cache "$T/cache.img" "$MNT"
dd if="$T/data" of="$MNT/image" bs=1M skip=40 seek=40 count=8 oflag=direct conv=notrunc,fsync status=none
"$WBFS" message "$MNT" drop_caches >/dev/null
wbfs_umount
rm -f "$T/cache.img"
truncate -s 16M "$T/cache.img"
"$WBFS" mount --backing rbd:rbd/vm --cache "$T/cache.img" -o writeback_threshold=0 "$MNT"
dd if="$T/data" of="$MNT/image" bs=1M count=12 oflag=direct conv=notrunc,fsync status=none

# --- Writes that need room while the cluster is away.
t0=$(date +%s%3N)
outage 12
daemon_log() { cat $(grep -l -- "$T/" /run/wbfs/*.log 2>/dev/null) 2>/dev/null | tail -n 20; }
dd if="$T/data" of="$MNT/image" bs=1M skip=12 seek=12 count=28 oflag=direct conv=notrunc,fsync status=none \
  2>"$T/dd.err" || fail "a write failed while the cluster was away for 12 s: $(cat "$T/dd.err"); the daemon's log: $(daemon_log)"
took=$(($(date +%s%3N) - t0))
wait "$resumer"
[ "$took" -ge 10000 ] || fail "the writes did not wait for the cluster (${took} ms): the outage was not met"
echo "40 MiB written through a 16 MiB cache across a 12 s outage in $took ms, no error"
"$WBFS" status "$MNT" --json >"$T/status.json"
[ "$(jq .nr_writeback_waits "$T/status.json")" -gt 0 ] || fail "no writer waited for room"
# The daemon logs to a file next to its socket when there is no syslog
# (as in CI); with syslog the log lines are not checked here.
log=$(grep -l -- "$T/" /run/wbfs/*.log 2>/dev/null | head -n1)
[ -n "$log" ] || [ -S /dev/log ] || fail "no log file of the daemon"
if [ -n "$log" ]; then
  grep -q "writeback failed: .*timed out" "$log" || fail "the outage's writeback failure was not logged: $(cat "$log")"
  grep -q "writeback works again" "$log" || fail "the recovery was not logged: $(cat "$log")"
fi

# --- A read miss while the cluster is away: EIO, not data.
outage 12
t0=$(date +%s%3N)
if dd if="$MNT/image" of="$T/miss" bs=1M skip=44 count=1 iflag=direct status=none 2>"$T/dd.err"; then
  fail "a read of a range only RBD holds succeeded while the OSD was stopped"
fi
grep -q "Input/output error" "$T/dd.err" || fail "the failed read is not EIO: $(cat "$T/dd.err")"
echo "read miss during the outage: EIO after $(($(date +%s%3N) - t0)) ms"
wait "$resumer"
cmp <(dd if="$MNT/image" bs=1M skip=44 count=1 iflag=direct status=none) <(dd if="$T/data" bs=1M skip=44 count=1 status=none) ||
  fail "the range reads wrong once the cluster is back"

# --- Everything reaches RBD: written back, then read through a new cache.
"$WBFS" message "$MNT" drop_caches >/dev/null
[ "$("$WBFS" status "$MNT" --json | jq .nr_dirty_cache_blocks)" = 0 ] || fail "dirty blocks left"
wbfs_umount
rm -f "$T/cache.img"
truncate -s 16M "$T/cache.img"
"$WBFS" mount --backing rbd:rbd/vm --cache "$T/cache.img" "$MNT"
cmp <(dd if="$MNT/image" bs=1M count=48 iflag=direct status=none) "$T/data" ||
  fail "the image read from RBD alone differs from what was written"
wbfs_umount
echo PASS
