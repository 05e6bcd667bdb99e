#!/bin/bash
# The mount shows one file; it cannot be created, removed, renamed,
# truncated or extended; random aligned and unaligned writes (buffered and
# O_DIRECT) read back right, also after a remount; a workload many times
# the cache size wraps the log.
. "$(dirname "$0")/lib.sh"

mk_files 128 8
wbfs_mount
[ "$(ls "$MNT")" = image ] || fail "the mount holds: $(ls "$MNT")"
[ "$(stat -c %a "$MNT/image")" = 600 ] || fail "image mode is $(stat -c %a "$MNT/image")"
[ "$(stat -c %s "$MNT/image")" = $((128 << 20)) ] || fail "image size"

touch "$MNT/new" 2>/dev/null && fail "created a file"
rm -f "$MNT/image" 2>/dev/null && fail "removed the image"
mv "$MNT/image" "$MNT/other" 2>/dev/null && fail "renamed the image"
truncate -s 1M "$MNT/image" 2>/dev/null && fail "truncated the image"
mkdir "$MNT/d" 2>/dev/null && fail "made a directory"
out=$(dd if=/dev/zero of="$MNT/image" bs=4096 seek=$((128 << 8)) count=1 conv=notrunc 2>&1) && fail "wrote past the end"
echo "$out" | grep -q "No space left on device" || fail "past-end write: $out"
[ "$(stat -c %s "$MNT/image")" = $((128 << 20)) ] || fail "the image size changed"

# Unaligned buffered I/O (any byte), then 512-aligned O_DIRECT, then 4 KiB.
"$WBFS_TESTIO" random "$MNT/image" 1 3000 70000 1 0 "$T/model1"
"$WBFS_TESTIO" random "$MNT/image" 2 3000 300000 512 1 "$T/model2"
# ~600 MiB of writes through an 8 MiB cache: the log wraps many times.
"$WBFS_TESTIO" random "$MNT/image" 3 1500 1048576 4096 1 "$T/model3"
wbfs_umount
wbfs_mount
cmp "$MNT/image" "$T/model3" || fail "image differs from the model after remount"
wbfs_umount
echo PASS
