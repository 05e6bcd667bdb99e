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
lose_cache_sources
wbfs_mount -o max_dirty_age=2
lose_cache_workload 2
"$WBFS" umount "$MNT" 2>/dev/null || umount -l "$MNT"
grep -E "if the cache dies now|backing flush point|journal" "$T/status.out" || fail "status lacks the at-risk rows: $(cat "$T/status.out")"

# Recovery from the backing alone.
"$WBFS" recover --backing "$T/backing.img" >"$T/recover.out" || fail "recover: $(cat "$T/recover.out")"
cat "$T/recover.out"
grep -q "is the image as of flush point" "$T/recover.out" || fail "recover named no flush point"
check_recovered "$T/backing.img"

# A new cache over the recovered backing: the same image.
truncate -s 16M "$T/cache.img"
wbfs_mount
cmp "$MNT/image" "$T/backing.img" || fail "the image over a new cache differs from the backing"
wbfs_umount
echo PASS
