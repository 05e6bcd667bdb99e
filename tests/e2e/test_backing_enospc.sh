#!/bin/bash
# A sparse backing on a nearly full file system: writeback fails with
# ENOSPC, status says so (writeback_error), and once space is freed the
# drop_caches already waiting finishes (the retries back off, never stop).
source "$(dirname "$0")/lib.sh"
command -v mkfs.ext4 >/dev/null || skip "needs mkfs.ext4"
# The daemon holds a file on $T/fs: on failure, stop it before lib.sh's
# cleanup unmounts $T/fs and detaches its loop device.
_fs_cleanup() {
  local rc=$?
  set +e
  if grep -q " $MNT " /proc/self/mountinfo; then "$WBFS" umount "$MNT" 2>/dev/null || umount -l "$MNT"; fi
  local pid
  pid=$(daemon_pid)
  [ -n "$pid" ] && kill -9 "$pid" && sleep 0.5
  mountpoint -q "$T/fs" && umount "$T/fs"
  (exit "$rc")
  cleanup
}
trap _fs_cleanup EXIT

truncate -s 96M "$T/fs.img"
mkfs.ext4 -q -F -m 0 "$T/fs.img"
loop_attach_file "$T/fs.img"
mkdir -p "$T/fs"
mount "$LOOPDEV" "$T/fs"
_mounts+=("$T/fs")
truncate -s 256M "$T/fs/backing.img"  # sparse, larger than its file system
truncate -s 64M "$T/cache.img"
"$WBFS" mount --backing "$T/fs/backing.img" --cache "$T/cache.img" -o writeback_threshold=0 "$MNT"
# Leave about 4 MiB free (the journal's entry needs room too).
dd if=/dev/zero of="$T/fs/filler" bs=1M count=200 status=none 2>/dev/null || true
sync -f "$T/fs"
free_kib=$(df -k --output=avail "$T/fs" | tail -1)
[ "$free_kib" -lt 1024 ] || fail "the file system is not full ($free_kib KiB free)"
truncate -s $(( $(stat -c %s "$T/fs/filler") - 4 * 1048576 )) "$T/fs/filler"
sync -f "$T/fs"

# 24 MiB of data at 8 MiB: more than the free space.
head -c $((24 << 20)) /dev/urandom >"$T/data"
dd if="$T/data" of="$MNT/image" bs=1M seek=8 conv=notrunc,fsync status=none
timeout 120 "$WBFS" message "$MNT" drop_caches >"$T/drop.out" 2>&1 &
drop=$!
failing=""
for _ in $(seq 1 100); do
  s=$("$WBFS" status "$MNT" --json)
  if [ "$(jq .writeback_failing <<<"$s")" = true ]; then failing=$s; break; fi
  sleep 0.1
done
[ -n "$failing" ] || fail "writeback did not fail on a full backing file system"
jq -r .writeback_error <<<"$failing" | grep -q "No space left on device" ||
  fail "status lacks the ENOSPC error: $(jq -r .writeback_error <<<"$failing")"
"$WBFS" status "$MNT" | grep -q "FAILING (retrying): .*No space left on device" ||
  fail "wbfs status does not show the ENOSPC error"
[ "$(jq .nr_dirty_cache_blocks <<<"$failing")" -gt 0 ] || fail "no dirty block left while failing"

# Free the space: the waiting drop_caches finishes (retries 8 s apart at most).
rm -f "$T/fs/filler"
wait "$drop" || fail "drop_caches did not finish after space was freed: $(cat "$T/drop.out")"
s=$("$WBFS" status "$MNT" --json)
[ "$(jq .nr_dirty_cache_blocks <<<"$s")" = 0 ] || fail "dirty blocks left"
[ "$(jq .writeback_failing <<<"$s")" = false ] || fail "writeback still failing"
[ "$(jq -r .writeback_error <<<"$s")" = "" ] || fail "a stale writeback_error: $(jq -r .writeback_error <<<"$s")"
wbfs_umount
cmp <(dd if="$T/fs/backing.img" bs=1M skip=8 count=24 status=none) "$T/data" ||
  fail "the backing does not hold the data"
umount "$T/fs"
loop_detach "$LOOPDEV"
echo PASS
