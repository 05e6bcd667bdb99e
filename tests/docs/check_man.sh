#!/bin/bash
# The man pages render without a warning (man-db's --warnings, as lintian).
set -euo pipefail
command -v man >/dev/null || { echo "FAIL: man (man-db) is missing"; exit 1; }
for page in "$@"; do
  out=$(LC_ALL=C.UTF-8 MANWIDTH=80 man --warnings -E UTF-8 -l "$page" 2>&1 >/dev/null)
  if [ -n "$out" ]; then
    echo "FAIL: $page: $out"
    exit 1
  fi
  lines=$(LC_ALL=C.UTF-8 MANWIDTH=80 man -E UTF-8 -l "$page" 2>/dev/null | wc -l)
  [ "$lines" -gt 20 ] || { echo "FAIL: $page rendered to $lines lines"; exit 1; }
done
echo PASS
