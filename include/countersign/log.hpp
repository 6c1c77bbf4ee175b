// Structured logging: one JSON object per line on stderr (or human text). Thread-safe.
#pragma once

#include <initializer_list>
#include <mutex>
#include <string>
#include <string_view>
#include <utility>

namespace countersign {

enum class LogLevel { debug, info, warn, error };
enum class LogFormat { json, text };

using LogField = std::pair<std::string_view, std::string_view>;

class Logger {
 public:
  virtual ~Logger() = default;
  virtual void write(LogLevel level, std::string_view message,
                     std::initializer_list<LogField> fields = {}) = 0;
  void info(std::string_view m, std::initializer_list<LogField> f = {}) { write(LogLevel::info, m, f); }
  void warn(std::string_view m, std::initializer_list<LogField> f = {}) { write(LogLevel::warn, m, f); }
  void error(std::string_view m, std::initializer_list<LogField> f = {}) { write(LogLevel::error, m, f); }
  void debug(std::string_view m, std::initializer_list<LogField> f = {}) { write(LogLevel::debug, m, f); }
};

// Writes to a FILE* (stderr by default), whole lines under a mutex.
class StreamLogger final : public Logger {
 public:
  explicit StreamLogger(LogFormat format = LogFormat::json, LogLevel min_level = LogLevel::info,
                        std::FILE* out = stderr);
  void write(LogLevel level, std::string_view message,
             std::initializer_list<LogField> fields = {}) override;

 private:
  LogFormat format_;
  LogLevel min_level_;
  std::FILE* out_;
  std::mutex mutex_;
};

// Discards everything (unit tests).
class NullLogger final : public Logger {
 public:
  void write(LogLevel, std::string_view, std::initializer_list<LogField>) override {}
};

}  // namespace countersign
