#!/bin/bash
# The offline tools and system integration: check (clean, flipped byte in a
# synced segment, torn last flush, garbage superblock; refused while
# mounted), dump, format (refuses dirty data), writeback after kill -9 (the
# backing then equals the fsynced image; a second run is a no-op), the
# mount helper forms used by fstab (fuse.wbfs through mount.fuse3), and the
# systemd unit (systemd-analyze verify).
. "$(dirname "$0")/lib.sh"
command -v jq >/dev/null || skip "needs jq"

mk_files 64 8
cjson() { "$WBFS" check "$1" --json | jq -r "$2"; }
# check's verdict is its output: exit code and a line on stdout.
expect_check() {
  local want=$1 msg=$2 rc=0
  "$WBFS" check "$3" >"$T/check.out" 2>&1 || rc=$?
  [ "$rc" = "$want" ] || fail "check $3 exited $rc, expected $want: $(cat "$T/check.out")"
  grep -q -- "$msg" "$T/check.out" || fail "check $3 lacks '$msg': $(cat "$T/check.out")"
}

# A workload with fsync'd data, then kill -9: dirty data only in the cache.
wbfs_mount
head -c $((24 << 20)) /dev/urandom >"$T/ref"
dd if="$T/ref" of="$MNT/image" bs=1M conv=notrunc,fsync status=none
# One more fsync'd write: its chunk records every chunk before it as synced.
# Without it nothing on the cache may say that the last fsync completed
# (the record can lag), and a flipped byte in the log's first chunk is then
# indistinguishable from a write torn by a crash during that fsync.
dd if=/dev/urandom of="$MNT/image" bs=4096 count=1 seek=$((40 << 8)) conv=notrunc,fsync status=none
kill_daemon
"$WBFS" umount "$MNT"
cp "$T/cache.img" "$T/cache.orig"

# check: consistent, with dirty blocks; JSON fields.
"$WBFS" check "$T/cache.img" >"$T/check.out" || fail "check of a consistent cache failed: $(cat "$T/check.out")"
[ "$(cjson "$T/cache.img" .consistent)" = true ] || fail "not consistent"
dirty=$(cjson "$T/cache.img" .nr_dirty_cache_blocks)
[ "$dirty" -gt 0 ] || fail "no dirty blocks reported"
[ "$(cjson "$T/cache.img" '.segments | length')" -gt 0 ] || fail "no segments listed"
[ "$(cjson "$T/cache.img" '.segments[0] | has("id") and has("offset") and has("bytes") and has("valid")')" = true ] ||
  fail "segment fields"

# dump.
"$WBFS" dump "$T/cache.img" --superblock >"$T/dump.out"
grep -q "nr_segments" "$T/dump.out" || fail "dump --superblock: $(cat "$T/dump.out")"
seg=$(cjson "$T/cache.img" '.segments[0].id')
"$WBFS" dump "$T/cache.img" --segment "$seg" >"$T/dump.out"
grep -q "sectors 11111111 dirty" "$T/dump.out" || fail "dump --segment: $(head "$T/dump.out")"
[ "$("$WBFS" dump "$T/cache.img" --segment "$seg" --json | jq '.chunks[0].entries | length')" -gt 0 ] ||
  fail "dump --json has no entries"

# A flipped byte in the data of a synced segment: corrupt, at that offset.
off=$(cjson "$T/cache.img" '.segments[0].offset')
flip() { printf '\xff' | dd of="$1" bs=1 seek="$2" conv=notrunc status=none; }
flip "$T/cache.img" $((off + 4096 * 3 + 17))
expect_check 1 "INCONSISTENT" "$T/cache.img"
"$WBFS" check "$T/cache.img" --json >"$T/c.json" || true
[ "$(jq -r '.problems[] | select(.corrupt) | .offset' "$T/c.json" | head -1)" -ge "$off" ] || fail "no corrupt offset"
[ "$(jq -r '.problems[] | select(.corrupt) | .offset' "$T/c.json" | head -1)" -lt $((off + 524288)) ] ||
  fail "corrupt offset outside the segment: $(cat "$T/c.json")"
cp "$T/cache.orig" "$T/cache.img"

# A truncated (torn) last flush: reported, consistent.
last=$(cjson "$T/cache.img" '.segments[-1].offset')
lastbytes=$(cjson "$T/cache.img" '.segments[-1].bytes')
dd if=/dev/zero of="$T/cache.img" bs=4096 seek=$(( (last + lastbytes) / 4096 - 1 )) count=1 conv=notrunc status=none
"$WBFS" check "$T/cache.img" >"$T/check.out" || fail "a torn last write made the cache inconsistent: $(cat "$T/check.out")"
grep -q "torn newest write" "$T/check.out" || fail "the torn write was not reported: $(cat "$T/check.out")"
cp "$T/cache.orig" "$T/cache.img"

# A garbage superblock: inconsistent, at offset 0.
cp "$T/cache.img" "$T/garbage.img"
head -c 4096 /dev/urandom | dd of="$T/garbage.img" conv=notrunc status=none
expect_check 1 "INCONSISTENT" "$T/garbage.img"
[ "$("$WBFS" check "$T/garbage.img" --json | jq '.problems[0].offset')" = 0 ] || fail "garbage superblock offset"

# format refuses dirty data and garbage; usage errors exit 2.
expect_exit 1 "dirty blocks" "$WBFS" format "$T/cache.img"
expect_exit 1 "does not hold a wbfs cache" "$WBFS" format "$T/garbage.img"
cmp -s "$T/cache.img" "$T/cache.orig" || fail "a refused format changed the cache"
expect_exit 2 "unrecognised option" "$WBFS" check "$T/cache.img" --bogus
expect_exit 2 "No such file" "$WBFS" check "$T/nope.img"
expect_exit 2 "segment id" "$WBFS" dump "$T/cache.img" --segment x

# Tools refuse a mounted cache.
wbfs_mount
expect_exit 1 "in use by a mount" "$WBFS" check "$T/cache.img"
expect_exit 1 "in use" "$WBFS" writeback --backing "$T/backing.img" --cache "$T/cache.img"
wbfs_umount

# writeback: the backing alone is the image; twice is a no-op.
"$WBFS" writeback --backing "$T/backing.img" --cache "$T/cache.img" >"$T/wb.out" || fail "writeback: $(cat "$T/wb.out")"
cmp -n $((24 << 20)) "$T/ref" "$T/backing.img" || fail "the backing differs from the fsynced data"
[ "$(cjson "$T/cache.img" .nr_dirty_cache_blocks)" = 0 ] || fail "the cache is not clean"
sum=$(sha256sum <"$T/backing.img")
"$WBFS" writeback --backing "$T/backing.img" --cache "$T/cache.img" >"$T/wb2.out"
grep -q "0 dirty blocks" "$T/wb2.out" || fail "second writeback: $(cat "$T/wb2.out")"
[ "$(sha256sum <"$T/backing.img")" = "$sum" ] || fail "a second writeback changed the backing"
"$WBFS" format "$T/cache.img" >"$T/format.out"
grep -q "next mount formats" "$T/format.out" || fail "format of a clean cache: $(cat "$T/format.out")"
[ "$(cjson "$T/cache.img" .blank)" = true ] || fail "not blank after format"
# Offline writeback of a blank cache: nothing to do (exit 0); but a backing
# the engine refuses is a failure, blank cache or not (it once read every
# refusal of a blank cache as "nothing to write back").
"$WBFS" writeback --backing "$T/backing.img" --cache "$T/cache.img" >"$T/wb3.out" ||
  fail "writeback of a blank cache: $(cat "$T/wb3.out")"
grep -q "nothing to write back" "$T/wb3.out" || fail "writeback of a blank cache: $(cat "$T/wb3.out")"
truncate -s 1000 "$T/odd.img"
expect_exit 1 "" "$WBFS" writeback --backing "$T/odd.img" --cache "$T/cache.img" --journal none

# fstab: "BACKING MOUNTPOINT fuse.wbfs cache=CACHE,... 0 0" makes mount(8)
# run mount.fuse3, which runs "wbfs BACKING MOUNTPOINT -o OPTIONS".
if command -v mount.fuse3 >/dev/null; then
  PATH="$(dirname "$WBFS"):$PATH" mount.fuse3 "$T/backing.img" "$MNT" -t wbfs \
    -o "cache=$T/cache.img,rw,nosuid,nodev,noatime,nr_max_batched_writeback=4"
  mountpoint -q "$MNT" || fail "mount.fuse3 did not mount"
  [ "$("$WBFS" status "$MNT" --json | jq .tunables.nr_max_batched_writeback)" = 4 ] || fail "-o not applied"
  cmp -n $((24 << 20)) "$T/ref" "$MNT/image" || fail "image via the fstab form"
  umount "$MNT"
  for _ in $(seq 1 50); do [ -z "$(daemon_pid)" ] && break; sleep 0.1; done
  [ -z "$(daemon_pid)" ] || fail "the daemon did not exit after umount"
else
  fail "mount.fuse3 (package fuse3) is missing"
fi
# The helper form by name.
ln -s "$WBFS" "$T/mount.fuse.wbfs"
"$T/mount.fuse.wbfs" "$T/backing.img" "$MNT" -o "cache=$T/cache.img"
mountpoint -q "$MNT" || fail "mount.fuse.wbfs did not mount"
"$WBFS" umount "$MNT"

# The systemd unit is well-formed.
if command -v systemd-analyze >/dev/null; then
  sed "s|/usr/local/sbin/wbfs|$WBFS|" "$(dirname "$WBFS")/wbfs@.service" >"$T/wbfs@.service"
  systemd-analyze verify "$T/wbfs@.service" >"$T/verify.out" 2>&1 || true
  # Only lines about the unit's own content count (not "not executable" for
  # an uninstalled binary, nor warnings about other units on the machine).
  if grep -E "^$T/wbfs@.service:[0-9]+:" "$T/verify.out" | grep -q .; then
    fail "systemd-analyze verify: $(cat "$T/verify.out")"
  fi
else
  echo "note: systemd-analyze not found; the unit file was not verified"
fi
echo PASS
