// Fuzz target for the NATS header block parser (what a producer controls in a received message):
// it must refuse malformed blocks cleanly, and whatever it accepts has names and values that can
// go on the wire again (no blanks or control bytes in names; no CR, LF or NUL in values; values
// trimmed).
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string_view>

#include "nats/message_convert.hpp"

namespace {

void check(bool condition) {
  if (!condition) std::abort();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view block(reinterpret_cast<const char*>(data), size);
  auto headers = countersign::natsio::parseHeaderBlock(block);
  if (!headers) {
    check(headers.error().code == countersign::Errc::invalid_argument);
    check(headers.error().message.starts_with("message headers: "));
    return 0;
  }
  for (const auto& [name, value] : *headers) {
    check(!name.empty());
    for (const char c : name) check(static_cast<unsigned char>(c) > 0x20 && c != 0x7f && c != ':');
    for (const char c : value) check(c != '\r' && c != '\n' && c != '\0');
    check(value.empty() || (value.front() != ' ' && value.front() != '\t' && value.back() != ' ' &&
                            value.back() != '\t'));
  }
  return 0;
}
