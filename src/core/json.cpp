// Strict JSON parsing and RFC 8785 canonical form (see json.hpp).
//
// parseStrict drives RapidJSON's SAX reader into a Document through StrictHandler, which adds the
// rules RapidJSON 1.1.0 does not enforce itself (lone low surrogates, integer range, non-finite
// doubles, nesting depth); duplicate keys are checked on the finished tree, and only when one is
// found is the text scanned again to say where. Error messages start with a stable rule token
// ("duplicate_key: ...") so callers and tests can tell the rules apart.
//
// Numbers are handed over raw (kParseNumbersAsStringsFlag) and converted here: integer literals
// with std::from_chars into int64/uint64 (range-checked against 2^53), other literals with
// std::from_chars(double), which is correctly rounded: that is what kParseFullPrecisionFlag would
// buy, without RapidJSON's second conversion. `-0` is the integer 0 (as RapidJSON reads it);
// `-0.0` is the double -0.0; both canonicalise to "0" as ES6 prints them.
#include "countersign/json.hpp"

#include <openssl/evp.h>
#include <rapidjson/error/en.h>
#include <rapidjson/memorystream.h>
#include <rapidjson/reader.h>
#include <rapidjson/stream.h>
#include <rapidjson/stringbuffer.h>
#include <rapidjson/writer.h>

#include <algorithm>
#include <array>
#include <charconv>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <unordered_set>
#include <vector>

namespace countersign::json {
namespace {

constexpr std::uint64_t kMaxSafeInteger = std::uint64_t{1} << 53;
// Deeper documents are refused: canonicalize and the duplicate check recurse, and a 1 MiB
// payload of '[' must not exhaust a thread's stack.
constexpr int kMaxDepth = 512;
// Objects up to this size are checked for duplicate keys pairwise; larger ones with a hash set.
constexpr rapidjson::SizeType kLinearDuplicateCheckLimit = 16;

// UTF-8 is validated up front by firstInvalidUtf8 over the whole text instead of with
// kParseValidateEncodingFlag, whose byte-by-byte table walk was the parser's largest cost.
// Outside strings RapidJSON refuses any non-ASCII byte as a syntax error anyway.
constexpr unsigned kReaderFlags =
    rapidjson::kParseIterativeFlag | rapidjson::kParseNumbersAsStringsFlag;

std::string offsetText(std::size_t offset) {
  return " at byte offset " + std::to_string(offset);
}

std::string_view stringOf(const rapidjson::Value& value) {
  return {value.GetString(), value.GetStringLength()};
}

std::uint64_t load64(const unsigned char* p) {
  std::uint64_t word;
  std::memcpy(&word, p, sizeof word);
  return word;
}

// Offset of the first byte that does not start a well-formed UTF-8 sequence (Unicode table 3-7:
// no overlong forms, no surrogates, nothing above U+10FFFF), or npos.
std::size_t firstInvalidUtf8(std::string_view text) {
  const auto* bytes = reinterpret_cast<const unsigned char*>(text.data());
  const std::size_t size = text.size();
  std::size_t i = 0;
  while (i < size) {
    if (i + 8 <= size && (load64(bytes + i) & 0x8080808080808080u) == 0) {
      i += 8;
      continue;
    }
    const unsigned char lead = bytes[i];
    if (lead < 0x80) {
      ++i;
      continue;
    }
    std::size_t length = 0;
    unsigned char low = 0x80;  // allowed range of the second byte
    unsigned char high = 0xBF;
    if (lead >= 0xC2 && lead <= 0xDF) {
      length = 2;
    } else if (lead >= 0xE0 && lead <= 0xEF) {
      length = 3;
      if (lead == 0xE0) low = 0xA0;   // overlong
      if (lead == 0xED) high = 0x9F;  // surrogates
    } else if (lead >= 0xF0 && lead <= 0xF4) {
      length = 4;
      if (lead == 0xF0) low = 0x90;   // overlong
      if (lead == 0xF4) high = 0x8F;  // above U+10FFFF
    } else {
      return i;
    }
    if (i + length > size || bytes[i + 1] < low || bytes[i + 1] > high) return i;
    for (std::size_t j = 2; j < length; ++j) {
      if (bytes[i + j] < 0x80 || bytes[i + j] > 0xBF) return i;
    }
    i += length;
  }
  return std::string_view::npos;
}

// Start offset of the JSON string literal whose closing quote is just before `end`. Inside a
// literal every '"' is escaped (preceded by an odd run of backslashes); the opening quote is not.
std::size_t stringLiteralStart(std::string_view text, std::size_t end) {
  if (end < 2 || end > text.size()) return end;
  for (std::size_t pos = end - 2; pos > 0; --pos) {
    if (text[pos] != '"') continue;
    std::size_t backslashes = 0;
    while (backslashes < pos && text[pos - 1 - backslashes] == '\\') ++backslashes;
    if (backslashes % 2 == 0) return pos;
  }
  return 0;
}

// True when the decimal literal (already valid JSON number grammar) has magnitude >= 1, used only
// to tell overflow from underflow after std::from_chars reports result_out_of_range.
bool literalMagnitudeAtLeastOne(std::string_view literal) {
  std::size_t pos = literal.starts_with('-') ? 1 : 0;
  long long integer_digits = 0;  // significant digits before the point
  long long leading_fraction_zeros = 0;
  bool significant = false;
  for (; pos < literal.size() && literal[pos] >= '0' && literal[pos] <= '9'; ++pos) {
    if (literal[pos] != '0') significant = true;
    if (significant) ++integer_digits;
  }
  if (pos < literal.size() && literal[pos] == '.') {
    for (++pos; pos < literal.size() && literal[pos] >= '0' && literal[pos] <= '9'; ++pos) {
      if (!significant && literal[pos] == '0') ++leading_fraction_zeros;
      if (literal[pos] != '0') significant = true;
    }
  }
  if (!significant) return false;
  long long exponent = 0;
  if (pos < literal.size() && (literal[pos] == 'e' || literal[pos] == 'E')) {
    ++pos;
    bool negative = false;
    if (pos < literal.size() && (literal[pos] == '+' || literal[pos] == '-')) {
      negative = literal[pos] == '-';
      ++pos;
    }
    for (; pos < literal.size(); ++pos) {
      exponent = std::min<long long>(exponent * 10 + (literal[pos] - '0'), 1'000'000'000);
    }
    if (negative) exponent = -exponent;
  }
  // The first significant digit stands for 10^(magnitude - 1).
  const long long magnitude =
      (integer_digits > 0 ? integer_digits : -leading_fraction_zeros) + exponent;
  return magnitude > 0;
}

// Forwards SAX events into a Document and enforces the rules RapidJSON leaves to us. On a
// refusal it returns false (RapidJSON then reports kParseErrorTermination) and keeps the reason.
class StrictHandler {
 public:
  explicit StrictHandler(rapidjson::Document& document) : document_(document) {}

  const std::string& refusal() const { return refusal_; }
  bool refusalAtStringStart() const { return refusal_at_string_start_; }

  bool Null() { return document_.Null(); }
  bool Bool(bool b) { return document_.Bool(b); }
  bool Int(int i) { return document_.Int(i); }
  bool Uint(unsigned u) { return document_.Uint(u); }
  bool Int64(std::int64_t i) { return document_.Int64(i); }
  bool Uint64(std::uint64_t u) { return document_.Uint64(u); }
  bool Double(double d) { return document_.Double(d); }

  bool RawNumber(const char* str, rapidjson::SizeType length, bool /*copy*/) {
    const std::string_view literal(str, length);
    if (std::none_of(literal.begin(), literal.end(),
                     [](char c) { return c == '.' || c == 'e' || c == 'E'; })) {
      return integer(literal);
    }
    double value = 0;
    const auto [end, ec] = std::from_chars(literal.data(), literal.data() + literal.size(), value);
    if (ec == std::errc::result_out_of_range) {
      if (literalMagnitudeAtLeastOne(literal)) {
        return refuse("non_finite_number: number overflows to infinity", false);
      }
      value = literal.starts_with('-') ? -0.0 : 0.0;  // underflow rounds to zero
    } else if (ec != std::errc() || end != literal.data() + literal.size()) {
      return refuse("invalid_json: unreadable number", false);
    }
    if (!std::isfinite(value)) return refuse("non_finite_number: number is not finite", false);
    return document_.Double(value);
  }

  bool String(const char* str, rapidjson::SizeType length, bool copy) {
    if (!checkSurrogates(str, length)) return false;
    return document_.String(str, length, copy);
  }
  bool Key(const char* str, rapidjson::SizeType length, bool copy) {
    if (!checkSurrogates(str, length)) return false;
    return document_.Key(str, length, copy);
  }

  bool StartObject() { return enter() && document_.StartObject(); }
  bool EndObject(rapidjson::SizeType count) {
    --depth_;
    return document_.EndObject(count);
  }
  bool StartArray() { return enter() && document_.StartArray(); }
  bool EndArray(rapidjson::SizeType count) {
    --depth_;
    return document_.EndArray(count);
  }

 private:
  bool refuse(std::string reason, bool at_string_start) {
    refusal_ = std::move(reason);
    refusal_at_string_start_ = at_string_start;
    return false;
  }

  bool enter() {
    if (++depth_ > kMaxDepth) {
      return refuse("too_deep: nesting deeper than " + std::to_string(kMaxDepth), false);
    }
    return true;
  }

  bool integer(std::string_view literal) {
    const bool negative = literal.starts_with('-');
    const char* first = literal.data() + (negative ? 1 : 0);
    std::uint64_t magnitude = 0;
    const auto [end, ec] = std::from_chars(first, literal.data() + literal.size(), magnitude);
    if (ec != std::errc() || end != literal.data() + literal.size() ||
        magnitude > kMaxSafeInteger) {
      return refuse("integer_out_of_range: integer literal beyond +-2^53", false);
    }
    if (negative) return document_.Int64(-static_cast<std::int64_t>(magnitude));
    return document_.Uint64(magnitude);
  }

  // RapidJSON 1.1.0 refuses a high surrogate escape without a low one, and firstInvalidUtf8 has
  // refused raw surrogates, but an escaped lone low surrogate (\udc00) comes out as the CESU
  // bytes ED B0 80: any ED A0..BF in an unescaped string is such a lone surrogate. Strings are
  // short: a plain loop beats a memchr call here.
  bool checkSurrogates(const char* str, rapidjson::SizeType length) {
    const auto* bytes = reinterpret_cast<const unsigned char*>(str);
    for (rapidjson::SizeType i = 0; i + 1 < length; ++i) {
      if (bytes[i] == 0xED && bytes[i + 1] >= 0xA0) {
        return refuse("lone_surrogate: unpaired UTF-16 surrogate escape in string", true);
      }
    }
    return true;
  }

  rapidjson::Document& document_;
  int depth_ = 0;
  std::string refusal_;
  bool refusal_at_string_start_ = false;
};

// Used only after a duplicate was found: walks the text again keeping every object's keys, to
// report the duplicate's name and offset.
class DuplicateFinder : public rapidjson::BaseReaderHandler<rapidjson::UTF8<>, DuplicateFinder> {
 public:
  std::string duplicate;

  bool StartObject() {
    keys_.emplace_back();
    return true;
  }
  bool EndObject(rapidjson::SizeType /*count*/) {
    keys_.pop_back();
    return true;
  }
  bool Key(const char* str, rapidjson::SizeType length, bool /*copy*/) {
    std::string key(str, length);
    auto& seen = keys_.back();
    if (!seen.insert(key).second) {
      duplicate = std::move(key);
      return false;
    }
    return true;
  }

 private:
  std::vector<std::unordered_set<std::string>> keys_;
};

// The first duplicated key found in the tree, or nullptr.
const rapidjson::Value* findDuplicateKey(const rapidjson::Value& value) {
  if (value.IsArray()) {
    for (const auto& element : value.GetArray()) {
      if (const auto* dup = findDuplicateKey(element)) return dup;
    }
    return nullptr;
  }
  if (!value.IsObject()) return nullptr;
  const auto object = value.GetObject();
  const rapidjson::SizeType count = object.MemberCount();
  const auto members = object.begin();
  if (count <= kLinearDuplicateCheckLimit) {
    for (rapidjson::SizeType i = 1; i < count; ++i) {
      const std::string_view name = stringOf(members[i].name);
      for (rapidjson::SizeType j = 0; j < i; ++j) {
        if (stringOf(members[j].name) == name) return &members[i].name;
      }
    }
  } else {
    std::unordered_set<std::string_view> names;
    names.reserve(count);
    for (rapidjson::SizeType i = 0; i < count; ++i) {
      if (!names.insert(stringOf(members[i].name)).second) return &members[i].name;
    }
  }
  for (rapidjson::SizeType i = 0; i < count; ++i) {
    if (const auto* dup = findDuplicateKey(members[i].value)) return dup;
  }
  return nullptr;
}

std::string describeDuplicate(std::string_view text) {
  rapidjson::MemoryStream stream(text.data(), text.size());
  rapidjson::Reader reader;
  DuplicateFinder finder;
  reader.Parse<kReaderFlags>(stream, finder);
  std::string message = "duplicate_key: duplicate object key ";
  std::string quoted;
  appendJsonString(quoted, finder.duplicate);
  message += quoted;
  if (reader.HasParseError()) {
    message += offsetText(stringLiteralStart(text, reader.GetErrorOffset()));
  }
  return message;
}

std::string describeReaderError(std::string_view text, rapidjson::ParseErrorCode code,
                                std::size_t offset) {
  switch (code) {
    case rapidjson::kParseErrorStringInvalidEncoding:
      // With UTF-8 checked up front, RapidJSON reports only unescaped control characters so.
      return "invalid_json: unescaped control character in string" + offsetText(offset);
    case rapidjson::kParseErrorStringUnicodeSurrogateInvalid:
      return "lone_surrogate: high surrogate escape without a low surrogate" + offsetText(offset);
    case rapidjson::kParseErrorNumberTooBig:
      // RapidJSON checks the decimal exponent before the value: "0e400" lands here as well.
      return "non_finite_number: number too big for a double" + offsetText(offset);
    case rapidjson::kParseErrorValueInvalid: {
      const std::string_view rest = text.substr(std::min(offset, text.size()));
      if (rest.starts_with("NaN") || rest.starts_with("Infinity") ||
          rest.starts_with("-Infinity")) {
        return "non_finite_number: NaN and Infinity are not JSON" + offsetText(offset);
      }
      break;
    }
    default:
      break;
  }
  return std::string("invalid_json: ") + rapidjson::GetParseError_En(code) + offsetText(offset);
}

// Lexicographic order of UTF-16 code units, computed on UTF-8 bytes: UTF-8 byte order is code
// point order, which differs from UTF-16 order only in that U+10000.. (lead bytes F0..F4,
// surrogate pairs D800..DBFF in UTF-16) sorts before U+E000..U+FFFF (lead bytes EE, EF). Moving
// EE and EF to the top of the byte range fixes exactly that; the map is a bijection, so invalid
// UTF-8 still gets a total order.
constexpr std::array<std::uint8_t, 256> kUtf16SortKey = [] {
  std::array<std::uint8_t, 256> key{};
  for (int b = 0; b < 256; ++b) {
    if (b == 0xEE || b == 0xEF) {
      key[static_cast<std::size_t>(b)] = static_cast<std::uint8_t>(b + 0x10);
    } else if (b >= 0xF0) {
      key[static_cast<std::size_t>(b)] = static_cast<std::uint8_t>(b - 2);
    } else {
      key[static_cast<std::size_t>(b)] = static_cast<std::uint8_t>(b);
    }
  }
  return key;
}();

// Bytes a JCS string must escape: '"', '\\' and the controls below 0x20.
constexpr std::array<bool, 256> kNeedsEscape = [] {
  std::array<bool, 256> needs{};
  for (int b = 0; b < 0x20; ++b) needs[static_cast<std::size_t>(b)] = true;
  needs['"'] = true;
  needs['\\'] = true;
  return needs;
}();

constexpr char kHexDigits[] = "0123456789abcdef";

void appendUnsigned(std::string& out, std::uint64_t value) {
  char buffer[24];
  const auto result = std::to_chars(buffer, buffer + sizeof buffer, value);
  out.append(buffer, result.ptr);
}

void appendNumber(std::string& out, const rapidjson::Value& value) {
  if (value.IsDouble()) {
    appendNumberEs6(out, value.GetDouble());
  } else if (value.IsUint64()) {
    const std::uint64_t u = value.GetUint64();
    if (u <= kMaxSafeInteger) {
      appendUnsigned(out, u);
    } else {
      appendNumberEs6(out, static_cast<double>(u));
    }
  } else {
    const std::int64_t i = value.GetInt64();  // negative: non-negative ones are Uint64 too
    if (i >= -static_cast<std::int64_t>(kMaxSafeInteger)) {
      out += '-';
      appendUnsigned(out, static_cast<std::uint64_t>(-i));
    } else {
      appendNumberEs6(out, static_cast<double>(i));
    }
  }
}

void appendCanonicalObject(std::string& out, const rapidjson::Value& value);

void appendCanonicalValue(std::string& out, const rapidjson::Value& value) {
  switch (value.GetType()) {
    case rapidjson::kNullType:
      out += "null";
      break;
    case rapidjson::kFalseType:
      out += "false";
      break;
    case rapidjson::kTrueType:
      out += "true";
      break;
    case rapidjson::kNumberType:
      appendNumber(out, value);
      break;
    case rapidjson::kStringType:
      appendJsonString(out, stringOf(value));
      break;
    case rapidjson::kArrayType: {
      out += '[';
      bool first = true;
      for (const auto& element : value.GetArray()) {
        if (!first) out += ',';
        first = false;
        appendCanonicalValue(out, element);
      }
      out += ']';
      break;
    }
    case rapidjson::kObjectType:
      appendCanonicalObject(out, value);
      break;
  }
}

void appendCanonicalObject(std::string& out, const rapidjson::Value& value) {
  using Member = rapidjson::Value::Member;
  const auto object = value.GetObject();
  const rapidjson::SizeType count = object.MemberCount();
  const auto by_name = [](const Member* a, const Member* b) {
    return lessUtf16(stringOf(a->name), stringOf(b->name));
  };
  // Most objects are small: sort pointers on the stack, spill to the heap only when large.
  constexpr rapidjson::SizeType kInline = 32;
  std::array<const Member*, kInline> inline_order;
  std::vector<const Member*> heap_order;
  const Member** order = inline_order.data();
  if (count > kInline) {
    heap_order.resize(count);
    order = heap_order.data();
  }
  const auto members = object.begin();
  for (rapidjson::SizeType i = 0; i < count; ++i) order[i] = &members[i];
  std::sort(order, order + count, by_name);

  out += '{';
  for (rapidjson::SizeType i = 0; i < count; ++i) {
    if (i > 0) out += ',';
    appendJsonString(out, stringOf(order[i]->name));
    out += ':';
    appendCanonicalValue(out, order[i]->value);
  }
  out += '}';
}

int base64Value(unsigned char c) {
  if (c >= 'A' && c <= 'Z') return c - 'A';
  if (c >= 'a' && c <= 'z') return c - 'a' + 26;
  if (c >= '0' && c <= '9') return c - '0' + 52;
  if (c == '+') return 62;
  if (c == '/') return 63;
  return -1;
}

struct DigestContextFree {
  void operator()(EVP_MD_CTX* context) const { EVP_MD_CTX_free(context); }
};

}  // namespace

Result<rapidjson::Document> parseStrict(std::string_view text) {
  if (text.starts_with("\xEF\xBB\xBF")) {
    return fail(Errc::parse_error, "bom: UTF-8 byte order mark" + offsetText(0));
  }
  // RapidJSON reads NUL as the end of input: "{}\0junk" would parse as "{}". A raw NUL is never
  // valid JSON (inside strings it must be escaped), so refuse it up front.
  if (const void* nul = std::memchr(text.data(), 0, text.size())) {
    return fail(Errc::parse_error,
                "invalid_json: NUL byte" + offsetText(static_cast<std::size_t>(
                                               static_cast<const char*>(nul) - text.data())));
  }

  if (const std::size_t bad = firstInvalidUtf8(text); bad != std::string_view::npos) {
    return fail(Errc::parse_error, "invalid_utf8: invalid UTF-8 sequence" + offsetText(bad));
  }

  // In-situ parse of a copy kept in the document's own pool: strings are unescaped in place and
  // referenced, not copied once more, and the copy gives RapidJSON the NUL end it reads up to.
  rapidjson::Document document;
  auto* buffer = static_cast<char*>(document.GetAllocator().Malloc(text.size() + 1));
  std::memcpy(buffer, text.data(), text.size());
  buffer[text.size()] = '\0';
  rapidjson::ParseResult result;
  std::string refusal;
  bool refusal_at_string_start = false;
  auto generate = [&](rapidjson::Document& target) {
    rapidjson::InsituStringStream stream(buffer);
    rapidjson::Reader reader;
    StrictHandler handler(target);
    result = reader.Parse<kReaderFlags | rapidjson::kParseInsituFlag>(stream, handler);
    refusal = handler.refusal();
    refusal_at_string_start = handler.refusalAtStringStart();
    return !result.IsError();
  };
  document.Populate(generate);

  if (result.IsError()) {
    if (result.Code() == rapidjson::kParseErrorTermination && !refusal.empty()) {
      const std::size_t offset =
          refusal_at_string_start ? stringLiteralStart(text, result.Offset()) : result.Offset();
      return fail(Errc::parse_error, refusal + offsetText(offset));
    }
    return fail(Errc::parse_error, describeReaderError(text, result.Code(), result.Offset()));
  }
  if (findDuplicateKey(document) != nullptr) {
    return fail(Errc::parse_error, describeDuplicate(text));
  }
  return document;
}

bool lessUtf16(std::string_view a, std::string_view b) {
  const std::size_t common = std::min(a.size(), b.size());
  const auto mismatch =
      std::mismatch(a.begin(), a.begin() + static_cast<std::ptrdiff_t>(common), b.begin());
  if (mismatch.first == a.begin() + static_cast<std::ptrdiff_t>(common)) {
    return a.size() < b.size();
  }
  return kUtf16SortKey[static_cast<unsigned char>(*mismatch.first)] <
         kUtf16SortKey[static_cast<unsigned char>(*mismatch.second)];
}

namespace {

// True when one of the 8 bytes is below 0x20, '"' or '\\' (bit tricks on a 64-bit word: a byte
// that is zero after the XOR, or below 0x20, sets its high bit in the result).
bool wordNeedsEscape(std::uint64_t word) {
  constexpr std::uint64_t kOnes = 0x0101010101010101u;
  constexpr std::uint64_t kHigh = 0x8080808080808080u;
  const auto has_zero = [](std::uint64_t x) { return (x - kOnes) & ~x & kHigh; };
  const std::uint64_t below_space = (word - kOnes * 0x20) & ~word & kHigh;
  return (below_space | has_zero(word ^ (kOnes * '"')) | has_zero(word ^ (kOnes * '\\'))) != 0;
}

// Index of the first byte that needs escaping, or text.size().
std::size_t firstEscape(std::string_view text) {
  const auto* bytes = reinterpret_cast<const unsigned char*>(text.data());
  std::size_t i = 0;
  while (i + 8 <= text.size() && !wordNeedsEscape(load64(bytes + i))) i += 8;
  while (i < text.size() && !kNeedsEscape[bytes[i]]) ++i;
  return i;
}

}  // namespace

void appendJsonString(std::string& out, std::string_view text) {
  const auto* bytes = reinterpret_cast<const unsigned char*>(text.data());
  const std::size_t size = text.size();
  std::size_t i = firstEscape(text);
  if (i == size) {  // the common case: one copy
    const std::size_t start = out.size();
    out.resize(start + size + 2);
    char* dst = out.data() + start;
    dst[0] = '"';
    if (size > 0) std::memcpy(dst + 1, text.data(), size);
    dst[size + 1] = '"';
    return;
  }
  out += '"';
  std::size_t run_start = 0;
  while (i < size) {
    if (i + 8 <= size && !wordNeedsEscape(load64(bytes + i))) {
      i += 8;
      continue;
    }
    const unsigned char c = bytes[i];
    if (!kNeedsEscape[c]) {
      ++i;
      continue;
    }
    out.append(text.data() + run_start, i - run_start);
    run_start = ++i;
    switch (c) {
      case '"':
        out += "\\\"";
        break;
      case '\\':
        out += "\\\\";
        break;
      case '\b':
        out += "\\b";
        break;
      case '\t':
        out += "\\t";
        break;
      case '\n':
        out += "\\n";
        break;
      case '\f':
        out += "\\f";
        break;
      case '\r':
        out += "\\r";
        break;
      default: {
        const char escape[] = {'\\', 'u', '0', '0', kHexDigits[c >> 4], kHexDigits[c & 0xF]};
        out.append(escape, sizeof escape);
        break;
      }
    }
  }
  out.append(text.data() + run_start, size - run_start);
  out += '"';
}

void appendCanonical(std::string& out, const rapidjson::Value& value) {
  appendCanonicalValue(out, value);
}

std::string canonicalize(const rapidjson::Value& value) {
  std::string out;
  out.reserve(256);
  appendCanonicalValue(out, value);
  return out;
}

void appendNumberEs6(std::string& out, double value) {
  if (!std::isfinite(value)) {
    out += "null";  // what JSON.stringify writes; parseStrict never produces one
    return;
  }
  if (value == 0) {
    out += '0';  // also -0
    return;
  }
  // Integers below 2^53 are exact and print as themselves (ES6 uses plain notation below 1e21).
  if (std::fabs(value) < static_cast<double>(kMaxSafeInteger) && std::trunc(value) == value) {
    if (value < 0) out += '-';
    appendUnsigned(out, static_cast<std::uint64_t>(std::fabs(value)));
    return;
  }
  // Shortest round-trip digits in scientific form "d[.ddd]e<sign><exp>", re-laid out per
  // ECMAScript Number::toString: value = 0.d1..dk * 10^n.
  char buffer[40];
  const auto result =
      std::to_chars(buffer, buffer + sizeof buffer, value, std::chars_format::scientific);
  const std::string_view sci(buffer, static_cast<std::size_t>(result.ptr - buffer));
  std::size_t pos = 0;
  if (sci[pos] == '-') {
    out += '-';
    ++pos;
  }
  char digits[20];
  int k = 0;
  for (; pos < sci.size() && sci[pos] != 'e'; ++pos) {
    if (sci[pos] != '.') digits[k++] = sci[pos];
  }
  int exponent = 0;
  std::from_chars(sci.data() + pos + (sci[pos + 1] == '+' ? 2 : 1), sci.data() + sci.size(),
                  exponent);
  const int n = exponent + 1;

  if (k <= n && n <= 21) {
    out.append(digits, static_cast<std::size_t>(k));
    out.append(static_cast<std::size_t>(n - k), '0');
  } else if (0 < n && n <= 21) {
    out.append(digits, static_cast<std::size_t>(n));
    out += '.';
    out.append(digits + n, static_cast<std::size_t>(k - n));
  } else if (-6 < n && n <= 0) {
    out += "0.";
    out.append(static_cast<std::size_t>(-n), '0');
    out.append(digits, static_cast<std::size_t>(k));
  } else {
    out += digits[0];
    if (k > 1) {
      out += '.';
      out.append(digits + 1, static_cast<std::size_t>(k - 1));
    }
    out += 'e';
    out += n - 1 >= 0 ? '+' : '-';
    appendUnsigned(out, static_cast<std::uint64_t>(std::abs(n - 1)));
  }
}

std::string formatNumberEs6(double value) {
  std::string out;
  appendNumberEs6(out, value);
  return out;
}

std::string sha256Hex(std::string_view bytes) {
  // Fetched once: OpenSSL 3 would otherwise look the algorithm up on every EVP_DigestInit.
  static const EVP_MD* const sha256 = [] {
    const EVP_MD* fetched = EVP_MD_fetch(nullptr, "SHA256", nullptr);
    return fetched != nullptr ? fetched : EVP_sha256();
  }();
  thread_local const std::unique_ptr<EVP_MD_CTX, DigestContextFree> context(EVP_MD_CTX_new());
  unsigned char digest[EVP_MAX_MD_SIZE];
  unsigned int length = 0;
  if (sha256 == nullptr || context == nullptr ||
      EVP_DigestInit_ex2(context.get(), sha256, nullptr) != 1 ||
      EVP_DigestUpdate(context.get(), bytes.data(), bytes.size()) != 1 ||
      EVP_DigestFinal_ex(context.get(), digest, &length) != 1) {
    // Only reachable when OpenSSL itself is broken (no default provider): an invariant.
    std::abort();
  }
  std::string hex(static_cast<std::size_t>(length) * 2, '0');
  for (unsigned int i = 0; i < length; ++i) {
    hex[2 * i] = kHexDigits[digest[i] >> 4];
    hex[2 * i + 1] = kHexDigits[digest[i] & 0xF];
  }
  return hex;
}

void appendBase64(std::string& out, std::string_view bytes) {
  static constexpr char kAlphabet[] =
      "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  const std::size_t start = out.size();
  out.resize(start + (bytes.size() + 2) / 3 * 4);
  char* dst = out.data() + start;
  const auto* src = reinterpret_cast<const unsigned char*>(bytes.data());
  std::size_t i = 0;
  for (; i + 3 <= bytes.size(); i += 3) {
    const std::uint32_t triple = (std::uint32_t{src[i]} << 16) | (std::uint32_t{src[i + 1]} << 8) |
                                 std::uint32_t{src[i + 2]};
    *dst++ = kAlphabet[(triple >> 18) & 0x3F];
    *dst++ = kAlphabet[(triple >> 12) & 0x3F];
    *dst++ = kAlphabet[(triple >> 6) & 0x3F];
    *dst++ = kAlphabet[triple & 0x3F];
  }
  const std::size_t rest = bytes.size() - i;
  if (rest > 0) {
    std::uint32_t triple = std::uint32_t{src[i]} << 16;
    if (rest == 2) triple |= std::uint32_t{src[i + 1]} << 8;
    *dst++ = kAlphabet[(triple >> 18) & 0x3F];
    *dst++ = kAlphabet[(triple >> 12) & 0x3F];
    *dst++ = rest == 2 ? kAlphabet[(triple >> 6) & 0x3F] : '=';
    *dst++ = '=';
  }
}

std::string base64Encode(std::string_view bytes) {
  std::string out;
  appendBase64(out, bytes);
  return out;
}

// Strict: only the canonical encoding of some bytes is accepted (length a multiple of 4, '='
// only as the last one or two characters, no whitespace, zero padding bits), so one byte string
// has exactly one accepted text.
Result<std::string> base64Decode(std::string_view text) {
  if (text.size() % 4 != 0) {
    return fail(Errc::invalid_argument,
                "base64: length " + std::to_string(text.size()) + " is not a multiple of 4");
  }
  std::size_t padding = 0;
  if (!text.empty() && text.back() == '=') padding = text[text.size() - 2] == '=' ? 2 : 1;
  std::string out;
  out.reserve(text.size() / 4 * 3);
  for (std::size_t i = 0; i < text.size(); i += 4) {
    const bool last = i + 4 == text.size();
    std::uint32_t quad = 0;
    for (std::size_t j = 0; j < 4; ++j) {
      const std::size_t at = i + j;
      const bool is_padding = last && j >= 4 - padding;
      const int v = is_padding ? 0 : base64Value(static_cast<unsigned char>(text[at]));
      if (v < 0) {
        return fail(Errc::invalid_argument, "base64: invalid character" + offsetText(at));
      }
      quad = (quad << 6) | static_cast<std::uint32_t>(v);
    }
    out += static_cast<char>((quad >> 16) & 0xFF);
    if (last && padding == 2) {
      if ((quad & 0xFFFF) != 0) {
        return fail(Errc::invalid_argument, "base64: non-zero padding bits" + offsetText(i));
      }
      break;
    }
    out += static_cast<char>((quad >> 8) & 0xFF);
    if (last && padding == 1) {
      if ((quad & 0xFF) != 0) {
        return fail(Errc::invalid_argument, "base64: non-zero padding bits" + offsetText(i));
      }
      break;
    }
    out += static_cast<char>(quad & 0xFF);
  }
  return out;
}

bool isValidUtf8(std::string_view text) { return firstInvalidUtf8(text) == std::string_view::npos; }

std::string toValidUtf8(std::string_view text) {
  constexpr std::string_view kReplacement = "\xEF\xBF\xBD";  // U+FFFD
  std::string out;
  out.reserve(text.size() + 8);
  for (;;) {
    const std::size_t bad = firstInvalidUtf8(text);
    if (bad == std::string_view::npos) {
      out += text;
      return out;
    }
    out += text.substr(0, bad);
    out += kReplacement;
    text.remove_prefix(bad + 1);
  }
}

std::string toString(const rapidjson::Value& value) {
  rapidjson::StringBuffer buffer;
  rapidjson::Writer<rapidjson::StringBuffer> writer(buffer);
  value.Accept(writer);
  return std::string(buffer.GetString(), buffer.GetSize());
}

}  // namespace countersign::json
