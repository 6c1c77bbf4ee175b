// Time and identity are injected: core logic never calls now() or makes random ids itself.
#pragma once

#include <chrono>
#include <string>

namespace countersign {

// Thread-safe; both calls may be made from any thread.
class Clock {
 public:
  virtual ~Clock() = default;
  virtual std::chrono::system_clock::time_point now() const = 0;
  virtual std::chrono::steady_clock::time_point steady() const = 0;
};

class SystemClock final : public Clock {
 public:
  std::chrono::system_clock::time_point now() const override {
    return std::chrono::system_clock::now();
  }
  std::chrono::steady_clock::time_point steady() const override {
    return std::chrono::steady_clock::now();
  }
};

// Thread-safe source of unique ids (used for jobs that carry no id of their own).
class IdSource {
 public:
  virtual ~IdSource() = default;
  virtual std::string newId() = 0;
};

// 128-bit random ids as 32 lower-case hex characters (OpenSSL's RAND_bytes). Thread-safe.
class RandomIdSource final : public IdSource {
 public:
  std::string newId() override;
};

// RFC 3339 UTC with millisecond precision: 2026-11-27T10:51:11.123Z
std::string formatRfc3339(std::chrono::system_clock::time_point t);
bool parseRfc3339(std::string_view text, std::chrono::system_clock::time_point& out);

namespace detail {
// The same through the C library (gmtime_r and snprintf; sscanf and timegm on a copy), as
// countersign did it before: the two functions above fall back to these for what their calendar
// arithmetic does not cover, and the tests and benchmarks hold them up against them.
std::string formatRfc3339CLibrary(std::chrono::system_clock::time_point t);
bool parseRfc3339CLibrary(std::string_view text, std::chrono::system_clock::time_point& out);
}  // namespace detail

}  // namespace countersign
