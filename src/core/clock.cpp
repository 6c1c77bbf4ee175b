#include "countersign/clock.hpp"

#include <cstdio>
#include <ctime>
#include <string>

namespace countersign {
namespace {

void put2(char* at, unsigned value) {
  at[0] = static_cast<char>('0' + value / 10);
  at[1] = static_cast<char>('0' + value % 10);
}

// text[at, at + n) as a number, when all n are ASCII digits.
bool digitsAt(std::string_view text, std::size_t at, std::size_t n, int& value) {
  value = 0;
  for (std::size_t i = at; i < at + n; ++i) {
    const char c = text[i];
    if (c < '0' || c > '9') return false;
    value = value * 10 + (c - '0');
  }
  return true;
}

}  // namespace

namespace detail {

// The general paths, through the C library: years outside 0-9999 (beyond the reach of a clock
// in nanoseconds, 1677-2262, but not of every clock), and text that is not in the shape
// formatRfc3339 writes (sscanf's leniency and timegm's normalising of out-of-range fields
// are kept for it exactly as they were).
std::string formatRfc3339CLibrary(std::chrono::system_clock::time_point t) {
  const auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(t.time_since_epoch());
  auto secs = static_cast<std::time_t>(ms.count() / 1000);
  auto frac = static_cast<int>(ms.count() % 1000);
  if (frac < 0) {
    frac += 1000;
    --secs;
  }
  std::tm tm{};
  gmtime_r(&secs, &tm);
  char buf[96];
  std::snprintf(buf, sizeof buf, "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", tm.tm_year + 1900,
                tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, frac);
  return buf;
}

bool parseRfc3339CLibrary(std::string_view text, std::chrono::system_clock::time_point& out) {
  // Accepts what formatRfc3339 writes, with or without fractional seconds, 'Z' only.
  int year, mon, day, hour, min, sec;
  const std::string s(text);
  int consumed = 0;
  if (std::sscanf(s.c_str(), "%4d-%2d-%2dT%2d:%2d:%2d%n", &year, &mon, &day, &hour, &min, &sec,
                  &consumed) != 6) {
    return false;
  }
  std::size_t pos = static_cast<std::size_t>(consumed);
  long millis = 0;
  if (pos < s.size() && s[pos] == '.') {
    ++pos;
    long scale = 100;
    while (pos < s.size() && s[pos] >= '0' && s[pos] <= '9') {
      millis += (s[pos] - '0') * scale;
      scale /= 10;
      ++pos;
    }
  }
  if (pos + 1 != s.size() || s[pos] != 'Z') return false;
  std::tm tm{};
  tm.tm_year = year - 1900;
  tm.tm_mon = mon - 1;
  tm.tm_mday = day;
  tm.tm_hour = hour;
  tm.tm_min = min;
  tm.tm_sec = sec;
  const std::time_t secs = timegm(&tm);
  out = std::chrono::system_clock::time_point(std::chrono::seconds(secs)) +
        std::chrono::milliseconds(millis);
  return true;
}

}  // namespace detail

// Timestamps are written and read on every hold, approval and audit event, and twice per record
// when the list index loads a bucket: the calendar arithmetic here, not the C library's
// formatted I/O (which costs several times as much), for the shape countersign writes.
std::string formatRfc3339(std::chrono::system_clock::time_point t) {
  using namespace std::chrono;
  const auto ms = floor<milliseconds>(t);
  const auto day = floor<days>(ms);
  const year_month_day date{day};
  const int year = static_cast<int>(date.year());
  if (year < 0 || year > 9999) return detail::formatRfc3339CLibrary(t);
  const hh_mm_ss time{ms - day};
  std::string out(24, 'Z');  // YYYY-MM-DDTHH:MM:SS.mmmZ
  char* p = out.data();
  put2(p, static_cast<unsigned>(year / 100));
  put2(p + 2, static_cast<unsigned>(year % 100));
  p[4] = '-';
  put2(p + 5, static_cast<unsigned>(date.month()));
  p[7] = '-';
  put2(p + 8, static_cast<unsigned>(date.day()));
  p[10] = 'T';
  put2(p + 11, static_cast<unsigned>(time.hours().count()));
  p[13] = ':';
  put2(p + 14, static_cast<unsigned>(time.minutes().count()));
  p[16] = ':';
  put2(p + 17, static_cast<unsigned>(time.seconds().count()));
  p[19] = '.';
  const auto millis = static_cast<unsigned>(time.subseconds().count());
  p[20] = static_cast<char>('0' + millis / 100);
  put2(p + 21, millis % 100);
  return out;
}

bool parseRfc3339(std::string_view text, std::chrono::system_clock::time_point& out) {
  using namespace std::chrono;
  // The shape formatRfc3339 writes (any number of fraction digits, or none), every field in
  // range; anything else takes the general path, which decides as it always has.
  int y = 0, mo = 0, d = 0, h = 0, mi = 0, s = 0;
  if (text.size() < 20 || text.back() != 'Z' || text[4] != '-' || text[7] != '-' || text[10] != 'T' ||
      text[13] != ':' || text[16] != ':' || !digitsAt(text, 0, 4, y) || !digitsAt(text, 5, 2, mo) ||
      !digitsAt(text, 8, 2, d) || !digitsAt(text, 11, 2, h) || !digitsAt(text, 14, 2, mi) ||
      !digitsAt(text, 17, 2, s) || h > 23 || mi > 59 || s > 59) {
    return detail::parseRfc3339CLibrary(text, out);
  }
  long millis = 0;
  if (text.size() > 20) {
    if (text[19] != '.') return detail::parseRfc3339CLibrary(text, out);
    long scale = 100;
    for (std::size_t pos = 20; pos + 1 < text.size(); ++pos) {
      const char c = text[pos];
      if (c < '0' || c > '9') return detail::parseRfc3339CLibrary(text, out);
      millis += (c - '0') * scale;
      scale /= 10;
    }
  }
  const year_month_day date{year{y}, month{static_cast<unsigned>(mo)}, day{static_cast<unsigned>(d)}};
  if (!date.ok()) return detail::parseRfc3339CLibrary(text, out);  // timegm rolls Feb 30 over into March
  out = sys_days{date} + hours{h} + minutes{mi} + seconds{s} + milliseconds{millis};
  return true;
}

}  // namespace countersign
