#!/bin/bash
# kill -9 of the daemon while a writer fsyncs after every 4 KiB block: the
# next mount replays the log and every fsynced block is there. A write to a
# file opened O_DSYNC is as durable when it returns, with no fsync.
. "$(dirname "$0")/lib.sh"

mk_files 64 16
for round in 1 2 3; do
  wbfs_mount
  pid=$(daemon_pid)
  [ -n "$pid" ] || fail "no daemon"
  "$WBFS_TESTIO" seqsync "$MNT/image" "$round" "$T/state" &
  writer=$!
  sleep 1.5
  kill_daemon
  wait "$writer" || true
  n=$(cat "$T/state")
  [ "$n" -gt 0 ] || fail "the writer made no progress"
  "$WBFS" umount "$MNT"   # a dead daemon's mount
  wbfs_mount
  "$WBFS_TESTIO" seqcheck "$MNT/image" "$round" "$T/state" || fail "round $round lost fsynced data"
  wbfs_umount
done

wbfs_mount
head -c 8192 /dev/urandom >"$T/sync.ref"
dd if="$T/sync.ref" of="$MNT/image" bs=4096 seek=1000 oflag=dsync conv=notrunc status=none
kill_daemon
"$WBFS" umount "$MNT"
wbfs_mount
dd if="$MNT/image" of="$T/sync.got" bs=4096 skip=1000 count=2 status=none
cmp "$T/sync.got" "$T/sync.ref" || fail "an O_DSYNC write was lost by kill -9"
wbfs_umount
echo PASS
