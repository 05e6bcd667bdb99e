#!/bin/bash
# Losing the host's SSD under an RBD backing: ext4 on a loop device on the
# image, files written with a periodic sync while the small cache wraps and
# writeback runs through the journal image in the cluster; the daemon is
# killed and the cache file deleted. `wbfs recover --backing rbd:...`
# (needing only the cluster) must give a file system that e2fsck passes
# (after ext4's own journal replay) in which the files written back before
# the loss are whole and any later file is a prefix of its content.
. "$(dirname "$0")/rbd_lib.sh"
command -v mkfs.ext4 >/dev/null || skip "needs e2fsprogs"

rbd create --size 128M rbd/vm
truncate -s 16M "$T/cache.img"
mkdir -p "$T/src" "$T/fs"
for i in $(seq 1 300); do head -c $(( (RANDOM % 64 + 1) * 4096 )) /dev/urandom >"$T/src/f$i"; done
src() { echo "$T/src/f$(( ($1 - 1) % 300 + 1 ))"; }  # file i's content

"$WBFS" mount --backing rbd:rbd/vm --cache "$T/cache.img" -o max_dirty_age=2 "$MNT"
loop_attach
dev=$LOOPDEV
mkfs.ext4 -q -F "$dev"
mount "$dev" "$T/fs"
_mounts+=("$T/fs")
# Phase 1: durable and written back.
for i in $(seq 1 30); do cp "$T/src/f$i" "$T/fs/f$i"; done
sync
"$WBFS" message "$MNT" drop_caches >/dev/null
[ "$("$WBFS" status "$MNT" --json | jq .nr_dirty_cache_blocks)" = 0 ] || fail "drop_caches left dirty blocks"
# Phase 2: more files, a sync every 5, until the daemon dies.
(
  for i in $(seq 31 20000); do
    cp "$(src "$i")" "$T/fs/f$i" 2>/dev/null || exit 0
    [ $((i % 5)) = 0 ] && { sync 2>/dev/null || exit 0; }
  done
) &
writer=$!
sleep "$(( RANDOM % 4 + 3 )).$(( RANDOM % 10 ))"
kill_daemon
rm -f "$T/cache.img"
wait "$writer" || true
umount -l "$T/fs" 2>/dev/null || true
_mounts=()
loop_detach "$dev"
"$WBFS" umount "$MNT" 2>/dev/null || umount -l "$MNT"

# Recovery from the cluster alone, once librbd has broken the dead client's lock.
retry_in_use "$WBFS" recover --backing rbd:rbd/vm
cat "$T/out"
grep -q "is the image as of flush point" "$T/out" || fail "recover named no flush point"
rbd export --no-progress rbd/vm "$T/vm.img" >/dev/null 2>&1
e2fsck -E journal_only -y "$T/vm.img" >"$T/fsck0.out" 2>&1 || true
e2fsck -fn "$T/vm.img" >"$T/fsck.out" 2>&1 || { cat "$T/fsck.out"; fail "e2fsck found errors after recovery"; }
loop_attach_file "$T/vm.img" -r
mount -o ro "$LOOPDEV" "$T/fs"
_mounts+=("$T/fs")
for i in $(seq 1 30); do
  cmp -s "$T/src/f$i" "$T/fs/f$i" || fail "f$i, written back before the loss, is missing or differs"
done
later=0
for i in $(seq 31 20000); do
  [ -e "$T/fs/f$i" ] || continue
  size=$(stat -c %s "$T/fs/f$i")
  cmp -s -n "$size" "$(src "$i")" "$T/fs/f$i" || fail "f$i holds data it never had"
  later=$((later + 1))
done
echo "recovered: 30 early files whole, $later later files present (prefixes of their content)"
umount "$T/fs"
_mounts=()
loop_detach "$LOOPDEV"
echo PASS
