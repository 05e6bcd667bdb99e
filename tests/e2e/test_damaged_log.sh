#!/bin/bash
# A cache whose log lost a synced chunk in the middle (bytes flipped in a
# chunk header of a real cache file): check reports it, mount and offline
# writeback refuse it and change neither file, and --accept-loss writes
# back what survives, rolls the image back to the last intact flush point
# and leaves a log that mounts plainly afterwards. Pending discards are
# dirty state to check and format.
. "$(dirname "$0")/lib.sh"
command -v jq >/dev/null || skip "needs jq"

mk_files 64 64
sums() { sha256sum "$T/backing.img" "$T/cache.img"; }
# 24 flush points of 1 MiB each, left dirty in the cache by a kill -9.
wbfs_mount -o writeback_threshold=0
head -c $((24 << 20)) /dev/urandom >"$T/ref"
dd if="$T/ref" of="$MNT/image" bs=1M oflag=direct,dsync conv=notrunc status=none
kill_daemon
"$WBFS" umount "$MNT"
cp "$T/cache.img" "$T/cache.orig"
cp "$T/backing.img" "$T/backing.orig"
nseg=$("$WBFS" check "$T/cache.img" --json | jq '.segments | length')
[ "$nseg" -ge 40 ] || fail "expected a well-filled log, got $nseg segments"
# Damage the first chunk header of a segment in the middle of the log.
mid=$("$WBFS" check "$T/cache.img" --json | jq ".segments[$((nseg / 2))].offset")
damage() { printf '\x5a\xa5' | dd of="$T/cache.img" bs=1 seek=$((mid + 200)) conv=notrunc status=none; }
damage
before=$(sums)

rc=0
"$WBFS" check "$T/cache.img" >"$T/check.out" || rc=$?
[ "$rc" = 1 ] || fail "check exited $rc on a damaged log: $(cat "$T/check.out")"
grep -q "records it as synced" "$T/check.out" || fail "check: $(cat "$T/check.out")"

expect_exit 1 "accept-loss" wbfs_mount
[ "$(sums)" = "$before" ] || fail "a refused mount changed the files"
grep -q "records it as synced" "$T/stderr" || fail "mount: $(cat "$T/stderr")"
wb() { "$WBFS" writeback --backing "$T/backing.img" --cache "$T/cache.img" "$@"; }
expect_exit 1 "accept-loss" wb
[ "$(sums)" = "$before" ] || fail "a refused writeback changed the files"

# Offline writeback with --accept-loss: the backing is the image up to the
# last flush point before the damage: a prefix of ref, zeros after it.
wb --accept-loss >"$T/wb.out" 2>"$T/wb.err" || fail "writeback --accept-loss: $(cat "$T/wb.err")"
grep -q "rolled back to flush point chunk seq" "$T/wb.err" || fail "no rollback line: $(cat "$T/wb.err")"
cmp -n $((1 << 20)) "$T/ref" "$T/backing.img" || fail "the first flush point is not on the backing"
last=$(head -c $((24 << 20)) "$T/backing.img" | tail -c $((1 << 20)) | tr -d '\0' | head -c 1 | wc -c)
[ "$last" = 0 ] || fail "data from after the damage reached the backing"
"$WBFS" check "$T/cache.img" >"$T/check.out" || fail "check after accepting: $(cat "$T/check.out")"
grep -q " 0 dirty" "$T/check.out" || fail "dirty blocks left: $(cat "$T/check.out")"
# The restarted log mounts without --accept-loss and reads the same image.
wbfs_mount -o writeback_threshold=0
cmp -n $((24 << 20)) "$MNT/image" "$T/backing.img" || fail "the image differs from the backing"
wbfs_umount

# The same through mount --accept-loss.
cp "$T/cache.orig" "$T/cache.img"
cp "$T/backing.orig" "$T/backing.img"
damage
wbfs_mount -o writeback_threshold=0 --accept-loss
[ "$("$WBFS" status "$MNT" --json | jq .dropped_chunks)" -gt 0 ] || fail "status: no dropped chunks"
cmp -n $((1 << 20)) "$T/ref" "$MNT/image" || fail "mount --accept-loss lost the first flush point"
echo extra | dd of="$MNT/image" bs=1 seek=$((30 << 20)) conv=notrunc,fsync status=none
wbfs_umount
wbfs_mount -o writeback_threshold=0
[ "$(dd if="$MNT/image" bs=1 skip=$((30 << 20)) count=5 status=none)" = extra ] || fail "write after accepting lost"
wbfs_umount

# A discard not yet applied to the backing is dirty state for the offline
# tools: check counts it and format refuses the cache.
wbfs_mount -o writeback_threshold=0
"$WBFS" message "$MNT" drop_caches
for _ in $(seq 1 100); do
  [ "$("$WBFS" status "$MNT" --json | jq '.nr_dirty_cache_blocks + .pending_discards')" = 0 ] && break
  sleep 0.1
done
fallocate -p -o 0 -l $((1 << 20)) "$MNT/image"
[ "$("$WBFS" status "$MNT" --json | jq .pending_discards)" -gt 0 ] || fail "no pending discard"
wbfs_umount
[ "$("$WBFS" check "$T/cache.img" --json | jq .nr_pending_discards)" -gt 0 ] || fail "check: no pending discards"
cp "$T/cache.img" "$T/cache.before"
expect_exit 1 "discards that are not on the backing" "$WBFS" format "$T/cache.img"
cmp -s "$T/cache.img" "$T/cache.before" || fail "a refused format changed the cache"
echo "PASS"
