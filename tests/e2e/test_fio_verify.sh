#!/bin/bash
# Concurrent asynchronous direct I/O (libaio, QD32, several jobs) with
# crc32c verification, where FUSE image exports are known to break.
# The strided jobs share one range: each writes every 4th 4 KiB block, so
# all four hit the same engine blocks' neighbours and segments at once
# while no byte is written by two jobs (fio cannot verify bytes that two
# jobs race on). The random jobs use mixed sizes up to 256 KiB.
# Everything is verified again by fio --verify_only after a remount.
. "$(dirname "$0")/lib.sh"
command -v fio >/dev/null || skip "needs fio"

mk_files 256 32
wbfs_mount
cat >"$T/job.fio" <<EOJ
[global]
filename=$MNT/image
direct=1
ioengine=libaio
iodepth=32
verify=crc32c
verify_fatal=1
randrepeat=1
[strided0]
rw=write
bs=4k
size=64m
offset=0
zonemode=strided
zonesize=4k
zoneskip=12k
[strided1]
rw=write
bs=4k
size=64m
offset=4k
zonemode=strided
zonesize=4k
zoneskip=12k
[strided2]
rw=write
bs=4k
size=64m
offset=8k
zonemode=strided
zonesize=4k
zoneskip=12k
[strided3]
rw=write
bs=4k
size=64m
offset=12k
zonemode=strided
zonesize=4k
zoneskip=12k
[rand0]
rw=randwrite
bsrange=4k-256k
size=48m
offset=128m
[rand1]
rw=randwrite
bsrange=4k-256k
size=48m
offset=176m
EOJ
fio --output="$T/fio.out" "$T/job.fio" || { cat "$T/fio.out"; fail "fio verification failed"; }
grep -q "err= 0" "$T/fio.out" || fail "fio reported errors"
wbfs_umount
wbfs_mount
fio --output="$T/fio2.out" --verify_only "$T/job.fio" || { cat "$T/fio2.out"; fail "verify after remount failed"; }
wbfs_umount
echo PASS
