#!/bin/bash
# Moving a VM to another host: the "dirty elsewhere" record of an RBD
# backing (metadata wbfs.dirty on the image). A mount with cache A marks
# it; unmounted with data not written back, a mount with cache B (another
# host's) is refused with one sentence naming the host, the flush point's
# age and the two ways out, and nothing changes: not the image, not its
# metadata, not cache B. Way out 1: A again (the same cache is let in),
# drop_caches, unmount: B mounts and sees A's data. Way out 2: `wbfs
# recover --backing rbd:...` gives A's data up and clears the record: B
# mounts and sees the image at its flush point. Way out 3: offline
# `wbfs writeback` with cache A. A clean unmount leaves no
# record. While mounted, the record's flush point follows writeback, and
# status shows it. After kill -9 the record still refuses another cache
# once the dead client's lock is gone.
. "$(dirname "$0")/rbd_lib.sh"

truncate -s 32M "$T/a.cache" "$T/b.cache" "$T/c.cache"
rbd create --size 64M rbd/vm

mount_with() { "$WBFS" mount --backing rbd:rbd/vm --cache "$T/$1.cache" "${@:2}" "$MNT"; }
record() { rbd image-meta get rbd/vm wbfs.dirty 2>/dev/null || true; }
nonce_of() { printf '%016x' "0x$(od -An -tx8 -j56 -N8 "$T/$1.cache" | tr -d ' ')"; }
state() {  # what a refused mount must not change
  rbd export --no-progress rbd/vm - 2>/dev/null | md5sum
  rbd image-meta list --format json rbd/vm | jq -S .
  rbd export --no-progress rbd/vm.wbfs-journal - 2>/dev/null | md5sum
  md5sum <"$T/b.cache"
  rbd ls
}

head -c $((1 << 20)) /dev/urandom >"$T/d1"
head -c $((1 << 20)) /dev/urandom >"$T/d2"
host=$(uname -n)

# --- Cache A: the record appears at mount, before any write.
mount_with a -o writeback_threshold=0
record | grep -q "^wbfs-owner/1 nonce=$(nonce_of a) host=$host " || fail "no record after the mount: '$(record)'"
dd if="$T/d1" of="$MNT/image" bs=64k seek=16 oflag=direct conv=notrunc,fsync status=none
"$WBFS" status "$MNT" --json >"$T/status.json"
[ "$(jq .nr_dirty_cache_blocks "$T/status.json")" -ge 256 ] || fail "nothing dirty"
jq -r .owner_record "$T/status.json" | grep -q "nonce=$(nonce_of a) host=$host " ||
  fail "status --json does not show the record: $(jq -r .owner_record "$T/status.json")"
jq -r .backing_lock "$T/status.json" | grep -q "wbfs on host $host, pid $(daemon_pid)" ||
  fail "status --json does not name the lock's holder: $(jq -r .backing_lock "$T/status.json")"
"$WBFS" status "$MNT" | grep -q "^dirty record .*nonce=$(nonce_of a)" || fail "status does not show the record"
wbfs_umount
record | grep -q "nonce=$(nonce_of a) " || fail "a dirty unmount removed the record: '$(record)'"

# --- Cache B is refused; nothing changes.
before=$(state)
expect_exit 1 "has data not yet written back in the cache $(nonce_of a) on host $host, not in this one" \
  mount_with b
msg=$(cat "$T/stderr")
echo "refused: $msg"
for want in "nothing was written back from that cache since .* ago" "drop_caches" \
  "wbfs recover --backing rbd:rbd/vm" "clears this record"; do
  grep -q -- "$want" <<<"$msg" || fail "the refusal lacks '$want': $msg"
done
mountpoint -q "$MNT" && fail "cache B was mounted"
[ "$(state)" = "$before" ] || fail "the refused mount changed the image, its metadata, the journal or cache B"
cmp -s "$T/b.cache" <(head -c $((32 << 20)) /dev/zero) || fail "the refused mount wrote to cache B"

# --- Way out 1: A again (let in: the same cache), drop_caches, unmount.
mount_with a -o writeback_threshold=0
cmp <(dd if="$MNT/image" bs=64k skip=16 count=16 iflag=direct status=none) "$T/d1" || fail "A lost its data"
"$WBFS" message "$MNT" drop_caches >/dev/null
# The record follows writeback: its flush point is refreshed within seconds.
for _ in $(seq 1 30); do
  record | grep -q " flush_seq=0 " || break
  sleep 0.5
done
record | grep -q " flush_seq=[1-9]" || fail "the record's flush point did not follow writeback: '$(record)'"
wbfs_umount
[ -z "$(record)" ] || fail "a clean unmount left the record: '$(record)'"
mount_with b
cmp <(dd if="$MNT/image" bs=64k skip=16 count=16 iflag=direct status=none) "$T/d1" || fail "B does not see A's data"
record | grep -q "nonce=$(nonce_of b) " || fail "B's mount did not mark the record: '$(record)'"
wbfs_umount
[ -z "$(record)" ] || fail "B's clean unmount left the record"

# --- Way out 2: A leaves d2 dirty; recover gives it up and clears the record.
mount_with a -o writeback_threshold=0
dd if="$T/d2" of="$MNT/image" bs=64k seek=16 oflag=direct conv=notrunc,fsync status=none
wbfs_umount
expect_exit 1 "on host $host.*flush point chunk [0-9]*, cut at .* ago" mount_with b
"$WBFS" recover --backing rbd:rbd/vm >"$T/recover.out" 2>"$T/stderr" || fail "recover: $(cat "$T/stderr")"
cat "$T/recover.out"
grep -q "cleared the record that the cache $(nonce_of a) on host $host held data for rbd:rbd/vm not yet written back: that data is given up" \
  "$T/recover.out" || fail "recover does not say it cleared the record: $(cat "$T/recover.out")"
[ -z "$(record)" ] || fail "recover left the record"
# A's data was given up: A, mounted as it is, would write it over newer
# writes: refused (the image's wbfs.given_up) until formatted.
expect_exit 1 "was given up by .wbfs recover.* format --force" mount_with a
rbd image-meta get rbd/vm wbfs.given_up | grep -q "$(nonce_of a)" || fail "the given-up list lacks A"
"$WBFS" format --force "$T/a.cache" >/dev/null
mount_with b
cmp <(dd if="$MNT/image" bs=64k skip=16 count=16 iflag=direct status=none) "$T/d1" ||
  fail "B does not see the image at its flush point (d1)"
# --- A clean unmount (written back) leaves nothing that blocks another cache.
dd if="$T/d2" of="$MNT/image" bs=64k seek=16 oflag=direct conv=notrunc,fsync status=none
"$WBFS" message "$MNT" drop_caches >/dev/null
wbfs_umount
[ -z "$(record)" ] || fail "a clean unmount left the record: '$(record)'"
mount_with c
cmp <(dd if="$MNT/image" bs=64k skip=16 count=16 iflag=direct status=none) "$T/d2" || fail "C does not see B's data"
wbfs_umount
[ -z "$(rbd image-meta list --format json rbd/vm | jq -r 'keys[]? | select(startswith("wbfs.") and . != "wbfs.given_up")')" ] ||
  fail "wbfs metadata besides the given-up list left after clean unmounts: $(rbd image-meta list rbd/vm)"

# --- Way out 3, offline: `wbfs writeback` with A's cache writes its data
# back and removes the record (with another cache it is refused, as a
# mount is: that cache's old data would go back in time).
head -c $((1 << 20)) /dev/urandom >"$T/d4"
"$WBFS" format --force "$T/a.cache" >/dev/null
mount_with a -o writeback_threshold=0
dd if="$T/d4" of="$MNT/image" bs=64k seek=16 oflag=direct conv=notrunc,fsync status=none
wbfs_umount
expect_exit 1 "writeback: .*in the cache $(nonce_of a) on host $host, not in this one" \
  "$WBFS" writeback --backing rbd:rbd/vm --cache "$T/c.cache"
"$WBFS" writeback --backing rbd:rbd/vm --cache "$T/a.cache" >"$T/wb.out" 2>&1 || fail "offline writeback: $(cat "$T/wb.out")"
[ -z "$(record)" ] || fail "offline writeback left the record: '$(record)'"
mount_with c
cmp <(dd if="$MNT/image" bs=64k skip=16 count=16 iflag=direct status=none) "$T/d4" || fail "C does not see A's data written back offline"
wbfs_umount

# --- A host that dies (kill -9) leaves the record: once librbd has broken
# the dead client's lock (about 30 s), another cache is still refused;
# the same cache, mounted again, replays and gets the image clean.
head -c $((1 << 20)) /dev/urandom >"$T/d3"
mount_with a -o writeback_threshold=0
dd if="$T/d3" of="$MNT/image" bs=64k seek=16 oflag=direct conv=notrunc,fsync status=none
kill_daemon
"$WBFS" umount "$MNT"
t0=$(date +%s)
for _ in $(seq 1 120); do
  rc=0
  mount_with b 2>"$T/stderr" || rc=$?
  [ $rc != 0 ] || fail "cache B mounted over a dead host's dirty data"
  grep -q "is in use" "$T/stderr" || break
  sleep 0.5
done
grep -q "in the cache $(nonce_of a) on host $host, not in this one" "$T/stderr" ||
  fail "after the dead client's lock went, B was not refused by the record: $(cat "$T/stderr")"
echo "after kill -9 and $(($(date +%s) - t0)) s: $(cat "$T/stderr")"
mount_with a
cmp <(dd if="$MNT/image" bs=64k skip=16 count=16 iflag=direct status=none) "$T/d3" || fail "A lost fsynced data"
"$WBFS" message "$MNT" drop_caches >/dev/null
wbfs_umount
[ -z "$(record)" ] || fail "the record outlived drop_caches and a clean unmount: '$(record)'"
echo "ok"
