#!/bin/bash
# Read caching, write-around and discard through a real mount: re-reads of
# backing-only data become cache hits with read_cache_threshold > 0 and
# not with 0; a sequential scan longer than the threshold is not staged;
# write-around changes the backing without drop_caches; fstrim on ext4 on
# a loop device zeroes the freed blocks, also after a remount, and e2fsck
# stays clean.
. "$(dirname "$0")/lib.sh"
command -v jq >/dev/null || skip "needs jq"
command -v filefrag >/dev/null || skip "needs e2fsprogs (filefrag)"

json() { "$WBFS" status "$MNT" --json | jq -r "$1"; }
hits() { json '.stat.read_hit_cache_full + .stat.read_hit_buffer_full'; }
scattered_reads() {  # 200 single-block O_DIRECT reads, 9 blocks apart
  for i in $(seq 0 199); do
    dd if="$MNT/image" of=/dev/null bs=4096 skip=$((i * 9)) count=1 iflag=direct status=none
  done
}
wait_staged() {
  for _ in $(seq 1 100); do [ "$(json .nr_staging)" = 0 ] && return; sleep 0.05; done
  fail "staging did not settle"
}

mk_files 256 32
head -c $((16 << 20)) /dev/urandom >"$T/seed"
dd if="$T/seed" of="$T/backing.img" conv=notrunc status=none   # backing-only data

# Threshold 0: no staging, no hits.
wbfs_mount
scattered_reads
scattered_reads
[ "$(hits)" = 0 ] || fail "hits with read_cache_threshold 0"
[ "$(json .nr_staged_blocks)" = 0 ] || fail "staged with read_cache_threshold 0"

# Threshold 4: the first pass stages, the second hits.
"$WBFS" message "$MNT" read_cache_threshold 4
scattered_reads
wait_staged
[ "$(json .nr_staged_blocks)" = 200 ] || fail "staged $(json .nr_staged_blocks) blocks, expected 200"
"$WBFS" message "$MNT" clear_stat
scattered_reads
[ "$(hits)" = 200 ] || fail "$(hits) hits on the second pass, expected 200"
[ "$(json .nr_dirty_cache_blocks)" = 0 ] || fail "staged blocks must be clean"

# A 16 MiB sequential scan (1 MiB reads) is not staged.
before=$(json .nr_staged_blocks)
dd if="$MNT/image" of=/dev/null bs=1M skip=64 count=16 iflag=direct status=none
# and a scan in 4 KiB reads, from one process: with a dd per block, a
# loaded machine left more than read_stage_delay_ms (50 ms) between two
# reads, and the scan's first block was injected before the run showed.
dd if="$MNT/image" of=/dev/null bs=4096 skip=40000 count=64 iflag=direct status=none
wait_staged
staged=$(( $(json .nr_staged_blocks) - before ))
[ "$staged" = 0 ] || fail "a sequential scan staged $staged blocks"
cmp -n $((16 << 20)) "$T/seed" "$MNT/image" || fail "cached reads returned other data"
wbfs_umount

# Write-around: the backing changes at once, no drop_caches needed.
wbfs_mount -o write_around_mode=1,read_cache_threshold=4
scattered_reads
wait_staged
head -c 8192 /dev/urandom >"$T/wa"
dd if="$T/wa" of="$MNT/image" bs=4096 seek=9 conv=notrunc,fsync status=none   # over staged block 9
cmp -n 8192 "$T/wa" <(dd if="$T/backing.img" bs=4096 skip=9 count=2 status=none) ||
  fail "write-around did not reach the backing"
cmp -n 8192 "$T/wa" <(dd if="$MNT/image" bs=4096 skip=9 count=2 iflag=direct status=none) ||
  fail "a stale cached copy was read after a write-around write"
[ "$(json .nr_dirty_cache_blocks)" = 0 ] || fail "write-around left dirty blocks"
wbfs_umount

# fstrim on ext4 on a loop device.
wbfs_mount
loop_attach
dev=$LOOPDEV
mkfs.ext4 -q -F -E nodiscard "$dev"
mkdir -p "$T/fs"
mount "$dev" "$T/fs"
_mounts+=("$T/fs")
for i in 1 2 3 4; do head -c $((4 << 20)) /dev/urandom >"$T/fs/gone$i"; done
head -c $((4 << 20)) /dev/urandom >"$T/fs/kept"
sync
bs=$(stat -f -c %S "$T/fs")
# The physical extents of the files that will be deleted.
: >"$T/extents"
for i in 1 2 3 4; do
  # " 0:  0.. 1023:  34816.. 35839:  1024: last,eof" -> "34816 35839"
  filefrag -e -b"$bs" "$T/fs/gone$i" | awk '/^ *[0-9]+:/ { gsub(/[.:]+/, " "); print $4, $5 }' >>"$T/extents"
done
[ -s "$T/extents" ] || fail "no extents found"
sha=$(sha256sum <"$T/fs/kept")
rm "$T/fs"/gone*
sync
fstrim -v "$T/fs" >"$T/fstrim.out" || fail "fstrim failed: $(cat "$T/fstrim.out")"
[ "$(json '.discarded_bytes > 0')" = true ] || fail "no discard reached wbfs"
remount_fsck
dev=$LOOPDEV
checked=0
while read -r start end; do
  n=$((end - start + 1))
  [ "$n" -gt 0 ] || fail "bad extent '$start $end' from filefrag"
  dd if="$dev" of="$T/ext.bin" bs="$bs" skip="$start" count="$n" status=none || fail "reading blocks $start..$end"
  [ "$(stat -c %s "$T/ext.bin")" = $((n * bs)) ] || fail "short read of blocks $start..$end"
  cmp -s "$T/ext.bin" <(head -c $((n * bs)) /dev/zero) ||
    fail "blocks $start..$end of a deleted file are not zero after fstrim and a remount"
  checked=$((checked + n))
done <"$T/extents"
[ "$checked" -ge $(( (16 << 20) / bs )) ] || fail "only $checked blocks checked"
mount "$dev" "$T/fs"
[ "$(sha256sum <"$T/fs/kept")" = "$sha" ] || fail "a kept file changed"
umount "$T/fs"
loop_detach "$dev"
wbfs_umount
echo PASS
