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

daemon_pid() { pgrep -f -- "wbfs mount .*$T" | head -n1; }
# kill -9 of this test's daemon; returns once it is gone (its locks with it).
kill_daemon() {
  local pid
  pid=$(daemon_pid)
  [ -n "$pid" ] || fail "no daemon to kill"
  kill -9 "$pid"
  for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || return 0; sleep 0.05; done
  fail "daemon $pid survived kill -9"
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
