// RFC 3339 timestamps: the calendar arithmetic gives what the C library gives (gmtime_r and
// snprintf to write, sscanf and timegm to read: detail::*CLibrary, how countersign did it
// before), on every instant and on odd text.
#include <gtest/gtest.h>

#include <random>
#include <string>
#include <vector>

#include "countersign/clock.hpp"

namespace countersign::testing {
namespace {

using std::chrono::milliseconds;
using std::chrono::system_clock;

std::int64_t msOf(system_clock::time_point t) {
  return std::chrono::duration_cast<milliseconds>(t.time_since_epoch()).count();
}

// The C library's answers (the oracle): what countersign wrote and read before.
std::string libcFormat(std::int64_t ms) {
  return detail::formatRfc3339CLibrary(system_clock::time_point{milliseconds(ms)});
}

bool libcParse(const std::string& s, std::int64_t& ms) {
  system_clock::time_point t;
  if (!detail::parseRfc3339CLibrary(s, t)) return false;
  ms = msOf(t);
  return true;
}

TEST(Rfc3339, EveryInstantIsWrittenAndReadAsTheCLibraryDoes) {
  std::mt19937_64 random(42);
  // Every instant the clock holds (nanoseconds in 64 bits: 1677-09-21 to 2262-04-11), and around
  // the epoch on both sides.
  constexpr std::int64_t kReach = 9'000'000'000'000LL;  // ms, about 285 years
  std::uniform_int_distribution<std::int64_t> any(-kReach, kReach);
  std::uniform_int_distribution<std::int64_t> near(-86400000LL * 3, 86400000LL * 3);
  std::vector<std::int64_t> instants{0, -1, 1, 999, -999, -1000, 951782400000LL /* 2000-02-29 */, kReach, -kReach};
  for (int i = 0; i < 20000; ++i) instants.push_back(any(random));
  for (int i = 0; i < 2000; ++i) instants.push_back(near(random));
  int wrong = 0;
  for (const std::int64_t ms : instants) {
    const system_clock::time_point t{milliseconds(ms)};
    const std::string text = formatRfc3339(t);
    system_clock::time_point back;
    const bool read = parseRfc3339(text, back);
    if (text != libcFormat(ms) || !read || msOf(back) != ms) {
      if (++wrong <= 5) ADD_FAILURE() << ms << ": " << text << " against " << libcFormat(ms);
    }
  }
  EXPECT_EQ(wrong, 0);
}

TEST(Rfc3339, OddTextIsReadAsTheCLibraryReadsIt) {
  // Out-of-range fields that timegm rolls over, shapes sscanf accepts, and ones nobody does.
  const std::vector<std::string> texts{
      "2026-12-07T03:04:05.678Z", "2026-12-07T03:04:05Z", "2026-12-07T03:04:05.Z", "2026-12-07T03:04:05.1Z",
      "2026-12-07T03:04:05.123456789Z", "2026-02-30T00:00:00Z", "2024-02-29T23:59:59.999Z",
      "2026-13-01T00:00:00Z", "2026-00-10T00:00:00Z", "2026-12-00T00:00:00Z", "2026-12-07T24:00:00Z",
      "2026-12-07T23:60:00Z", "2016-12-31T23:59:60Z", "2026-1-07T03:04:05Z", " 2026-12-07T03:04:05Z",
      "2026-12-07T03:04:05", "2026-12-07T03:04:05ZZ", "2026-12-07T03:04:05.12aZ",
      "2026-12-07 03:04:05Z", "2026-12-07T03:04:05+00:00", "", "Z", "1700-03-01T00:00:00Z",
      "2262-01-01T00:00:00.001Z", "+2026-12-07T03:04:05Z", "2026-12-07T03:04:5Z"};
  for (const std::string& text : texts) {
    std::int64_t expected = 0;
    const bool libc = libcParse(text, expected);
    system_clock::time_point got;
    const bool ours = parseRfc3339(text, got);
    EXPECT_EQ(ours, libc) << "\"" << text << "\"";
    if (ours && libc) {
      EXPECT_EQ(msOf(got), expected) << "\"" << text << "\"";
    }
  }
}

}  // namespace
}  // namespace countersign::testing
