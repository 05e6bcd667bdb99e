# The harness of the RBD end-to-end tests: lib.sh, then a single-node
# Ceph cluster of the test's own (scripts/ceph-test-cluster) in its
# scratch directory, stopped by cleanup. Source it first. Skips (exit 77,
# or fails under WBFS_E2E_REQUIRED=1) without Ceph's packages or with a
# wbfs built without librbd.
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
for c in ceph-mon ceph-osd ceph rbd uuidgen python3; do
  command -v "$c" >/dev/null || skip "needs $c (apt-get install --no-install-recommends ceph-mon ceph-osd ceph-common uuid-runtime)"
done
command -v jq >/dev/null || skip "needs jq"
if "$WBFS" recover --backing rbd:p/i --ceph-conf /dev/null 2>&1 | grep -q "built without librbd"; then
  skip "this wbfs was built without librbd (librbd-dev)"
fi

CLUSTER=$T/ceph
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
# A free port for the monitor, so that two test runs on one host do not meet.
WBFS_CEPH_MON_PORT=${WBFS_CEPH_MON_PORT:-$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')}
export WBFS_CEPH_MON_PORT
on_cleanup "'$ROOT/scripts/ceph-test-cluster' down '$CLUSTER'"
"$ROOT/scripts/ceph-test-cluster" up "$CLUSTER"
export CEPH_CONF=$CLUSTER/ceph.conf

# After a kill -9 the dead client holds the image's exclusive lock until
# its watch times out; librbd then breaks it for the next client. Runs a
# command again while the image is "in use" (its stdout in $T/out) and
# prints how long that took.
retry_in_use() {
  local t0 rc=0
  t0=$(date +%s%3N)
  for _ in $(seq 1 120); do
    rc=0
    "$@" >"$T/out" 2>"$T/stderr" || rc=$?
    [ $rc = 0 ] && break
    grep -q "is in use" "$T/stderr" || fail "'$*': $(cat "$T/stderr")"
    sleep 0.5
  done
  [ $rc = 0 ] || fail "the dead client's lock was never broken: $(cat "$T/stderr")"
  echo "$2: the dead client's lock was broken after $(($(date +%s%3N) - t0)) ms"
}

# A ceph command, again on failure: now and then, soon after the cluster
# started, the monitor refused a client's command with EPERM ("problem
# getting command descriptions", its "wrong fsid" check).
ceph_retry() {
  local i
  for i in 1 2 3 4 5; do
    ceph "$@" 2>"$T/ceph.err" && return 0
    sleep 1
  done
  fail "ceph $*: $(cat "$T/ceph.err")"
}
