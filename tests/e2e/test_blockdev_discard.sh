#!/bin/bash
# Discard with a block-device backing: once writeback has applied a
# discard, wbfs drops its zero overlay, so the backing itself must read
# zeros there. BLKDISCARD does not promise that (a disk may ignore a
# discard or apply it lazily and keep the old data readable); a loop
# device happens to zero (it punches its file), so the daemon runs with a
# preload that makes BLKDISCARD succeed without doing anything, the way
# such a disk behaves. wbfs must zero the range by other means
# (fallocate PUNCH_HOLE, which guarantees zeros on a block device).
source "$(dirname "$0")/lib.sh"
LAZY=${WBFS_LAZY_DISCARD:?set WBFS_LAZY_DISCARD to the lazy-discard preload library}

MiB=1048576
head -c $((64 * MiB)) /dev/urandom >"$T/backing.img"  # written: no holes
truncate -s 32M "$T/cache.img"
loop_attach_file "$T/backing.img"
BDEV=$LOOPDEV

ASAN_OPTIONS="${ASAN_OPTIONS:+$ASAN_OPTIONS:}verify_asan_link_order=0" LD_PRELOAD="$LAZY" \
  "$WBFS" mount --backing "$BDEV" --cache "$T/cache.img" --journal "$T/journal" \
  -o writeback_threshold=0 "$MNT"
pid=$(daemon_pid)
grep -q "$(basename "$LAZY")" "/proc/$pid/maps" || fail "the daemon runs without the lazy-discard preload"

# 8 MiB of new data at 4 MiB, written back to the block device.
head -c $((8 * MiB)) /dev/urandom >"$T/data"
dd if="$T/data" of="$MNT/image" bs=1M seek=4 conv=notrunc,fsync status=none
"$WBFS" message "$MNT" drop_caches >/dev/null
cmp <(dd if="$BDEV" bs=1M skip=4 count=8 iflag=direct status=none) "$T/data" ||
  fail "writeback did not reach the block device"

# Discard 2 MiB in the middle of it, then write it back: the discard is
# applied to the backing and the engine forgets it.
fallocate -p -o $((6 * MiB)) -l $((2 * MiB)) "$MNT/image"
"$WBFS" message "$MNT" drop_caches >/dev/null
[ "$("$WBFS" status "$MNT" --json | jq .pending_discards)" = 0 ] || fail "the discard is still pending"
zeros=$(head -c $((2 * MiB)) /dev/zero | sha256sum)
[ "$(dd if="$MNT/image" bs=1M skip=6 count=2 iflag=direct status=none | sha256sum)" = "$zeros" ] ||
  fail "the image does not read zeros where it was discarded"
wbfs_umount

# The backing alone: zeros in the discarded range, the data around it.
[ "$(dd if="$BDEV" bs=1M skip=6 count=2 iflag=direct status=none | sha256sum)" = "$zeros" ] ||
  fail "the block device does not read zeros where the image was discarded"
loop_detach "$BDEV"
[ "$(dd if="$T/backing.img" bs=1M skip=6 count=2 status=none | sha256sum)" = "$zeros" ] ||
  fail "the loop device's file does not read zeros where the image was discarded"
cmp <(dd if="$T/backing.img" bs=1M skip=4 count=2 status=none) <(head -c $((2 * MiB)) "$T/data") ||
  fail "data before the discarded range changed"
cmp <(dd if="$T/backing.img" bs=1M skip=8 count=4 status=none) <(tail -c $((4 * MiB)) "$T/data") ||
  fail "data after the discarded range changed"

# The same mount again, now from the block device alone: zeros.
loop_attach_file "$T/backing.img"
BDEV=$LOOPDEV
"$WBFS" mount --backing "$BDEV" --cache "$T/cache.img" --journal "$T/journal" -o writeback_threshold=0 "$MNT"
[ "$(dd if="$MNT/image" bs=1M skip=6 count=2 iflag=direct status=none | sha256sum)" = "$zeros" ] ||
  fail "after a remount the image does not read zeros where it was discarded"
wbfs_umount
loop_detach "$BDEV"
echo PASS
