#!/bin/bash
# A Ceph RBD image as the backing, on a single-node cluster of our own
# (scripts/ceph-test-cluster, in the scratch directory, torn down on exit):
# fsync + kill -9 + remount keeps the data; a second mount of the image is
# refused naming the holder; after writeback, `rbd export` is what was
# written; a cache of image A is refused over image B of the same size; a
# size that is not a multiple of 4096, an unknown pool or image, a journal
# image of another image, an image without the exclusive-lock feature and
# an unreachable cluster are refused with nothing created; a discard
# frees space on RBD; offline writeback of a dead mount's cache reaches
# RBD; recover is refused while a mount holds the lock, and --break-lock
# breaks it (fencing that mount); with the cache deleted after kill -9,
# `wbfs recover --backing rbd:...` leaves the image at its flush point;
# fio verify through the mount, then from RBD alone through a new cache;
# a daemon killed alone is replaced at once (its locks broken).
. "$(dirname "$0")/rbd_lib.sh"

MNT2=$T/mnt2
mkdir -p "$MNT2"
_mounts+=("$MNT2")  # unmounted by cleanup if a broken build lets a second mount in
truncate -s 32M "$T/cache.img" "$T/cache2.img" "$T/cache3.img"
rbd create --size 64M rbd/img
rbd create --size 64M rbd/other

rmount() { "$WBFS" mount --backing rbd:rbd/img --cache "$T/cache.img" "$@" "$MNT"; }
used() { rbd du --format json "rbd/$1" | jq '.images[0].used_size'; }
export_img() {
  rm -f "$T/export"
  rbd export --no-progress rbd/img "$T/export" >/dev/null 2>&1
}

# --- fsync + kill -9 + remount keeps the data.
head -c $((1 << 20)) /dev/urandom >"$T/d1"
rmount
rbd ls | grep -qx img.wbfs-journal || fail "no journal image img.wbfs-journal"
pool_id=$(ceph_retry osd pool ls detail --format json | jq '.[] | select(.pool_name == "rbd") | .pool_id')
identity="rbd:fsid=$(ceph_retry fsid)/pool=$pool_id/image=$(rbd info --format json rbd/img | jq -r .id)"
[ "$(rbd image-meta get rbd/img.wbfs-journal wbfs.backing_id)" = "$identity" ] ||
  fail "the journal image is not tagged with the backing's identity $identity"
dd if="$T/d1" of="$MNT/image" bs=64k seek=64 oflag=direct conv=notrunc,fsync status=none
pid=$(daemon_pid)
[ -n "$pid" ] || fail "no daemon"

# --- A second mount of the same image is refused, naming the holder.
expect_exit 1 "pid $pid" "$WBFS" mount --backing rbd:rbd/img --cache "$T/cache2.img" "$MNT2"
grep -q "is in use" "$T/stderr" || fail "the refusal does not say the image is in use: $(cat "$T/stderr")"
grep -q "host $(uname -n)" "$T/stderr" || fail "the refusal does not name the host: $(cat "$T/stderr")"
mountpoint -q "$MNT2" && fail "the second mount went ahead"

# --- The daemon killed alone: its successor breaks exactly the dead
# daemon's locks on the image and on its journal (at once, not after
# Ceph's ~30 s), and keeps what was acknowledged without an fsync.
head -c $((1 << 20)) /dev/urandom >"$T/d0"
dd if="$T/d0" of="$MNT/image" bs=64k seek=256 oflag=direct conv=notrunc status=none
"$WBFS" message "$MNT" drop_caches >/dev/null   # the journal's lock is taken
dd if="$T/d0" of="$MNT/image" bs=64k seek=512 oflag=direct conv=notrunc status=none
start=$(date +%s%N)
kill_daemon_only
wait_new_daemon "$pid"
cmp <(dd if="$MNT/image" bs=64k skip=512 count=16 status=none) "$T/d0" || fail "an acknowledged write was lost"
dd if="$T/d0" of="$MNT/image" bs=64k seek=768 oflag=direct conv=notrunc status=none
timeout 15 "$WBFS" message "$MNT" drop_caches >/dev/null ||
  fail "writeback waited for the dead daemon's journal lock"
ms=$((($(date +%s%N) - start) / 1000000))
[ "$ms" -lt 15000 ] || fail "the daemon's restart over RBD took $ms ms"
echo "RBD: a new daemon served and wrote back $ms ms after the kill"
pid=$(daemon_pid)

kill_daemon
"$WBFS" umount "$MNT"
retry_in_use "$WBFS" mount --backing rbd:rbd/img --cache "$T/cache.img" "$MNT"
cmp <(dd if="$MNT/image" bs=64k skip=64 count=16 status=none) "$T/d1" || fail "fsynced data lost by kill -9"

# --- After writeback and unmount the image alone holds the data.
"$WBFS" message "$MNT" drop_caches >/dev/null
wbfs_umount
[ "$("$WBFS" dump "$T/cache.img" --superblock --json | jq -r .superblock.backing_id)" = "$identity" ] ||
  fail "the cache does not record the image's identity"
export_img
cmp <(dd if="$T/export" bs=64k skip=64 count=16 status=none) "$T/d1" || fail "rbd export differs from what was written"
cmp <(dd if="$T/export" bs=64k count=64 status=none) <(head -c $((4 << 20)) /dev/zero) ||
  fail "rbd export has data where none was written"
[ -z "$(rbd lock ls --format json rbd/img | jq -r '.[]?')" ] || fail "the lock outlived a clean unmount"
rbd image-meta get rbd/img wbfs.holder >/dev/null 2>&1 && fail "wbfs.holder outlived a clean unmount"

# --- A cache of img over other (same size): refused, nothing changed.
sum_cache=$(md5sum <"$T/cache.img")
expect_exit 1 "formatted for the backing" "$WBFS" mount --backing rbd:rbd/other --cache "$T/cache.img" "$MNT"
[ "$(md5sum <"$T/cache.img")" = "$sum_cache" ] || fail "the refused cache was changed"
[ "$(used other)" = 0 ] || fail "the refused mount wrote to the other image"
rbd ls | grep -q "^other.wbfs-journal$" && fail "the refused mount left a journal image behind"

# --- Bad images and names: refused, one sentence, nothing created.
rbd create --size 65538K rbd/odd
expect_exit 2 "not a multiple of 4096" "$WBFS" mount --backing rbd:rbd/odd --cache "$T/cache3.img" "$MNT"
expect_exit 2 "no pool 'nopool'" "$WBFS" mount --backing rbd:nopool/img --cache "$T/cache3.img" "$MNT"
expect_exit 2 "no image 'nope'" "$WBFS" mount --backing rbd:rbd/nope --cache "$T/cache3.img" "$MNT"
expect_exit 2 "rbd:POOL/IMAGE" "$WBFS" mount --backing rbd:rbd --cache "$T/cache3.img" "$MNT"
rbd create --size 64M --image-feature layering rbd/nolock
expect_exit 2 "lacks the exclusive-lock feature" "$WBFS" mount --backing rbd:rbd/nolock --cache "$T/cache3.img" "$MNT"
# An unreachable cluster: refused after the 10 s timeout, not a hang.
printf '[global]\nmon host = 127.0.0.1:1\nauth client required = none\n' >"$T/nowhere.conf"
t0=$(date +%s)
expect_exit 1 "did not answer within 10 s" "$WBFS" mount --ceph-conf "$T/nowhere.conf" --backing rbd:rbd/img \
  --cache "$T/cache3.img" "$MNT"
[ $(($(date +%s) - t0)) -le 20 ] || fail "an unreachable cluster took $(($(date +%s) - t0)) s to refuse"
[ "$(rbd ls | sort | tr '\n' ' ')" = "img img.wbfs-journal nolock odd other " ] || fail "images after refusals: $(rbd ls)"
cmp -s "$T/cache3.img" <(head -c $((32 << 20)) /dev/zero) || fail "a refused mount wrote to the cache"

# --- A journal image that belongs to another image is refused.
rbd create --size 8M rbd/other.wbfs-journal
rbd image-meta set rbd/other.wbfs-journal wbfs.backing_id "$(rbd image-meta get rbd/img.wbfs-journal wbfs.backing_id)"
expect_exit 2 "belongs to another image" "$WBFS" mount --backing rbd:rbd/other --cache "$T/cache3.img" "$MNT"
rbd rm --no-progress rbd/other.wbfs-journal >/dev/null 2>&1

# --- journal=none works, and retires the journal image's flush point.
rmount --no-journal
wbfs_umount
rmount
wbfs_umount

# --- Discard reaches RBD: the image's used size shrinks.
rmount
head -c $((16 << 20)) /dev/urandom | dd of="$MNT/image" bs=1M seek=32 oflag=direct conv=notrunc,fsync status=none
"$WBFS" message "$MNT" drop_caches >/dev/null
before=$(used img)
fallocate --punch-hole --keep-size --offset $((32 << 20)) --length $((16 << 20)) "$MNT/image"
sync "$MNT/image"
"$WBFS" message "$MNT" drop_caches >/dev/null
after=$(used img)
echo "rbd du: used $before bytes after writing 16 MiB, $after after the punch"
[ "$after" -le $((before - (12 << 20))) ] || fail "the discard did not reach RBD (used $before -> $after)"
cmp <(dd if="$MNT/image" bs=1M skip=32 count=16 status=none) <(head -c $((16 << 20)) /dev/zero) ||
  fail "the punched range does not read as zeros"
wbfs_umount
export_img
cmp <(dd if="$T/export" bs=1M skip=32 count=16 status=none) <(head -c $((16 << 20)) /dev/zero) ||
  fail "the punched range is not zero on RBD"

# --- Offline writeback of a dead mount's dirty cache (any host can, with the cache file).
head -c $((1 << 20)) /dev/urandom >"$T/d3"
rmount -o writeback_threshold=0
dd if="$T/d3" of="$MNT/image" bs=64k seek=896 oflag=direct conv=notrunc,fsync status=none
[ "$("$WBFS" status "$MNT" --json | jq .nr_dirty_cache_blocks)" -ge 256 ] || fail "nothing dirty to write back"
kill_daemon
"$WBFS" umount "$MNT"
retry_in_use "$WBFS" writeback --backing rbd:rbd/img --cache "$T/cache.img"
export_img
cmp <(dd if="$T/export" bs=64k skip=896 count=16 status=none) "$T/d3" || fail "offline writeback did not reach RBD"

# --- Breaking a holder's lock, then the cache lost after kill -9: recover
# needs only the cluster.
head -c $((2 << 20)) /dev/urandom >"$T/d2"
rmount
pid=$(daemon_pid)
dd if="$T/d2" of="$MNT/image" bs=64k seek=256 oflag=direct conv=notrunc,fsync status=none
"$WBFS" message "$MNT" drop_caches >/dev/null   # a flush point on the backing
# While the mount holds the lock, recover is refused naming it; with
# --break-lock it breaks the lock (the mount is blocklisted: fenced) and
# says what that discards.
expect_exit 1 "is in use.*pid $pid" "$WBFS" recover --backing rbd:rbd/img
"$WBFS" recover --backing rbd:rbd/img --break-lock >"$T/break.out" 2>"$T/stderr" ||
  fail "recover --break-lock: $(cat "$T/stderr")"
grep -q "broke the exclusive lock of the client .*pid $pid.*not written back is not in the image" "$T/break.out" ||
  fail "recover --break-lock does not say whose lock it broke and what that loses: $(cat "$T/break.out")"
kill_daemon
"$WBFS" umount "$MNT"
rm -f "$T/cache.img"
"$WBFS" recover --backing rbd:rbd/img >"$T/recover.out" 2>"$T/stderr" || fail "recover: $(cat "$T/stderr")"
echo "recover: $(tail -n 1 "$T/recover.out")"
grep -q "is the image as of flush point" "$T/recover.out" || fail "recover names no flush point: $(cat "$T/recover.out")"
export_img
cmp <(dd if="$T/export" bs=64k skip=256 count=32 status=none) "$T/d2" || fail "the recovered image lacks the written-back data"
cmp <(dd if="$T/export" bs=64k skip=64 count=16 status=none) "$T/d1" || fail "the recovered image lost older data"
# --- Transfers larger than an object (4 MiB) go out as concurrent pieces:
# 12 MiB written back in one run from 3 MiB on, read back through a new
# cache with reads that straddle object boundaries, and exported.
head -c $((12 << 20)) /dev/urandom >"$T/d4"
truncate -s 32M "$T/cache5.img"
"$WBFS" mount --backing rbd:rbd/img --cache "$T/cache5.img" "$MNT"
dd if="$T/d4" of="$MNT/image" bs=1M seek=3 oflag=direct conv=notrunc,fsync status=none
"$WBFS" message "$MNT" drop_caches >/dev/null
wbfs_umount
rm -f "$T/cache5.img"
truncate -s 32M "$T/cache5.img"
"$WBFS" mount --backing rbd:rbd/img --cache "$T/cache5.img" "$MNT"
cmp <(dd if="$MNT/image" bs=3M skip=1 count=4 iflag=direct status=none) "$T/d4" ||
  fail "12 MiB across objects read back wrong through a new cache"
wbfs_umount
export_img
cmp <(dd if="$T/export" bs=1M skip=3 count=12 status=none) "$T/d4" || fail "12 MiB across objects: rbd export differs"

# --- fio verify (libaio QD32, four jobs) through the mount; then, after
# writeback, verified again through a new, empty cache: from RBD alone.
if command -v fio >/dev/null; then
  rbd create --size 64M rbd/fio
  truncate -s 8M "$T/cache4.img"
  "$WBFS" mount --backing rbd:rbd/fio --cache "$T/cache4.img" "$MNT"
  fio_verify_job "$T/job.fio" 2 16 16 32
  t0=$(date +%s%3N)
  fio_verify_run "$T/job.fio" "$T/fio.out" "fio verification failed"
  "$WBFS" message "$MNT" drop_caches >/dev/null
  wbfs_umount
  rm -f "$T/cache4.img"
  truncate -s 8M "$T/cache4.img"
  "$WBFS" mount --backing rbd:rbd/fio --cache "$T/cache4.img" "$MNT"
  fio_verify_run "$T/job.fio" "$T/fio2.out" "verify from RBD alone failed" --verify_only
  wbfs_umount
  echo "fio: written, written back and verified from RBD in $(($(date +%s%3N) - t0)) ms"
else
  [ "${WBFS_E2E_REQUIRED:-0}" = 1 ] && fail "needs fio"
  echo "SKIP (fio section): needs fio" >&2
fi
echo PASS
