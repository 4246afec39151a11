#!/usr/bin/env bash
# Builds the release binary and runs the shared syncbench harness with three daemons side by side:
# clsync 0.4.5 (/usr/bin/clsync), lsyncd 2.2.3 (/usr/bin/lsyncd) and ours (target/release/clsync).
#
#   scripts/bench.sh [quick|default] [extra syncbench.py args...]
#
# Needs root (the harness mounts tmpfs and sets inotify sysctls) and the Debian packages
# clsync, lsyncd and rsync. The run goes to $BENCH_OUT/<stamp>-<preset>/ (default
# target/bench/), and the path of its report.md is written to $BENCH_OUT/BENCHMARKS-latest
# (and printed on the last line). Before measuring it waits (polling every 30 s, at most
# 20 minutes) until no fuzzer and no rustc runs on the machine (BENCH_NO_WAIT=1 skips that), and
# always until no other syncbench.py runs (they would share and empty the same tmpfs mounts);
# it builds nothing while the harness runs.
set -euo pipefail

preset="${1:-quick}"
[ $# -gt 0 ] && shift
case "$preset" in
quick) preset_args=(--quick) ;;
default) preset_args=(--max-minutes 40) ;;
*)
    echo "usage: $0 [quick|default] [extra syncbench.py args...]" >&2
    exit 2
    ;;
esac

repo="$(cd "$(dirname "$0")/.." && pwd)"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$repo/target}"
harness="${SYNCBENCH_DIR:-$repo/../shared/bench}"
[ -x "$harness/syncbench.py" ] || harness=/work/shared/bench
out_root="${BENCH_OUT:-$CARGO_TARGET_DIR/bench}"

if [ "$(id -u)" != 0 ]; then
    echo "$0: the harness needs root" >&2
    exit 1
fi
for b in /usr/bin/clsync /usr/bin/lsyncd /usr/bin/rsync; do
    [ -x "$b" ] || {
        echo "$0: $b is missing: apt-get install -y clsync lsyncd rsync" >&2
        exit 1
    }
done

(cd "$repo" && cargo build --release)
ours="$CARGO_TARGET_DIR/release/clsync"

busy() {
    # `pgrep -f fuzz/target` alone misses cargo-fuzz children that run a relative target/ path.
    pgrep -f 'fuzz/target|cargo-fuzz|-artifact_prefix=' >/dev/null || pgrep -x rustc >/dev/null
}
if [ -z "${BENCH_NO_WAIT:-}" ]; then
    for i in $(seq 1 40); do
        busy || break
        [ "$i" = 40 ] && echo "$0: still busy after 20 minutes; measuring anyway" >&2
        [ "$i" = 1 ] && echo "$0: waiting for fuzzers/builds to end (polling every 30 s)" >&2
        sleep 30
    done
fi
# Another syncbench run uses the same tmpfs mounts (/tmp/benchwork/t, /tmp/benchwork/d) and empties
# them: never start beside one, whatever BENCH_NO_WAIT says.
for i in $(seq 1 40); do
    pgrep -f 'syncbench\.py' >/dev/null || break
    if [ "$i" = 40 ]; then
        echo "$0: another syncbench.py is still running after 20 minutes; not starting" >&2
        exit 1
    fi
    [ "$i" = 1 ] && echo "$0: another syncbench.py is running; waiting (polling every 30 s)" >&2
    sleep 30
done

stamp="$(date -u +%Y%m%d-%H%M%S)"
out="$out_root/$stamp-$preset"
mkdir -p "$out_root"
(cd "$harness" && ./syncbench.py "${preset_args[@]}" \
    --daemon clsync=/usr/bin/clsync \
    --daemon lsyncd=/usr/bin/lsyncd \
    --daemon "ours=$ours" \
    --out "$out" "$@")

echo "$out/report.md" >"$out_root/BENCHMARKS-latest"

# A default run with the three daemons and nothing else asked of the harness replaces the tables
# between the markers in BENCHMARKS.md (the summary above them is written by hand: it reads the
# tables against the targets). BENCH_NO_UPDATE=1 leaves the file alone.
if [ "$preset" = default ] && [ $# -eq 0 ] && [ -z "${BENCH_NO_UPDATE:-}" ]; then
    commit="$(git -C "$repo" rev-parse --short HEAD 2>/dev/null || echo unknown)"
    [ -n "$(git -C "$repo" status --porcelain --untracked-files=no 2>/dev/null)" ] && commit="$commit + local changes"
    python3 - "$repo/BENCHMARKS.md" "$out/report.md" "$stamp" "$commit" <<'PY'
import re, sys
doc_path, report_path, stamp, commit = sys.argv[1:]
begin, end = '<!-- bench.sh: latest default run -->', '<!-- bench.sh: end -->'
doc = open(doc_path).read()
if begin not in doc or end not in doc:
    sys.exit('BENCHMARKS.md has no bench.sh markers; not updated')
report = open(report_path).read()
body = report[report.index('## Machine'):report.index('## Exact commands')]
body = re.sub(r'^## ', '### ', body, flags=re.M).replace('\n### N = ', '\n#### N = ')
when = '%s-%s-%s %s:%s UTC' % (stamp[:4], stamp[4:6], stamp[6:8], stamp[9:11], stamp[11:13])
block = '%s\n## Results: default preset, %s (commit %s)\n\nWritten by `scripts/bench.sh default`.\n\n%s%s' % (
    begin, when, commit, body, end)
i, j = doc.index(begin), doc.index(end) + len(end)
open(doc_path, 'w').write(doc[:i] + block + doc[j:])
print('BENCHMARKS.md: tables of this run written between the bench.sh markers')
PY
fi
echo "report: $out/report.md"
