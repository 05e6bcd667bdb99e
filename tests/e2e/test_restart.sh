#!/bin/bash
# The daemon dies or is replaced under load; the consumer sees a pause,
# never an error, and no acknowledged write is lost (src/cli/supervisor.h):
#  1. fio (verify=crc32c, libaio QD32, several jobs) on a direct-I/O loop
#     device over the image while the daemon is killed with SIGKILL 10
#     times at random moments: every fio run ends with zero errors and its
#     verify passes; then unmount, mount again and verify it all again;
#  2. ext4 on the loop device and a file tree being written, no fsync,
#     while the daemon is killed 10 times: sync, unmount, e2fsck -fn clean
#     and every file as written (acknowledged writes kept, unsynced);
#  3. `wbfs restart` 10 times under the fio load, each time with a newly
#     installed binary: zero errors, and the new daemon runs the new file.
source "$(dirname "$0")/lib.sh"
command -v fio >/dev/null || skip "needs fio"
command -v jq >/dev/null || skip "needs jq"
mkdir -p "$T/fs"
# The daemons' log, for a failure's sake (cleanup removes it).
on_cleanup 'grep -l -- "$T/" /run/wbfs/*.log 2>/dev/null | xargs -r tail -n 30 >&2'

# A binary of our own that "upgrades" can replace (part 3).
mkdir -p "$T/bin"
cp "$WBFS" "$T/bin/wbfs"
WBFS=$T/bin/wbfs

# A small cache (64 MiB): the log wraps and writeback runs during the kills.
mk_files 512 64
wbfs_mount -o restart_limit=30
loop_attach
dev=$LOOPDEV

restarts() { "$WBFS" status "$MNT" --json | jq -r .supervisor.restarts; }
# Acknowledged writes the daemons so far rebuilt from the ack log.
rebuilt() {
  grep -h -o "[0-9]* acknowledged writes rebuilt" $(grep -l -- "$MNT" /run/wbfs/*.log) /dev/null |
    awk '{ s += $1 } END { print s + 0 }'
}

# fio's job on the loop device: 4 strided writers and 2 random ones.
job=$T/verify.fio
fio_verify_job "$job" 4 12 12 64
sed -i "s|^filename=.*|filename=$dev|" "$job"

# killer N MIN MAX: kills the daemon N times, MIN to MAX seconds apart,
# waiting each time for the new one to serve; then touches $T/killer.done.
# A failure is written to $T/killer.fail.
killer() {
  local n=$1 min=$2 max=$3 i pid
  for i in $(seq 1 "$n"); do
    sleep "$((RANDOM % (max - min + 1) + min)).$((RANDOM % 10))"
    pid=$(pgrep -f -- "wbfs mount --handover .*$T" | head -n1)
    [ -n "$pid" ] || { echo "kill $i: no daemon" >"$T/killer.fail"; break; }
    kill -9 "$pid"
    (wait_new_daemon "$pid") || { echo "kill $i: no new daemon after $pid" >"$T/killer.fail"; break; }
  done
  touch "$T/killer.done"
}

# fio_until_done WHAT: fio runs, each verified, until $T/killer.done;
# sets runs.
fio_until_done() {
  runs=0
  while [ ! -e "$T/killer.done" ]; do
    fio_verify_run "$job" "$T/fio.out" "fio run $((runs + 1)) $1"
    runs=$((runs + 1))
  done
}

# --- 1. fio under 10 kills.
before=$(restarts)
rm -f "$T/killer.done" "$T/killer.fail"
killer 10 1 3 &
kpid=$!
fio_until_done "with the daemon being killed"
wait "$kpid"
[ ! -e "$T/killer.fail" ] || fail "$(cat "$T/killer.fail")"
fio_verify_run "$job" "$T/fio.out" "fio after the kills"
got=$(restarts)
[ "$got" = $((before + 10)) ] || fail "status counts $got restarts, expected $((before + 10))"
echo "fio: $runs runs (zero errors, verified) while the daemon was killed 10 times;" \
  "$(rebuilt) acknowledged writes rebuilt from the ack log"
"$WBFS" status "$MNT" | grep "daemon restarts"

# Everything fio wrote survives a clean unmount and a new mount.
loop_detach "$dev"
wbfs_umount
wbfs_mount -o restart_limit=30
loop_attach
dev=$LOOPDEV
sed -i "s|^filename=.*|filename=$dev|" "$job"
fio_verify_run "$job" "$T/fio.out" "fio --verify_only after unmount and mount" --verify_only

# --- 2. ext4 and a file tree, no fsync, under 10 kills.
mkfs.ext4 -q -F "$dev"
mount "$dev" "$T/fs"
_mounts+=("$T/fs")
mkdir -p "$T/src"
for i in $(seq 1 64); do head -c $(((RANDOM % 32 + 1) * 4096 + RANDOM)) /dev/urandom >"$T/src/f$i"; done
: >"$T/written"
rm -f "$T/killer.done" "$T/killer.fail"
(
  i=0
  while [ ! -e "$T/killer.done" ]; do
    i=$((i + 1))
    d=$T/fs/d$((i % 16))
    mkdir -p "$d"
    cp "$T/src/f$((i % 64 + 1))" "$d/f$i" || { echo "cp f$i failed" >"$T/writer.fail"; exit 1; }
    echo "$i" >>"$T/written"
  done
) &
wpid=$!
killer 10 0 1
wait "$wpid" || fail "the file writer failed: $(cat "$T/writer.fail" 2>/dev/null)"
[ ! -e "$T/killer.fail" ] || fail "$(cat "$T/killer.fail")"
nfiles=$(wc -l <"$T/written")
[ "$nfiles" -gt 50 ] || fail "only $nfiles files written during the kills"
sync
umount "$T/fs"
_mounts=()
loop_detach "$dev"
wbfs_umount
wbfs_mount -o restart_limit=30
loop_attach
dev=$LOOPDEV
e2fsck -fn "$dev" >"$T/fsck.out" 2>&1 || { cat "$T/fsck.out"; fail "e2fsck found errors after the kills"; }
mount -o ro "$dev" "$T/fs"
_mounts+=("$T/fs")
while read -r i; do
  cmp -s "$T/src/f$((i % 64 + 1))" "$T/fs/d$((i % 16))/f$i" || fail "file f$i differs from what was written"
done <"$T/written"
echo "ext4: $nfiles files written without fsync during 10 kills, all intact, e2fsck clean;" \
  "$(rebuilt) acknowledged writes rebuilt from the ack log in all"
# Else the kills never caught a write between its reply and the cache.
[ "$(rebuilt)" -gt 0 ] || fail "no daemon had to rebuild a write: the ack log was not exercised"
umount "$T/fs"
_mounts=()

# --- 3. wbfs restart 10 times under fio, a new binary installed each time.
sed -i "s|^filename=.*|filename=$dev|" "$job"
rm -f "$T/killer.done"
(
  for i in $(seq 1 10); do
    sleep "$((RANDOM % 2)).$((RANDOM % 10))"
    # An upgrade: a new file (another inode) where the binary was.
    cp "$WBFS" "$T/bin/wbfs.new"
    printf 'build %d\n' "$i" >>"$T/bin/wbfs.new"
    mv -f "$T/bin/wbfs.new" "$T/bin/wbfs"
    "$WBFS" restart "$MNT" >>"$T/restart.out" 2>&1 || { echo "restart $i failed" >"$T/killer.fail"; break; }
    pid=$("$WBFS" status "$MNT" --json | jq -r .pid)
    [ "$(stat -L -c %i "/proc/$pid/exe")" = "$(stat -c %i "$T/bin/wbfs")" ] ||
      { echo "restart $i: daemon $pid does not run the new binary" >"$T/killer.fail"; break; }
  done
  touch "$T/killer.done"
) &
kpid=$!
fio_until_done "during wbfs restart"
wait "$kpid"
[ ! -e "$T/killer.fail" ] || { cat "$T/restart.out"; fail "$(cat "$T/killer.fail")"; }
cat "$T/restart.out"
echo "restart: 10 handovers to new binaries during $runs fio runs, zero errors"
loop_detach "$dev"
wbfs_umount
echo PASS
