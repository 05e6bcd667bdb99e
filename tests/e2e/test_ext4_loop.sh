#!/bin/bash
# ext4 on a direct-I/O loop device on the image: write a file tree, tear
# everything down, mount again, e2fsck -fn is clean and checksums match.
. "$(dirname "$0")/lib.sh"
command -v mkfs.ext4 >/dev/null || skip "needs e2fsprogs"

mk_files 512 48
wbfs_mount
loop_attach
dev=$LOOPDEV
mkfs.ext4 -q -F "$dev"
mkdir -p "$T/fs"
mount "$dev" "$T/fs"
_mounts+=("$T/fs")
# A file tree larger than the cache, many small files and a few big ones.
for d in 1 2 3 4 5 6 7 8; do
  mkdir -p "$T/fs/dir$d"
  for f in $(seq 1 200); do head -c $((RANDOM * 3)) /dev/urandom >"$T/fs/dir$d/f$f"; done
  head -c $((10 << 20)) /dev/urandom >"$T/fs/dir$d/big"
done
(cd "$T/fs" && find . -type f -print0 | sort -z | xargs -0 sha256sum) >"$T/sums"
remount_fsck
dev=$LOOPDEV
mount "$dev" "$T/fs"
(cd "$T/fs" && sha256sum --quiet -c "$T/sums") || fail "checksums differ"
umount "$T/fs"
loop_detach "$dev"
wbfs_umount
echo PASS
