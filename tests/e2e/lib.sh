# Shared harness for the end-to-end tests. Source it first.
#
# Each test gets its own scratch directory and cleans up exactly what it
# created (its own loop devices, its own mounts, its own daemons), also
# when it fails or is killed by ctest's timeout. Without root or
# /dev/fuse the test is skipped (exit 77) unless WBFS_E2E_REQUIRED=1,
# where it fails instead: CI sets that, so a skip never passes as success.
set -euo pipefail

WBFS=${WBFS:?set WBFS to the wbfs binary}
WBFS_TESTIO=${WBFS_TESTIO:?set WBFS_TESTIO to the wbfs-testio binary}

skip() {
  if [ "${WBFS_E2E_REQUIRED:-0}" = 1 ]; then
    echo "FAIL (required): $*" >&2
    exit 1
  fi
  echo "SKIP: $*" >&2
  exit 77
}

[ "$(id -u)" = 0 ] || skip "needs root"
[ -c /dev/fuse ] || skip "needs /dev/fuse"

T=$(mktemp -d /tmp/wbfs-e2e.XXXXXX)
MNT=$T/mnt
mkdir -p "$MNT"
_loops=()
_mounts=()
# Commands cleanup runs after our mounts and daemons are gone and before
# $T is removed (a test's Ceph cluster, say): add with on_cleanup.
_cleanup_hooks=()
on_cleanup() { _cleanup_hooks+=("$*"); }

cleanup() {
  local rc=$?
  set +e
  for m in "${_mounts[@]}"; do
    mountpoint -q "$m" 2>/dev/null && umount "$m" 2>/dev/null
  done
  for l in "${_loops[@]}"; do losetup -d "$l" 2>/dev/null; done
  # Our daemons: their command lines name our scratch directory.
  if mountpoint -q "$MNT" 2>/dev/null || grep -q " $MNT " /proc/self/mountinfo; then
    "$WBFS" umount "$MNT" 2>/dev/null || umount -l "$MNT" 2>/dev/null
  fi
  pkill -9 -f -- "wbfs mount .*$T" 2>/dev/null
  for h in "${_cleanup_hooks[@]}"; do eval "$h"; done
  # Our daemons' log files (kept after unmount when there is no /dev/log).
  grep -l -- "$T/" /run/wbfs/*.log 2>/dev/null | xargs -r rm -f
  rm -rf "$T"
  exit $rc
}
trap cleanup EXIT
trap 'exit 1' INT TERM

fail() {
  echo "FAIL: $*" >&2
  exit 1
}

# Runs a command and checks its exit code and that stderr contains $2.
expect_exit() {
  local want=$1 msg=$2
  shift 2
  local rc=0
  "$@" 2>"$T/stderr" >/dev/null || rc=$?
  [ "$rc" = "$want" ] || fail "'$*' exited $rc, expected $want; stderr: $(cat "$T/stderr")"
  grep -q -- "$msg" "$T/stderr" || fail "'$*': stderr lacks '$msg': $(cat "$T/stderr")"
  [ "$(wc -l <"$T/stderr")" -le 1 ] || fail "'$*': more than one line on stderr: $(cat "$T/stderr")"
}

# mk_files BACKING_MIB CACHE_MIB: sparse backing and zeroed cache in $T.
mk_files() {
  truncate -s "${1}M" "$T/backing.img"
  truncate -s "${2}M" "$T/cache.img"
}

wbfs_mount() { "$WBFS" mount --backing "$T/backing.img" --cache "$T/cache.img" "$@" "$MNT"; }
wbfs_umount() { "$WBFS" umount "$MNT"; }

# losetup on the image, remembered for cleanup; sets LOOPDEV. (Not
# dev=$(loop_attach): a command substitution is a subshell, and the device
# would never reach _loops, so a failing test would leak it.)
loop_attach() { loop_attach_file "$MNT/image" --direct-io=on; }
# loop_attach_file FILE [LOSETUP-ARGS...]: the same for any file.
loop_attach_file() {
  LOOPDEV=$(losetup -f --show "${@:2}" "$1")
  _loops+=("$LOOPDEV")
}
loop_detach() {
  losetup -d "$1"
  local keep=()
  for l in "${_loops[@]}"; do [ "$l" = "$1" ] || keep+=("$l"); done
  _loops=("${keep[@]}")
}

# The mount's daemon: started by its supervisor as `wbfs mount --handover
# ... MOUNTPOINT` (src/cli/supervisor.h), or the `wbfs mount` process
# itself when there is no supervisor (restart_limit=0).
daemon_pid() {
  local p
  p=$(pgrep -f -- "wbfs mount --handover .*$T" | head -n1)
  [ -n "$p" ] || p=$(pgrep -f -- "wbfs mount .*$T" | head -n1)
  echo "$p"
}
# The supervisor: the daemon's parent, when that is a `wbfs mount` too.
supervisor_pid() {
  local d p
  d=$(pgrep -f -- "wbfs mount --handover .*$T" | head -n1)
  [ -n "$d" ] || return 0
  p=$(ps -o ppid= -p "$d" | tr -d ' ')
  tr '\0' ' ' <"/proc/$p/cmdline" 2>/dev/null | grep -q "wbfs mount " && echo "$p"
  return 0
}
wait_gone() {
  for _ in $(seq 1 100); do kill -0 "$1" 2>/dev/null || return 0; sleep 0.05; done
  fail "process $1 survived kill -9"
}
# kill -9 of this test's mount, supervisor first, then its daemon: the
# mount ends as when the machine crashes (a daemon killed alone is
# replaced by its supervisor; see kill_daemon_only). Returns once both are
# gone (their locks with them).
kill_daemon() {
  local pid sup
  pid=$(daemon_pid)
  [ -n "$pid" ] || fail "no daemon to kill"
  sup=$(supervisor_pid)
  # Stopped first (at once), so that it cannot start another daemon.
  [ -z "$sup" ] || kill -STOP "$sup"
  kill -9 "$pid"
  [ -z "$sup" ] || kill -9 "$sup"
  wait_gone "$pid"
  [ -z "$sup" ] || wait_gone "$sup"
}
# kill -9 of the daemon alone (its supervisor starts another); prints
# nothing, returns once it is gone.
kill_daemon_only() {
  local pid
  pid=$(pgrep -f -- "wbfs mount --handover .*$T" | head -n1)
  [ -n "$pid" ] || fail "no supervised daemon to kill"
  kill -9 "$pid"
  wait_gone "$pid"
}
# Waits (up to 20 s) until a daemon other than $1 answers on the mount.
wait_new_daemon() {
  local p
  for _ in $(seq 1 200); do
    p=$("$WBFS" status "$MNT" --json 2>/dev/null | jq -r .pid 2>/dev/null || true)
    [ -n "$p" ] && [ "$p" != null ] && [ "$p" != "$1" ] && return 0
    sleep 0.1
  done
  fail "no new daemon serves $MNT 20 s after daemon $1 ended"
}
# After a file system test on $LOOPDEV mounted at $T/fs: takes it all down
# (fs, loop device, wbfs), mounts the image again, attaches it and checks
# it with e2fsck -fn. LOOPDEV is then the new device.
remount_fsck() {
  umount "$T/fs"
  loop_detach "$LOOPDEV"
  wbfs_umount
  wbfs_mount "$@"
  loop_attach
  e2fsck -fn "$LOOPDEV" >"$T/fsck.out" 2>&1 || { cat "$T/fsck.out"; fail "e2fsck found errors"; }
}

# --- The fio verify job (test_fio_verify.sh, test_rbd.sh) on $MNT/image:
# NSTRIDED strided writers sharing one range (writer i writes every
# NSTRIDED-th 4 KiB block from block i, SIZE in all), so that they hit the
# same blocks' neighbours and segments at once while no byte is written by
# two of them (fio cannot verify bytes that two jobs race on); and two
# random writers of mixed sizes up to 256 KiB, RSIZE each, from ROFF on.
# fio_verify_job FILE NSTRIDED SIZE RSIZE ROFF (sizes in MiB)
fio_verify_job() {
  local f=$1 n=$2 size=$3 rsize=$4 roff=$5 i
  printf '[global]\nfilename=%s\ndirect=1\nioengine=libaio\niodepth=32\nverify=crc32c\nverify_fatal=1\nrandrepeat=1\n' \
    "$MNT/image" >"$f"
  for i in $(seq 0 $((n - 1))); do
    printf '[strided%d]\nrw=write\nbs=4k\nsize=%dm\noffset=%dk\nzonemode=strided\nzonesize=4k\nzoneskip=%dk\n' \
      "$i" "$size" $((i * 4)) $(((n - 1) * 4)) >>"$f"
  done
  for i in 0 1; do
    printf '[rand%d]\nrw=randwrite\nbsrange=4k-256k\nsize=%dm\noffset=%dm\n' "$i" "$rsize" $((roff + i * rsize)) >>"$f"
  done
}
# fio_verify_run JOB OUT WHAT [FIO-OPTIONS...]: runs the job (in $T, where
# fio leaves its verify state); any error fails the test with WHAT.
fio_verify_run() {
  local job=$1 out=$2 what=$3
  shift 3
  (cd "$T" && fio --output="$out" "$@" "$job") || { cat "$out"; fail "$what"; }
  grep -q "err= 0" "$out" || { cat "$out"; fail "$what: fio reported errors"; }
}

# --- Losing the SSD (test_lose_cache.sh, test_rbd_lose_cache.sh).
# lose_cache_sources: 300 random files $T/src/f1..f300; `src I` names the
# content of file I.
lose_cache_sources() {
  mkdir -p "$T/src" "$T/fs"
  local i
  for i in $(seq 1 300); do head -c $(( (RANDOM % 64 + 1) * 4096 )) /dev/urandom >"$T/src/f$i"; done
}
src() { echo "$T/src/f$(( ($1 - 1) % 300 + 1 ))"; }
# lose_cache_workload MIN_SECONDS: on the mounted image, ext4 on a loop
# device; 30 files made durable and written back (drop_caches), then more
# files with a sync every 5 until, MIN_SECONDS to MIN_SECONDS+4 s later,
# the daemon is killed (its status saved in $T/status.out just before) and
# the cache file deleted. Leaves the dead mount to the caller.
lose_cache_workload() {
  local dev writer i
  loop_attach
  dev=$LOOPDEV
  mkfs.ext4 -q -F "$dev"
  mount "$dev" "$T/fs"
  _mounts+=("$T/fs")
  for i in $(seq 1 30); do cp "$T/src/f$i" "$T/fs/f$i"; done
  sync
  "$WBFS" message "$MNT" drop_caches >/dev/null
  [ "$("$WBFS" status "$MNT" --json | jq .nr_dirty_cache_blocks)" = 0 ] || fail "drop_caches left dirty blocks"
  (
    for i in $(seq 31 20000); do
      cp "$(src "$i")" "$T/fs/f$i" 2>/dev/null || exit 0
      [ $((i % 5)) = 0 ] && { sync 2>/dev/null || exit 0; }
    done
  ) &
  writer=$!
  sleep "$(( RANDOM % 4 + $1 )).$(( RANDOM % 10 ))"
  "$WBFS" status "$MNT" >"$T/status.out" || true
  kill_daemon
  rm -f "$T/cache.img"
  wait "$writer" || true
  umount -l "$T/fs" 2>/dev/null || true
  _mounts=()
  loop_detach "$dev"
}
# check_recovered IMG: e2fsck passes (after ext4's own journal replay), the
# 30 files written back before the loss are whole, and every later file
# present is a prefix of its content (the workload only appends).
check_recovered() {
  local i size later=0
  e2fsck -E journal_only -y "$1" >"$T/fsck0.out" 2>&1 || true
  e2fsck -fn "$1" >"$T/fsck.out" 2>&1 || { cat "$T/fsck.out"; fail "e2fsck found errors after recovery"; }
  loop_attach_file "$1" -r
  mount -o ro "$LOOPDEV" "$T/fs"
  _mounts+=("$T/fs")
  for i in $(seq 1 30); do
    cmp -s "$T/src/f$i" "$T/fs/f$i" || fail "f$i, written back before the loss, is missing or differs"
  done
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
}
