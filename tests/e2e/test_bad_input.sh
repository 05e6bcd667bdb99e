#!/bin/bash
# Every refused mount says one clear sentence, exits 2 (usage or
# configuration) or 1 (anything else) and changes no byte of either file.
. "$(dirname "$0")/lib.sh"

mk_files 64 16
sums() { sha256sum "$T/backing.img" "$T/cache.img" 2>/dev/null; }
before=$(sums)
unchanged() { [ "$(sums)" = "$before" ] || fail "files changed after: $1"; }

m() { "$WBFS" mount "$@"; }
echo '{"backing": "x", "cahce": "y"}' >"$T/typo.json"
expect_exit 2 "cahce: unknown key" m --config "$T/typo.json" "$MNT"
echo '{"backing": "x",' >"$T/broken.json"
expect_exit 2 "malformed JSON" m --config "$T/broken.json" "$MNT"
echo '{"writeback_threshold": "high"}' >"$T/type.json"
expect_exit 2 "writeback_threshold: must be an integer" m --config "$T/type.json" "$MNT"
echo '{"nr_max_batched_writeback": 99}' >"$T/range.json"
expect_exit 2 "nr_max_batched_writeback must be between 1 and 32" m --config "$T/range.json" "$MNT"
expect_exit 2 "unknown key" m --backing "$T/backing.img" --cache "$T/cache.img" -o bogus=1 "$MNT"
expect_exit 2 "unrecognised option" m --bogus "$MNT"
expect_exit 2 "backing $T/nope" m --backing "$T/nope" --cache "$T/cache.img" "$MNT"
expect_exit 2 "cache $T/nope" m --backing "$T/backing.img" --cache "$T/nope" "$MNT"
expect_exit 2 "no cache file" m --backing "$T/backing.img" "$MNT"
expect_exit 2 "mountpoint $T/nodir" m --backing "$T/backing.img" --cache "$T/cache.img" "$T/nodir"
touch "$T/afile"
expect_exit 2 "is not a directory" m --backing "$T/backing.img" --cache "$T/cache.img" "$T/afile"
expect_exit 2 "same file" m --backing "$T/backing.img" --cache "$T/backing.img" "$MNT"
expect_exit 2 "is the cache or the backing itself" m --backing "$T/backing.img" --cache "$T/cache.img" --journal "$T/cache.img" "$MNT"
expect_exit 2 "contradict" m --backing "$T/backing.img" --cache "$T/cache.img" --journal "$T/j" --no-journal "$MNT"
# A block-device backing has no "next to it" for the default journal.
loop_attach_file "$T/backing.img"
expect_exit 2 "is a block device" m --backing "$LOOPDEV" --cache "$T/cache.img" "$MNT"
loop_detach "$LOOPDEV"
unchanged "usage errors"

truncate -s $((64 * 1048576 + 512)) "$T/odd.img"
expect_exit 1 "not a positive multiple of 4096" m --backing "$T/odd.img" --cache "$T/cache.img" "$MNT"
truncate -s 2M "$T/small.img"
expect_exit 1 "must be at least" m --backing "$T/backing.img" --cache "$T/small.img" "$MNT"
[ -z "$(tr -d '\0' <"$T/small.img" | head -c 1)" ] || fail "the small cache was written"
head -c $((16 << 20)) /dev/urandom >"$T/garbage.img"
g=$(sha256sum <"$T/garbage.img")
expect_exit 1 "not a wbfs cache" m --backing "$T/backing.img" --cache "$T/garbage.img" "$MNT"
[ "$(sha256sum <"$T/garbage.img")" = "$g" ] || fail "the garbage cache was written"
unchanged "content errors"
# A refused mount leaves no journal file behind.
if ls "$T"/*.wbfs-journal >/dev/null 2>&1; then fail "a refused mount left a journal file"; fi

# A cache formatted for another backing size.
wbfs_mount
echo hello | dd of="$MNT/image" conv=notrunc status=none
wbfs_umount
before=$(sums)
truncate -s 32M "$T/other.img"
expect_exit 1 "formatted for a backing of 67108864 bytes" m --backing "$T/other.img" --cache "$T/cache.img" "$MNT"
unchanged "wrong backing size"

# Already mounted, and the same cache twice. With background writeback off
# an idle mount writes nothing (the default threshold would drain "hello"
# to the backing while the test compares checksums).
wbfs_mount -o writeback_threshold=0
mkdir -p "$T/mnt2"
before=$(sums; sha256sum "$T/other.img")
sums() { sha256sum "$T/backing.img" "$T/cache.img" "$T/other.img"; }
expect_exit 1 "already a mount point" m --backing "$T/backing.img" --cache "$T/cache.img" "$MNT"
expect_exit 1 "in use" m --backing "$T/other.img" --cache "$T/cache.img" "$T/mnt2"
expect_exit 1 "in use" m --backing "$T/backing.img" --cache "$T/other.img" "$T/mnt2"
unchanged "busy errors"
wbfs_umount
echo PASS
