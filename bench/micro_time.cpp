// Micro-benchmarks of the RFC 3339 timestamps written and read on every hold, approval and
// audit event (and twice per record when the list index loads a bucket), against the C
// library's formatted I/O that wrote and read them before, in the same run.
#include <benchmark/benchmark.h>

#include <cstdio>
#include <ctime>
#include <string>

#include "countersign/clock.hpp"

namespace {

const auto kInstant = std::chrono::system_clock::time_point(std::chrono::milliseconds(1796612645678LL));
const std::string kText = "2026-12-07T03:04:05.678Z";

void BM_FormatRfc3339(benchmark::State& state) {
  for (auto _ : state) benchmark::DoNotOptimize(countersign::formatRfc3339(kInstant));
}
BENCHMARK(BM_FormatRfc3339);

// The baseline: gmtime_r and snprintf.
void BM_FormatRfc3339CLibrary(benchmark::State& state) {
  for (auto _ : state) {
    const std::time_t secs = 1796612645;
    std::tm tm{};
    gmtime_r(&secs, &tm);
    char buf[96];
    std::snprintf(buf, sizeof buf, "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", tm.tm_year + 1900, tm.tm_mon + 1,
                  tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, 678);
    benchmark::DoNotOptimize(std::string(buf));
  }
}
BENCHMARK(BM_FormatRfc3339CLibrary);

void BM_ParseRfc3339(benchmark::State& state) {
  std::chrono::system_clock::time_point t;
  for (auto _ : state) benchmark::DoNotOptimize(countersign::parseRfc3339(kText, t));
}
BENCHMARK(BM_ParseRfc3339);

// The baseline: sscanf and timegm on a copy of the text.
void BM_ParseRfc3339CLibrary(benchmark::State& state) {
  for (auto _ : state) {
    const std::string s(kText);
    int year, mon, day, hour, min, sec, consumed = 0;
    std::sscanf(s.c_str(), "%4d-%2d-%2dT%2d:%2d:%2d%n", &year, &mon, &day, &hour, &min, &sec, &consumed);
    std::tm tm{};
    tm.tm_year = year - 1900;
    tm.tm_mon = mon - 1;
    tm.tm_mday = day;
    tm.tm_hour = hour;
    tm.tm_min = min;
    tm.tm_sec = sec;
    benchmark::DoNotOptimize(timegm(&tm));
  }
}
BENCHMARK(BM_ParseRfc3339CLibrary);

}  // namespace
