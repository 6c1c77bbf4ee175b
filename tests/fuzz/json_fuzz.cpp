// Fuzz target for the strict parser and the canonical form: whatever parseStrict accepts must
// canonicalise to a fixed point, and refusals must be clean parse errors that name a rule.
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>

#include "core/json_writer.hpp"
#include "countersign/job.hpp"
#include "countersign/json.hpp"

namespace {

using countersign::Errc;
namespace json = countersign::json;

void check(bool condition) {
  if (!condition) std::abort();
}

// JCS writes an integral double in [2^53, 1e21) in plain notation ("100000000000000000000"),
// which parseStrict refuses as an integer beyond 2^53: the one reason a canonical text may not
// parse again. True when the value holds such a double.
bool holdsLargeIntegralDouble(const rapidjson::Value& value) {
  if (value.IsDouble()) {
    const double magnitude = std::fabs(value.GetDouble());
    return std::trunc(magnitude) == magnitude && magnitude >= 9007199254740992.0 &&
           magnitude < 1e21;
  }
  if (value.IsArray()) {
    for (const auto& element : value.GetArray()) {
      if (holdsLargeIntegralDouble(element)) return true;
    }
  }
  if (value.IsObject()) {
    for (const auto& member : value.GetObject()) {
      if (holdsLargeIntegralDouble(member.value)) return true;
    }
  }
  return false;
}

void checkBase64(std::string_view bytes) {
  auto decoded = json::base64Decode(json::base64Encode(bytes));
  check(decoded.has_value() && *decoded == bytes);
  // The decoder is strict: whatever it accepts is the canonical encoding of its output.
  if (auto accepted = json::base64Decode(bytes)) check(json::base64Encode(*accepted) == bytes);
}

// Any bytes written as a key and a value (a subject, a header) make valid, strict JSON that reads
// back as the bytes with U+FFFD for each invalid one.
void checkWriter(std::string_view bytes) {
  countersign::detail::JsonObjectWriter w;
  w.field(bytes, bytes);
  const std::string text = w.finish();
  auto back = json::parseStrict(text);
  check(back.has_value() && back->IsObject() && back->MemberCount() == 1);
  const auto& member = *back->MemberBegin();
  const std::string valid = json::toValidUtf8(bytes);
  check(json::isValidUtf8(valid));
  check(std::string_view(member.value.GetString(), member.value.GetStringLength()) == valid);
  if (json::isValidUtf8(bytes)) check(valid == bytes);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  checkBase64(text);
  checkWriter(text);

  auto parsed = json::parseStrict(text);
  if (!parsed) {
    check(parsed.error().code == Errc::parse_error);
    check(parsed.error().message.find(" at byte offset ") != std::string::npos);
    return 0;
  }
  const std::string canonical = json::canonicalize(*parsed);
  auto reparsed = json::parseStrict(canonical);
  if (!reparsed) {
    check(reparsed.error().message.starts_with("integer_out_of_range:") &&
          holdsLargeIntegralDouble(*parsed));
    return 0;
  }
  check(json::canonicalize(*reparsed) == canonical);
  // A JSON payload and its canonical text are the same job.
  if (!text.empty()) {
    check(countersign::jobHash("in.x", "out.x", {}, &*parsed, text) ==
          countersign::jobHash("in.x", "out.x", {}, &*reparsed, canonical));
  }
  return 0;
}
