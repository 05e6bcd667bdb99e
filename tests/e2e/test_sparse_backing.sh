#!/bin/bash
# A sparse backing (README's `truncate -s`): writeback's gap filling must
# not allocate the backing's holes. Scattered 4 KiB writes over a 256 MiB
# sparse backing, drop_caches: the backing holds the image and has only
# about the written blocks allocated (gap filling across the holes once
# allocated nearly all of it).
source "$(dirname "$0")/lib.sh"

# 3000 scattered 4 KiB writes on a new 64 MiB cache, all written back;
# sets fill (the gap bytes writeback rewrote) and checks the backing.
scattered_writeback() {
  truncate -s 64M "$T/cache.img"
  wbfs_mount -o writeback_threshold=0
  "$WBFS_TESTIO" random "$MNT/image" 13 3000 4096 4096 1 "$T/model" >/dev/null
  "$WBFS" message "$MNT" drop_caches >/dev/null
  fill=$("$WBFS" status "$MNT" --json | jq .backing_fill_bytes)
  wbfs_umount
  cmp "$T/backing.img" "$T/model" || fail "the $1 backing differs from the image"
}

truncate -s 256M "$T/backing.img"
scattered_writeback sparse
# 3000 writes of 4 KiB: at most ~11.7 MiB of data; allow 2 MiB of slack
# (file system metadata, blocks larger than 4 KiB).
kib=$(du -k "$T/backing.img" | cut -f1)
echo "backing allocated: $kib KiB; gaps filled: $fill bytes"
[ "$kib" -le $((3000 * 4 + 2048)) ] || fail "the backing has $kib KiB allocated: writeback filled its holes"

# A fallocated backing (unwritten extents: SEEK_HOLE calls them holes on
# ext4, but writing them allocates nothing) keeps its gap filling: the
# scattered writes are still joined into windows.
rm -f "$T/backing.img" "$T/backing.img.wbfs-journal" "$T/cache.img" "$T/model"
if fallocate -l 256M "$T/backing.img" 2>/dev/null; then
  scattered_writeback fallocated
  echo "fallocated backing: gaps filled: $fill bytes"
  [ "$fill" -gt 0 ] || fail "no gap was filled on a fallocated backing"
fi
echo PASS
