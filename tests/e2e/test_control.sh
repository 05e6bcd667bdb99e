#!/bin/bash
# The control socket and the commands around it take any input without
# dying: paths that are not UTF-8, garbage and floods on the socket, planted
# socket directories, fake daemons, foreign mounts, unreadable configs.
. "$(dirname "$0")/lib.sh"
command -v python3 >/dev/null || skip "needs python3"
CTL="python3 $(dirname "$0")/ctl_client.py"

_bg=()      # our background helpers
_files=()   # our files outside $T (fake sockets in /run/wbfs)
_tmpfs=()
test_cleanup() {
  local p f m
  set +e
  for p in "${_bg[@]}"; do kill "$p" 2>/dev/null; wait "$p" 2>/dev/null; done
  for m in "${_tmpfs[@]}"; do
    if mountpoint -q "$m"; then
      # A wbfs mount on top of our tmpfs (the full-cache case) first.
      grep -q " $MNT " /proc/self/mountinfo && { "$WBFS" umount "$MNT" || umount -l "$MNT"; }
      umount -l "$m"
    fi
  done
  for f in "${_files[@]}"; do rm -f "$f"; done
  return 0
}
trap 'rc=$?; test_cleanup; (exit $rc); cleanup' EXIT
bg() { local out=$1; shift; "$@" >"$T/$out" 2>&1 & _bg+=($!); }
wait_for() { for _ in $(seq 1 100); do eval "$1" && return 0; sleep 0.1; done; fail "timed out: $1"; }
daemon_alive() { "$WBFS" status "$MNT" >/dev/null || fail "the daemon died after $1"; }

# --- 1. backing and cache names that are not UTF-8 --------------------------
mk_files 64 16
B="$T/b"$'\xff'"k.img"
C="$T/c"$'\xfe'"k.img"
mv "$T/backing.img" "$B"
mv "$T/cache.img" "$C"
"$WBFS" mount --backing "$B" --cache "$C" -o writeback_threshold=0 "$MNT"
SOCK=$($CTL path "$MNT")
_files+=("${SOCK%.sock}.log")  # the daemon's log when there is no syslog
"$WBFS" status "$MNT" >"$T/status.txt" || fail "status with a non-UTF-8 backing path"
daemon_alive "status"
"$WBFS" status --json "$MNT" >"$T/status.json"
python3 - "$T/status.json" "$B" "$C" <<'PY' || fail "status --json does not carry the paths faithfully"
import json, os, sys
j = json.load(open(sys.argv[1]))
assert bytes.fromhex(j["backing_hex"]) == os.fsencode(sys.argv[2]), j
assert bytes.fromhex(j["cache_hex"]) == os.fsencode(sys.argv[3]), j
assert j["backing"].endswith("/b\\xFFk.img"), j["backing"]
assert "mountpoint_hex" not in j
PY
# Raw bytes on the socket: each answered with an error, the daemon lives on.
for req in ff0a 0a "$(printf 'set writeback_threshold 70abc\n' | od -An -v -tx1 | tr -d ' \n')" \
           "$(printf 'set writeback_threshold\n' | od -An -v -tx1 | tr -d ' \n')" \
           "$(printf 'status\xff\n' | od -An -v -tx1 | tr -d ' \n')" \
           "$(printf 'set \xff 1\n' | od -An -v -tx1 | tr -d ' \n')"; do
  out=$($CTL send "$SOCK" "$req") || fail "no answer to $req"
  case $out in *'"error"'*) ;; *) fail "request $req: no error in '$out'" ;; esac
  daemon_alive "request $req"
done
grep -q '"writeback_threshold":0' "$T/status.json" || fail "status lacks writeback_threshold 0"
"$WBFS" status --json "$MNT" | grep -q '"writeback_threshold":0' || fail "'70abc' was taken"
# A request line without end is refused, not buffered for ever.
out=$($CTL send "$SOCK" "$(head -c 10000 /dev/zero | tr '\0' a | od -An -v -tx1 | tr -d ' \n')")
case $out in *"too long"*) ;; *) fail "an endless request: '$out'" ;; esac
daemon_alive "a long request"

# --- 7. without /dev/log the daemon logs next to its socket -------------------
logto=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["log"])' "$T/status.json")
if [ -S /dev/log ]; then
  [ "$logto" = syslog ] || fail "log goes to $logto although /dev/log exists"
else
  [ "$logto" = "${SOCK%.sock}.log" ] || fail "log $logto is not next to the socket $SOCK"
  grep -q "mounted $MNT/image" "$logto" || fail "the log file lacks the mount line"
  grep -q "^log  *$logto" "$T/status.txt" || fail "status does not say where the log is"
fi

# --- 3. a client that never reads its replies stalls nobody -----------------
bg flood.out $CTL flood "$SOCK" 100000
wait_for "grep -q sent $T/flood.out"
timeout 20 "$WBFS" status "$MNT" >/dev/null || fail "status hangs behind a client that does not read"
bg hold.out $CTL hold "$SOCK" 70
wait_for "grep -q holding $T/hold.out"
out=$($CTL send "$SOCK" "$(printf 'pid\n' | od -An -v -tx1 | tr -d ' \n')")
case $out in *"too many"*) ;; *) fail "the 70 idle connections: '$out'" ;; esac
kill "${_bg[-1]}"; wait "${_bg[-1]}" 2>/dev/null || true
wait_for "timeout 5 $WBFS status $MNT >/dev/null"
# The flooding client is still connected: unmounting must not wait for it.
timeout 60 "$WBFS" umount "$MNT" || fail "umount with a stalled control client"

# --- 1. offline tools on such paths ---------------------------------------------
rc=0; "$WBFS" check --json "$C" >"$T/check.json" || rc=$?
[ "$rc" -le 1 ] || fail "check --json exited $rc"
python3 -c 'import json,os,sys; j=json.load(open(sys.argv[1])); assert bytes.fromhex(j["cache_hex"])==os.fsencode(sys.argv[2])' \
  "$T/check.json" "$C" || fail "check --json: bad cache path"
"$WBFS" recover --backing "$B" --json >"$T/recover.json" || fail "recover --json"
python3 -c 'import json,os,sys; j=json.load(open(sys.argv[1])); assert bytes.fromhex(j["backing_hex"])==os.fsencode(sys.argv[2])' \
  "$T/recover.json" "$B" || fail "recover --json: bad backing path"

# --- 6. numbers are numbers ---------------------------------------------------------
for id in -1 99999999999999999999 18446744073709551615 " 1" 1x 0; do
  expect_exit 2 "needs a segment id" "$WBFS" dump "$C" --segment "$id"
done
"$WBFS" dump "$C" --segment 1 >/dev/null || fail "dump --segment 1"
mv "$B" "$T/backing.img"; mv "$C" "$T/cache.img"; mv "$B.wbfs-journal" "$T/backing.img.wbfs-journal"
expect_exit 2 "no spaces" wbfs_mount -o 'writeback_threshold= 70'
expect_exit 2 "no spaces" wbfs_mount -o 'writeback_threshold=70 '
printf '{"backing": "%s\\u0000junk", "cache": "%s"}\n' "$T/backing.img" "$T/cache.img" >"$T/nul.json"
expect_exit 2 "backing: must not contain a NUL" "$WBFS" mount --config "$T/nul.json" "$MNT"

# --- 5. a config that is not a readable file ------------------------------------------
expect_exit 2 "not a regular file" "$WBFS" mount --config "$T" "$MNT"
expect_exit 2 "not a regular file" "$WBFS" umount --config "$T"
expect_exit 2 "cannot be read" "$WBFS" mount --config "$T/none.json" "$MNT"

# --- 2. umount refuses what is not ours ---------------------------------------------------
mkdir "$T/tmpfs"
mount -t tmpfs -o size=1M wbfs-e2e "$T/tmpfs"
_tmpfs+=("$T/tmpfs")
expect_exit 1 "not a wbfs one" "$WBFS" umount "$T/tmpfs"
mountpoint -q "$T/tmpfs" || fail "wbfs umount unmounted a tmpfs"

# --- 4. socket directory and replies are untrusted ----------------------------------------
chmod 711 "$T"
mkdir -m 777 "$T/xdg" "$T/xdg/wbfs"
chmod 777 "$T/xdg/wbfs"
nob() { setpriv --reuid=65534 --regid=65534 --clear-groups env XDG_RUNTIME_DIR="$T/xdg" "$WBFS" "$@"; }
expect_exit 1 "is unsafe" nob status "$T/mnt"
chmod 755 "$T/xdg/wbfs"; chown 65534:65534 "$T/xdg/wbfs"
expect_exit 1 "is unsafe" nob status "$T/mnt"
mkdir "$T/fake" "$T/fake2" "$T/fake3"
FS=$($CTL path "$T/fake"); _files+=("$FS")
FS2=$($CTL path "$T/fake2"); _files+=("$FS2")
FS3=$($CTL path "$T/fake3"); _files+=("$FS3")
# A status reply with a field of the wrong type (nlohmann's type_error.302).
bg fake.out $CTL fake "$FS" '{"pid":1,"mountpoint":7}'
bg fake3.out $CTL fake "$FS3" '{"pid":"x"}'
wait_for "[ -S $FS ] && [ -S $FS3 ]"
expect_exit 1 "malformed reply" "$WBFS" status "$T/fake"
expect_exit 1 "malformed reply" "$WBFS" status "$T/fake3" --json
$CTL fake "$FS2" '[1]' 65534 >"$T/fake2.out" 2>&1 & _bg+=($!)
wait_for "grep -q listening $T/fake2.out"
expect_exit 1 "served by uid 65534" "$WBFS" status "$T/fake2"
chmod 700 "$T"

# --- 6. a cache that fills up: the prefill says it stopped, umount reports the failure ----
umount "$T/tmpfs"
mount -t tmpfs -o size=6M wbfs-e2e "$T/tmpfs"
truncate -s 16M "$T/tmpfs/cache.img"
"$WBFS" mount --backing "$T/backing.img" --cache "$T/tmpfs/cache.img" -o writeback_threshold=0 "$MNT"
wait_for "! $WBFS status --json $MNT | grep -q '\"prefilling\":true'"
"$WBFS" status "$MNT" | grep -q "new cache prefill .*stopped: .*No space left" ||
  fail "the prefill that hit ENOSPC: $("$WBFS" status "$MNT" | grep prefill)"
# Fill the log past the tmpfs: a cache write fails, the cache is Failed.
dd if=/dev/urandom of="$MNT/image" bs=1M count=12 conv=notrunc,fsync status=none 2>/dev/null || true
"$WBFS" status --json "$MNT" | grep -q '"failed":true' || fail "the cache did not fail"
expect_exit 1 "the daemon failed" "$WBFS" umount "$MNT"
grep -q " $MNT " /proc/self/mountinfo && fail "still mounted"
echo PASS
