#!/usr/bin/env bash
# Builds the benchmarks (Release, in build-bench/) and regenerates bench/RESULTS.md: countersign
# against raw NATS in the same run (bench_system) plus the micro-benchmarks (bench_micro).
#
#   bench/run.sh            full run (about 4.5 minutes on 2 cores plus the build; must stay under 10)
#   bench/run.sh --quick    about one minute: shorter windows, one round, no 100k scale step
#   bench/run.sh --no-build use the binaries already in the build dir
#   bench/run.sh --profile  also run countersign and the bare relays under callgrind (allow, hold,
#                           approve phases) and write annotated profiles to <build dir>/profile/
#   bench/run.sh --out FILE write the results somewhere else than bench/RESULTS.md
#   bench/run.sh --slack    also the Slack bridge benchmark (bench/slack_bench.mjs, about 40 s; node)
#   bench/run.sh --countersign PATH
#                           measure another countersign binary (another commit's build) with this
#                           tree's benchmarks (it must accept their configs); also
#                           COUNTERSIGN_BIN=PATH. See "Before and after" in bench/README.md
#   bench/run.sh --soak     only the soak: 10 minutes of mixed load (80% allowed, 20% held and
#                           approved), RSS sampled every 5 s; writes bench/SOAK.md and SOAK.png
#                           (BENCH_SOAK_SECONDS shortens it for a try)
#   bench/run.sh --scale-1m only the scale phase, up to 1,000,000 pending records (1k, 100k, 1M);
#                           writes bench/SCALE-1M.md
#
# Next to the results it draws the ratio chart with gnuplot (bench/plot.gp): bench/RESULTS.png,
# or FILE without .md plus .png; without gnuplot it installs gnuplot-nox when run as root, and
# otherwise skips the chart (the tables stay the record). CI does not run this script.
#
# Environment: BENCH_BUILD_DIR (default build-bench), COUNTERSIGN_BIN, BENCH_COUNTERSIGN_EXTRA_YAML,
# BENCH_COUNTERSIGN_WRAPPER, BENCH_RELAY_WRAPPER and BENCH_SIDECAR_WRAPPER (see bench/README.md).
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
build_dir=${BENCH_BUILD_DIR:-$root/build-bench}
out=$root/bench/RESULTS.md
quick=0
build=1
profile=0
slack=0
mode=full
out_given=0
countersign_bin=${COUNTERSIGN_BIN:-}
command_line="bench/run.sh${*:+ $*}"
while [[ $# -gt 0 ]]; do
  case $1 in
    --quick) quick=1 ;;
    --no-build) build=0 ;;
    --profile) profile=1 ;;
    --out) out=$2; out_given=1; shift ;;
    --soak) mode=soak ;;
    --scale-1m) mode=scale-1m ;;
    --slack) slack=1 ;;  # Slack bridge hook (bench/slack_bench.mjs)
    --countersign) countersign_bin=$2; shift ;;
    -h|--help) sed -n '2,27p' "$0"; exit 0 ;;
    *) echo "run.sh: unknown argument $1" >&2; exit 2 ;;
  esac
  shift
done

if [[ $build == 1 ]]; then
  # Warnings stay on but are not errors here: GCC 12 at -O2/-O3 reports a false -Wrestrict in
  # std::string concatenation (src/nats/connection.cpp), which would stop a Release build.
  cmake -S "$root" -B "$build_dir" -DCMAKE_BUILD_TYPE=Release -DCOUNTERSIGN_WERROR=OFF \
    -DCOUNTERSIGN_TESTS=OFF >/dev/null
  cmake --build "$build_dir" --target countersign bench_micro bench_system -j"$(nproc)" >/dev/null
fi
bench_system=$build_dir/bench/bench_system
bench_micro=$build_dir/bench/bench_micro
binaries=("$bench_system")
[[ $mode == full ]] && binaries+=("$bench_micro")
for binary in "${binaries[@]}"; do
  [[ -x $binary ]] || { echo "run.sh: $binary is missing (run without --no-build)" >&2; exit 1; }
done

work=$(mktemp -d "${TMPDIR:-/tmp}/countersign-bench-run-XXXXXX")
trap 'rm -rf "$work"' EXIT

# Another binary: bench_system puts BENCH_COUNTERSIGN_WRAPPER in front of its own countersign's
# command line, so a wrapper that drops that path and runs the given binary with the same
# arguments (behind any wrapper already asked for) measures it under the same benchmarks.
if [[ -n $countersign_bin ]]; then
  countersign_bin=$(realpath "$countersign_bin")
  [[ -x $countersign_bin ]] || { echo "run.sh: $countersign_bin is not an executable" >&2; exit 1; }
  printf '#!/bin/sh\nshift\nexec %s "%s" "$@"\n' "${BENCH_COUNTERSIGN_WRAPPER:-}" "$countersign_bin" \
    >"$work/countersign-other"
  chmod +x "$work/countersign-other"
  export BENCH_COUNTERSIGN_WRAPPER=$work/countersign-other
  echo "run.sh: measuring $countersign_bin ($("$countersign_bin" --version 2>/dev/null | head -1))" >&2
fi

started=$(date +%s)
date_utc=$(date -u +"%Y-%m-%d %H:%M UTC")
load_before=$(cut -d' ' -f1-3 /proc/loadavg)
system_args=(run --out "$work/system.md")
micro_time=0.5
if [[ $quick == 1 ]]; then
  system_args+=(--quick)
  micro_time=0.05
fi
case $mode in
  soak)
    system_args+=(--only soak --soak-seconds "${BENCH_SOAK_SECONDS:-600}")
    [[ $out_given == 1 ]] || out=$root/bench/SOAK.md ;;
  scale-1m)
    system_args+=(--only scale --scale-max 1000000)
    [[ $out_given == 1 ]] || out=$root/bench/SCALE-1M.md ;;
esac
run_kind=$([[ $quick == 1 ]] && echo quick || echo full)
[[ $mode == full ]] || run_kind=$mode

echo "run.sh: system benchmarks ($run_kind run)" >&2
"$bench_system" "${system_args[@]}"
if [[ $mode == full ]]; then
  echo "run.sh: micro-benchmarks" >&2
  "$bench_micro" --benchmark_min_time="$micro_time" --benchmark_format=json --benchmark_out="$work/micro.json" \
    --benchmark_out_format=json >/dev/null
  "$bench_system" micro-table "$work/micro.json" >"$work/micro.md"
fi
# --- Slack bridge hook: its own script, its own section of the results ---
if [[ $slack == 1 ]]; then
  echo "run.sh: Slack bridge benchmark" >&2
  node "$root/bench/slack_bench.mjs" "$build_dir/src/countersign" "$(command -v nats-server)" >"$work/slack.md"
fi
finished=$(date +%s)
load_after=$(cut -d' ' -f1-3 /proc/loadavg)

# "<inclusive instructions> <calls>" of the first function whose name contains $2, from callgrind
# output $1 (calls summed over its callers); nothing when it is not there. awk reads to the end:
# an early exit would kill callgrind_annotate with SIGPIPE, which pipefail turns into a failure.
ir_and_calls() {
  callgrind_annotate --inclusive=yes --tree=caller --threshold=100 "$1" 2>/dev/null | awk -v pat="$2" '
    /^ *$/ { calls = 0; next }
    /^ *[0-9,]+ \([ 0-9.]+%\)  < / {
      s = $0
      if (sub(/.*\(/, "", s) && sub(/x\).*/, "", s)) { gsub(",", "", s); calls += s }
      next
    }
    /^ *[0-9,]+ \([ 0-9.]+%\)  \*  / {
      if (!done && index($0, pat) > 0 && calls > 0) { ir = $1; gsub(",", "", ir); print ir, calls; done = 1 }
      calls = 0
    }'
}
program_total() {
  # awk reads to the end: an early exit would kill callgrind_annotate with SIGPIPE (pipefail).
  callgrind_annotate "$1" 2>/dev/null | awk '/PROGRAM TOTALS/ && !done { gsub(",", "", $1); print $1; done = 1 }'
}
# One table row: what, file, function; per call and, with $4 = "total", the whole process per call.
profile_row() {
  local what=$1 file=$2 fn=$3 with_total=${4:-}
  local role
  role=$(grep -m1 '^cmd:' "$file" | sed -nE 's|.*/(cs-[^/ ]*)/countersign.yaml.*|\1|p')
  [[ -n $role ]] && what="$what ($role)"
  local ir="" calls=""
  read -r ir calls < <(ir_and_calls "$file" "$fn") || true
  [[ -n ${calls:-} && ${calls:-0} -gt 0 ]] || return 0
  local total=-
  if [[ $with_total == total ]]; then total=$(($(program_total "$file") / calls)); fi
  echo "| $what | \`$fn\` | $calls | $((ir / calls)) | $total |"
}

if [[ $profile == 1 && $mode == full ]]; then
  profile_dir=$build_dir/profile
  rm -rf "$profile_dir"
  mkdir -p "$profile_dir/allow" "$profile_dir/control"
  echo "run.sh: profiling countersign and the relays under callgrind into $profile_dir" >&2
  BENCH_COUNTERSIGN_WRAPPER="valgrind --tool=callgrind --callgrind-out-file=$profile_dir/allow/countersign.%p" \
    BENCH_RELAY_WRAPPER="valgrind --tool=callgrind --callgrind-out-file=$profile_dir/allow/relay.%p" \
    "$bench_system" run --quick --only allow --out "$profile_dir/allow/system.md"
  BENCH_COUNTERSIGN_WRAPPER="valgrind --tool=callgrind --callgrind-out-file=$profile_dir/control/countersign.%p" \
    "$bench_system" run --quick --only hold,approve --out "$profile_dir/control/system.md"
  for file in "$profile_dir"/*/countersign.[0-9]* "$profile_dir"/*/relay.[0-9]*; do
    callgrind_annotate --inclusive=yes "$file" >"$file.inclusive.txt" 2>/dev/null || true
    callgrind_annotate "$file" >"$file.self.txt" 2>/dev/null || true
  done
  {
    echo "### 9. Instructions per operation (callgrind)"
    echo
    echo "\`bench/run.sh --profile\`: the quick allow, hold and approve phases again with countersign and the"
    echo "relay under \`valgrind --tool=callgrind\` (annotated files in \`$(basename "$build_dir")/profile/\`)."
    echo "Instruction counts do not depend on the machine's load. \"Process\" divides the whole process's"
    echo "instructions (all threads: cnats reader and flusher, replayer, start-up) by the calls."
    echo
    echo "| operation | function | calls | instructions per call | process instructions per call |"
    echo "|---|---|---|---|---|"
    for file in "$profile_dir"/allow/relay.[0-9]*; do
      [[ $file == *.txt ]] || profile_row "allowed message, bare relay" "$file" "relayMessage" total
    done
    for file in "$profile_dir"/allow/countersign.[0-9]*; do
      [[ $file == *.txt ]] || {
        profile_row "allowed message, countersign" "$file" "countersign::natsio::Subscription::onMessage" total
        profile_row "  of which Intake::forward" "$file" "countersign::Intake::forward"
        profile_row "  of which toNatsMsg" "$file" "countersign::natsio::toNatsMsg"
        profile_row "  of which topicOf + targetFor: topicOf" "$file" "countersign::subject::topicOf"
        profile_row "  of which topicOf + targetFor: targetFor" "$file" "countersign::subject::targetFor"
        profile_row "  of which fromNatsMsg" "$file" "countersign::natsio::fromNatsMsg"
        profile_row "  of which Policy::evaluate" "$file" "countersign::Policy::evaluate"
      }
    done
    for file in "$profile_dir"/control/countersign.[0-9]*; do
      [[ $file == *.txt ]] || {
        profile_row "hold" "$file" "countersign::Intake::hold"
        profile_row "  of which EventSink::emit" "$file" "countersign::EventSink::emit"
        profile_row "  of which jobHash" "$file" "countersign::jobHash"
        profile_row "replayer: one pending record in one scan (cached after its first get)" "$file" "countersign::Replayer::expireIfDue"
        profile_row "approve" "$file" "countersign::Control::approve"
        profile_row "  of which Releaser::release" "$file" "countersign::Releaser::release"
        profile_row "  of which updateRecord (record view)" "$file" "countersign::updateRecord"
        profile_row "  of which parseApprovalRecord" "$file" "countersign::parseApprovalRecord"
        profile_row "replayer scan" "$file" "countersign::Replayer::scan"
      }
    done
    echo
  } >"$work/profile.md"
fi

# The ratio chart: bench_system wrote the ratios next to its report (system.dat).
png=${out%.md}.png
png_name=$(basename "$png")
rm -f "$png"
chart_data=$work/system.dat
chart_script=$root/bench/plot.gp
if [[ $mode == soak ]]; then
  chart_data=$work/system.soak.dat
  chart_script=$root/bench/plot_soak.gp
fi
if [[ -s $chart_data ]]; then
  if ! command -v gnuplot >/dev/null 2>&1 && [[ $(id -u) == 0 ]] && command -v apt-get >/dev/null 2>&1; then
    echo "run.sh: gnuplot is missing; installing gnuplot-nox" >&2
    apt-get install -y --no-install-recommends gnuplot-nox >/dev/null 2>&1 ||
      { apt-get update >/dev/null 2>&1 && apt-get install -y --no-install-recommends gnuplot-nox >/dev/null 2>&1; } ||
      true
  fi
  if command -v gnuplot >/dev/null 2>&1; then
    subtitle="$run_kind run, $date_utc, tree at $(git -C "$root" rev-parse --short HEAD 2>/dev/null || echo unknown)"
    gnuplot -e "data='$chart_data'; out='$png'; subtitle='$subtitle'" "$chart_script" ||
      { echo "run.sh: gnuplot failed; no chart" >&2; rm -f "$png"; }
  else
    echo "run.sh: gnuplot is not installed (and this is not root): no chart $png_name; the tables are the record" >&2
  fi
fi

cpu_model=$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')
memory=$(awk '/MemTotal/ {printf "%.1f GiB", $2 / 1048576}' /proc/meminfo)
nats_version=$(nats-server --version 2>/dev/null || echo unknown)
libnats=$(dpkg-query -W -f='${Version}' libnats-dev 2>/dev/null || echo unknown)
compiler=$(${CXX:-c++} --version 2>/dev/null | head -1)
commit=$(git -C "$root" rev-parse --short HEAD 2>/dev/null || echo unknown)
dirty=$(git -C "$root" status --porcelain 2>/dev/null | grep -c . || true)

{
  echo "# countersign benchmark results"
  echo
  echo "Generated by \`$command_line\` (bench/run.sh; method in bench/README.md). Do not edit by hand."
  echo
  echo "| | |"
  echo "|---|---|"
  echo "| date | $date_utc |"
  echo "| run | $([[ $quick == 1 ]] && echo "quick (--quick: one round, short windows, scale up to 10k)" || echo "$run_kind") |"
  echo "| duration | $((finished - started)) s (system + micro benchmarks, build excluded) |"
  echo "| machine | $(nproc) x $cpu_model, $memory RAM, $(uname -sr) |"
  echo "| load average (1/5/15 min) | before: $load_before; after: $load_after (shared machine: other builds and tests ran at the same time; compare ratios, not absolute numbers) |"
  echo "| software | $nats_version, libnats $libnats, $compiler, CMake Release (-O3), tree at $commit ($dirty files changed or new) |"
  if [[ -n $countersign_bin ]]; then
    echo "| countersign measured | \`$countersign_bin\` (--countersign), not this tree's build |"
  fi
  echo
  if [[ -f $png ]]; then
    # The chart goes right below the summary table.
    awk -v img="![ratios]($png_name)" '
      { print }
      /^Load average \(1\/5\/15 min\) when the system benchmarks started/ && !done { print ""; print img; done = 1 }
    ' "$work/system.md"
  else
    cat "$work/system.md"
  fi
  if [[ -f $work/micro.md ]]; then
    echo "### 8. Micro-benchmarks (bench_micro, Google Benchmark, --benchmark_min_time=$micro_time)"
    echo
    echo "Aims: policy evaluation under 1 µs per job; job hash of a 1 KiB payload under 10 µs (parse included"
    echo "where the name says Parse); one Ed25519 receipt under 25 µs. Judged on CPU time. BM_SignOpenSsl*"
    echo "are the OpenSSL 3 signing paths, measured against libsodium's (BM_SignWithLoadedKey, what countersign uses)."
    echo
    cat "$work/micro.md"
    echo
  fi
  if [[ -f $work/profile.md ]]; then cat "$work/profile.md"; fi
  if [[ -f $work/slack.md ]]; then cat "$work/slack.md"; fi
} >"$out"

wrote=$out
[[ -f $png ]] && wrote="$out and $png"
echo "run.sh: wrote $wrote in $((finished - started)) s" >&2
