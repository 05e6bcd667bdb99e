#!/bin/bash
# kill -9 of the daemon while a writer fsyncs after every 4 KiB block: the
# next mount replays the log and every fsynced block is there.
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
echo PASS
