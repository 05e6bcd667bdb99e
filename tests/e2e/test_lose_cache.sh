#!/bin/bash
# Losing the SSD: ext4 on a loop device on the image, files written with a
# periodic sync while the small cache wraps and writeback runs through the
# journal; at a random moment the daemon is killed and the cache file
# deleted. `wbfs recover` on the backing alone must give a file system that
# e2fsck passes (after replaying ext4's own journal) in which every file is
# what it was at some moment: the files made durable before a full
# writeback are all there and whole, and any later file present is a
# prefix of its content (the workload only appends).
. "$(dirname "$0")/lib.sh"
command -v mkfs.ext4 >/dev/null || skip "needs e2fsprogs"

mk_files 256 16
mkdir -p "$T/src" "$T/fs"
for i in $(seq 1 300); do head -c $(( (RANDOM % 64 + 1) * 4096 )) /dev/urandom >"$T/src/f$i"; done

src() { echo "$T/src/f$(( ($1 - 1) % 300 + 1 ))"; }  # file i's content
wbfs_mount -o max_dirty_age=2
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
sleep "$(( RANDOM % 4 + 2 )).$(( RANDOM % 10 ))"
"$WBFS" status "$MNT" >"$T/status.out" || true
kill_daemon
rm -f "$T/cache.img"
wait "$writer" || true
umount -l "$T/fs" 2>/dev/null || true
_mounts=()
loop_detach "$dev"
"$WBFS" umount "$MNT" 2>/dev/null || umount -l "$MNT"
grep -E "if the cache dies now|backing flush point|journal" "$T/status.out" || fail "status lacks the at-risk rows: $(cat "$T/status.out")"

# Recovery from the backing alone.
"$WBFS" recover --backing "$T/backing.img" >"$T/recover.out" || fail "recover: $(cat "$T/recover.out")"
cat "$T/recover.out"
grep -q "is the image as of flush point" "$T/recover.out" || fail "recover named no flush point"
e2fsck -E journal_only -y "$T/backing.img" >"$T/fsck0.out" 2>&1 || true
e2fsck -fn "$T/backing.img" >"$T/fsck.out" 2>&1 || { cat "$T/fsck.out"; fail "e2fsck found errors after recovery"; }

loop_attach_file "$T/backing.img" -r
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

# A new cache over the recovered backing: the same image.
truncate -s 16M "$T/cache.img"
wbfs_mount
cmp "$MNT/image" "$T/backing.img" || fail "the image over a new cache differs from the backing"
wbfs_umount
echo PASS
