#!/bin/bash
# cmake --install puts the binary, both man pages, the example config and
# the systemd unit where they belong (into a scratch prefix).
set -euo pipefail
build=$1
p=$(mktemp -d)
trap 'rm -rf "$p"' EXIT
cmake --install "$build" --prefix "$p" >/dev/null
for f in sbin/wbfs share/man/man8/wbfs.8 share/man/man5/wbfs.json.5 \
         share/doc/wbfs/examples/wbfs.json lib/systemd/system/wbfs@.service; do
  [ -e "$p/$f" ] || { echo "FAIL: $f not installed"; find "$p"; exit 1; }
done
"$p/sbin/wbfs" --help | grep -q "writeback" || { echo "FAIL: the installed wbfs does not run"; exit 1; }
echo PASS
