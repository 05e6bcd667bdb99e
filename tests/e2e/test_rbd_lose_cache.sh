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
lose_cache_sources

"$WBFS" mount --backing rbd:rbd/vm --cache "$T/cache.img" -o max_dirty_age=2 "$MNT"
lose_cache_workload 3
"$WBFS" umount "$MNT" 2>/dev/null || umount -l "$MNT"

# Recovery from the cluster alone, once librbd has broken the dead client's lock.
retry_in_use "$WBFS" recover --backing rbd:rbd/vm
cat "$T/out"
grep -q "is the image as of flush point" "$T/out" || fail "recover named no flush point"
rbd export --no-progress rbd/vm "$T/vm.img" >/dev/null 2>&1
check_recovered "$T/vm.img"
echo PASS
