#!/bin/sh
# Live mirror of SRC to DST with one-second delays. Run as root; stop with Ctrl-C (pending
# changes are synced before it exits).
set -eu
SRC=${1:?usage: mirror.sh SRC DST}
DST=${2:?usage: mirror.sh SRC DST}
BIN=${CLSYNC:-$(dirname "$0")/../target/release/clsync}
exec "$BIN" -M rsyncdirect -W "$SRC" -D "$DST" -w1 -t1 -T1
