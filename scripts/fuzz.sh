#!/usr/bin/env bash
# Bounded fuzzing of every tests/fuzz target: each runs for FUZZ_SECONDS (default 20) under
# AddressSanitizer and UndefinedBehaviorSanitizer, starting from a copy of its seed corpus. A crash,
# a failed check (abort), a leak, a sanitizer finding or a hang (10 s on one input) fails the
# stage; the input that did it is kept in build-fuzz/artifacts/ and printed as a path.
#   scripts/fuzz.sh                  every target
#   scripts/fuzz.sh control rest_api the named targets (tests/fuzz/<name>_fuzz.cpp)
#   FUZZ_SECONDS=300 scripts/fuzz.sh longer runs
#   FUZZ_SEED=0 scripts/fuzz.sh      a new random seed each run (default 1: a failure in CI
#                                    replays here with the same command)
#
# Compiler: clang 16 or newer (Debian's clang-16 with libclang-rt-16-dev) builds real libFuzzer
# binaries (-fsanitize=fuzzer, edge coverage). Without it, GCC builds the targets with its
# comparison hooks (-fsanitize-coverage=trace-pc,trace-cmp) linked to LLVM's libFuzzer runtime
# archive from any installed libclang-rt: coarser guidance, the same crash detection. With
# neither the stage fails: it never passes without having fuzzed.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds="${FUZZ_SECONDS:-20}"
seed="${FUZZ_SEED:-1}"
dir=build-fuzz
jobs="$(nproc)"

extra=()
config=(-DCMAKE_BUILD_TYPE=RelWithDebInfo -DCOUNTERSIGN_SANITIZE="address,undefined"
  -DCOUNTERSIGN_BENCH=OFF -DCOUNTERSIGN_FAULTS=OFF)
clang=""
for version in 19 18 17 16; do
  if command -v "clang++-$version" >/dev/null 2>&1; then clang="clang++-$version"; break; fi
done
if [ -n "$clang" ]; then
  echo "fuzz: $clang with libFuzzer"
  config+=(-DCMAKE_CXX_COMPILER="$clang" -DCOUNTERSIGN_LIBFUZZER=ON)
else
  runtime=$(ls /usr/lib/llvm-*/lib/clang/*/lib/linux/libclang_rt.fuzzer-x86_64.a 2>/dev/null | sort -V | tail -1 || true)
  if [ -z "$runtime" ]; then
    echo "fuzz: neither clang 16+ nor a libFuzzer runtime is installed (scripts/setup.sh installs clang-16)" >&2
    exit 1
  fi
  echo "fuzz: GCC coverage hooks with $runtime"
  config+=(-DCOUNTERSIGN_LIBFUZZER="$runtime")
  extra=(-use_value_profile=1)  # the comparison hooks are what steers it
fi
cmake -S . -B "$dir" "${config[@]}" >/dev/null

names=()
if [ $# -gt 0 ]; then
  names=("$@")
else
  for src in tests/fuzz/*_fuzz.cpp; do names+=("$(basename "$src" _fuzz.cpp)"); done
fi
targets=()
for name in "${names[@]}"; do targets+=("${name}_fuzz_fuzzer"); done
cmake --build "$dir" -j"$jobs" --target "${targets[@]}"

# Stack traces with function names and lines, when an llvm-symbolizer is installed.
if [ -z "${ASAN_SYMBOLIZER_PATH:-}" ]; then
  symbolizer=$(ls /usr/bin/llvm-symbolizer* /usr/lib/llvm-*/bin/llvm-symbolizer 2>/dev/null | head -1 || true)
  [ -n "$symbolizer" ] && export ASAN_SYMBOLIZER_PATH="$symbolizer"
fi
artifacts="$(pwd)/$dir/artifacts"
mkdir -p "$artifacts"
failed=()
for name in "${names[@]}"; do
  work=$(mktemp -d)
  cp -r "tests/fuzz/corpus/${name}_fuzz/." "$work/"
  echo "fuzz: $name for ${seconds}s"
  # detect_leaks: a leak fails like a crash. The exit code of the fuzzer decides, not the log.
  if ASAN_OPTIONS=detect_leaks=1:abort_on_error=0 UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 \
      "$dir/tests/${name}_fuzz_fuzzer" -max_total_time="$seconds" -seed="$seed" -timeout=10 -rss_limit_mb=2048 \
      -print_final_stats=1 -artifact_prefix="$artifacts/$name-" "${extra[@]}" "$work" >"$work.log" 2>&1; then
    grep -E '^(Done|stat::number_of_executed_units|stat::new_units_added)' "$work.log" | tr '\n' ' '
    echo
  else
    tail -60 "$work.log" >&2
    echo "fuzz: $name FAILED; reproduce with $dir/tests/${name}_fuzz_fuzzer FILE, for FILE in:" >&2
    ls "$artifacts/$name-"* >&2 || true
    failed+=("$name")
  fi
  rm -rf "$work" "$work.log"
done
if [ ${#failed[@]} -gt 0 ]; then
  echo "fuzz: failed: ${failed[*]}" >&2
  exit 1
fi
echo "fuzz: ${#names[@]} targets, ${seconds}s each, no crash, leak, finding or hang"
