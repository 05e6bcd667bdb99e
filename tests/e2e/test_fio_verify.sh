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
fio_verify_job "$T/job.fio" 4 64 48 128
fio_verify_run "$T/job.fio" "$T/fio.out" "fio verification failed"
wbfs_umount
wbfs_mount
fio_verify_run "$T/job.fio" "$T/fio2.out" "verify after remount failed" --verify_only
wbfs_umount
echo PASS
