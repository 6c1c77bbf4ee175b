#include <chrono>
#include <cstdio>

#include "countersign/clock.hpp"
#include "countersign/log.hpp"

namespace countersign {
namespace {

std::string_view levelName(LogLevel level) {
  switch (level) {
    case LogLevel::debug: return "debug";
    case LogLevel::info: return "info";
    case LogLevel::warn: return "warn";
    case LogLevel::error: return "error";
  }
  return "info";
}

void appendJsonString(std::string& out, std::string_view text) {
  out += '"';
  for (const char ch : text) {
    const auto c = static_cast<unsigned char>(ch);
    switch (c) {
      case '"': out += "\\\""; break;
      case '\\': out += "\\\\"; break;
      case '\n': out += "\\n"; break;
      case '\r': out += "\\r"; break;
      case '\t': out += "\\t"; break;
      default:
        if (c < 0x20) {
          char buf[8];
          std::snprintf(buf, sizeof buf, "\\u%04x", c);
          out += buf;
        } else {
          out += ch;
        }
    }
  }
  out += '"';
}

}  // namespace

StreamLogger::StreamLogger(LogFormat format, LogLevel min_level, std::FILE* out)
    : format_(format), min_level_(min_level), out_(out) {}

void StreamLogger::write(LogLevel level, std::string_view message,
                         std::initializer_list<LogField> fields) {
  if (level < min_level_) return;
  const std::string ts = formatRfc3339(std::chrono::system_clock::now());
  std::string line;
  line.reserve(128);
  if (format_ == LogFormat::json) {
    line += "{\"ts\":";
    appendJsonString(line, ts);
    line += ",\"level\":";
    appendJsonString(line, levelName(level));
    line += ",\"msg\":";
    appendJsonString(line, message);
    for (const auto& [key, value] : fields) {
      line += ',';
      appendJsonString(line, key);
      line += ':';
      appendJsonString(line, value);
    }
    line += "}\n";
  } else {
    line += ts;
    line += ' ';
    line += levelName(level);
    line += ' ';
    line += message;
    for (const auto& [key, value] : fields) {
      line += ' ';
      line += key;
      line += '=';
      line += value;
    }
    line += '\n';
  }
  const std::lock_guard lock(mutex_);
  std::fwrite(line.data(), 1, line.size(), out_);
  std::fflush(out_);
}

}  // namespace countersign
