#!/bin/bash
# Background writeback and the control channel: a verified random-write
# load many times the cache (a few segments) with writeback_threshold=100
# loses nothing; after drop_caches and umount the backing alone equals the
# image; every tunable through -o, the config file and message, with
# out-of-range values refused; counters move and clear_stat zeroes them.
. "$(dirname "$0")/lib.sh"

command -v jq >/dev/null || skip "needs jq"
mk_files 64 4   # 4 MiB cache: 6 segments
json() { "$WBFS" status "$MNT" --json | jq -r "$1"; }

cat >"$T/wbfs.json" <<EOJ
{"backing": "$T/backing.img", "cache": "$T/cache.img", "mountpoint": "$MNT",
 "writeback_threshold": 100, "nr_max_batched_writeback": 8, "update_sb_record_interval": 1}
EOJ
"$WBFS" mount --config "$T/wbfs.json" -o nr_max_batched_writeback=4,sync_data_interval=2
[ "$(json ".tunables.writeback_threshold")" = 100 ] || fail "config tunable not applied"
[ "$(json ".tunables.nr_max_batched_writeback")" = 4 ] || fail "-o did not override the config"
[ "$(json ".tunables.sync_data_interval")" = 2 ] || fail "-o tunable not applied"
pid=$(json ".pid")
[ "$pid" = "$(daemon_pid)" ] || fail "status pid $pid is not the daemon"

# ~200 MiB of 4 KiB-aligned O_DIRECT writes over the 64 MiB image, checked as it goes.
"$WBFS_TESTIO" random "$MNT/image" 7 800 524288 4096 1 "$T/model"
[ "$(json ".backing_bytes_written > 0")" = true ] || fail "nothing was written back"
[ "$(json ".stat.write_miss_cache_full > 0")" = true ] || fail "counters did not move"
"$WBFS" message "$MNT" drop_caches >"$T/drop.out" || fail "drop_caches failed: $(cat "$T/drop.out")"
grep -q "every dirty block is on the backing" "$T/drop.out" || fail "drop_caches: $(cat "$T/drop.out")"
[ "$(json ".nr_dirty_cache_blocks")" = 0 ] || fail "dirty blocks remain"

# Online tunables, refused values, clear_stat.
"$WBFS" message "$MNT" writeback_threshold 30
"$WBFS" message "$MNT" nr_max_batched_writeback 32
"$WBFS" message "$MNT" update_sb_record_interval 0
"$WBFS" message "$MNT" sync_data_interval 0
[ "$(json ".tunables.writeback_threshold")" = 30 ] || fail "message did not set the tunable"
expect_exit 2 "writeback_threshold must be between 0 and 100" "$WBFS" message "$MNT" writeback_threshold 101
expect_exit 2 "nr_max_batched_writeback must be between 1 and 32" "$WBFS" message "$MNT" nr_max_batched_writeback 0
expect_exit 2 "not an integer" "$WBFS" message "$MNT" sync_data_interval soon
expect_exit 2 "cannot be changed on a mounted cache" "$WBFS" message "$MNT" write_around_mode 1
expect_exit 2 "unknown tunable" "$WBFS" message "$MNT" bogus 1
expect_exit 2 "unknown message" "$WBFS" message "$MNT" drop_everything
"$WBFS" message "$MNT" clear_stat
[ "$(json "[.stat[]] | add")" = 0 ] || fail "clear_stat left counters"
"$WBFS" status "$MNT" >"$T/status.txt"
grep -q "dirty blocks *0 " "$T/status.txt" || fail "human status: $(cat "$T/status.txt")"
wbfs_umount

# The backing alone is the image.
cmp "$T/backing.img" "$T/model" || fail "the backing differs from the image after drop_caches"

# sync_data_interval makes an unflushed write durable on its own.
wbfs_mount -o sync_data_interval=1
echo "data without fsync" | dd of="$MNT/image" bs=4096 seek=100 conv=notrunc,sync status=none
sleep 2.5
kill_daemon
"$WBFS" umount "$MNT"
wbfs_mount
head -c 18 <(dd if="$MNT/image" bs=4096 skip=100 count=1 status=none) | grep -q "data without fsync" ||
  fail "sync_data_interval did not make the write durable"
wbfs_umount
echo PASS
