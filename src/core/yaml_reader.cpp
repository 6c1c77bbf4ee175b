#include "yaml_reader.hpp"

#include <yaml-cpp/eventhandler.h>

#include <algorithm>
#include <charconv>
#include <cmath>
#include <exception>
#include <sstream>

namespace countersign::yaml {
namespace {

constexpr std::string_view kStrTag = "tag:yaml.org,2002:str";
constexpr std::string_view kIntTag = "tag:yaml.org,2002:int";
constexpr std::string_view kFloatTag = "tag:yaml.org,2002:float";
constexpr std::string_view kBoolTag = "tag:yaml.org,2002:bool";
constexpr std::string_view kNullTag = "tag:yaml.org,2002:null";
// Beyond this, integers lose precision as doubles (and in JSON consumers).
constexpr double kMaxExactInteger = 9007199254740992.0;  // 2^53

bool isDigit(char c) {
  return c >= '0' && c <= '9';
}
bool isHexDigit(char c) {
  return isDigit(c) || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F');
}
bool allOf(std::string_view text, bool (*pred)(char)) {
  return !text.empty() && std::all_of(text.begin(), text.end(), pred);
}

// [-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)?  (YAML 1.2 core schema float)
bool isCoreFloat(std::string_view text) {
  std::size_t i = 0;
  if (i < text.size() && (text[i] == '-' || text[i] == '+')) ++i;
  std::size_t int_digits = 0;
  while (i < text.size() && isDigit(text[i])) ++i, ++int_digits;
  std::size_t frac_digits = 0;
  bool dot = false;
  if (i < text.size() && text[i] == '.') {
    dot = true;
    ++i;
    while (i < text.size() && isDigit(text[i])) ++i, ++frac_digits;
  }
  if (int_digits == 0 && !(dot && frac_digits > 0)) return false;
  if (i < text.size() && (text[i] == 'e' || text[i] == 'E')) {
    ++i;
    if (i < text.size() && (text[i] == '-' || text[i] == '+')) ++i;
    std::size_t exp_digits = 0;
    while (i < text.size() && isDigit(text[i])) ++i, ++exp_digits;
    if (exp_digits == 0) return false;
  }
  return i == text.size();
}

struct Resolved {
  Scalar scalar;
  std::string problem;  // set when the scalar has a type but no usable value (.inf, 2^60)
};

Resolved integerFrom(std::string_view text, std::string_view digits, int base, bool negative) {
  Resolved r;
  r.scalar.kind = ScalarKind::integer;
  r.scalar.text = std::string(text);
  std::uint64_t value = 0;
  const auto [end, ec] = std::from_chars(digits.data(), digits.data() + digits.size(), value, base);
  if (ec != std::errc() || end != digits.data() + digits.size() ||
      static_cast<double>(value) > kMaxExactInteger) {
    r.problem = "integer out of range (at most 2^53 in magnitude)";
    return r;
  }
  r.scalar.number = negative ? -static_cast<double>(value) : static_cast<double>(value);
  return r;
}

// Types an untagged plain scalar by the core schema.
Resolved resolvePlain(std::string_view text) {
  Resolved r;
  r.scalar.text = std::string(text);
  if (text.empty() || text == "~" || text == "null" || text == "Null" || text == "NULL") {
    r.scalar.kind = ScalarKind::null;
    return r;
  }
  if (text == "true" || text == "True" || text == "TRUE") {
    r.scalar.kind = ScalarKind::boolean;
    r.scalar.boolean = true;
    return r;
  }
  if (text == "false" || text == "False" || text == "FALSE") {
    r.scalar.kind = ScalarKind::boolean;
    return r;
  }
  if (text.size() > 2 && text.substr(0, 2) == "0o" &&
      allOf(text.substr(2), [](char c) { return c >= '0' && c <= '7'; })) {
    return integerFrom(text, text.substr(2), 8, false);
  }
  if (text.size() > 2 && text.substr(0, 2) == "0x" && allOf(text.substr(2), isHexDigit)) {
    return integerFrom(text, text.substr(2), 16, false);
  }
  {
    std::string_view digits = text;
    bool negative = false;
    if (!digits.empty() && (digits[0] == '-' || digits[0] == '+')) {
      negative = digits[0] == '-';
      digits.remove_prefix(1);
    }
    if (allOf(digits, isDigit)) return integerFrom(text, digits, 10, negative);
  }
  if (isCoreFloat(text)) {
    r.scalar.kind = ScalarKind::number;
    std::string_view body = text;
    if (body[0] == '+') body.remove_prefix(1);
    double value = 0;
    const auto [end, ec] = std::from_chars(body.data(), body.data() + body.size(), value);
    if (ec != std::errc() || end != body.data() + body.size() || !std::isfinite(value)) {
      r.problem = "number out of range";
      return r;
    }
    r.scalar.number = value;
    return r;
  }
  std::string_view unsigned_text = text;
  if (unsigned_text[0] == '-' || unsigned_text[0] == '+') unsigned_text.remove_prefix(1);
  if (unsigned_text == ".inf" || unsigned_text == ".Inf" || unsigned_text == ".INF" ||
      text == ".nan" || text == ".NaN" || text == ".NAN") {
    r.scalar.kind = ScalarKind::number;
    r.problem = "not a finite number";
    return r;
  }
  r.scalar.kind = ScalarKind::string;
  return r;
}

// Types any scalar node, honouring the standard tags. nullopt for collections.
std::optional<Resolved> resolve(const YAML::Node& node) {
  if (node.IsNull()) return Resolved{};
  if (!node.IsScalar()) return std::nullopt;
  const std::string& tag = node.Tag();
  const std::string& text = node.Scalar();
  if (tag == "!" || tag == kStrTag) {
    Resolved r;
    r.scalar.kind = ScalarKind::string;
    r.scalar.text = text;
    return r;
  }
  Resolved r = resolvePlain(text);
  if (tag == "?" || tag.empty()) return r;
  const bool fits = (tag == kIntTag && r.scalar.kind == ScalarKind::integer) ||
                    (tag == kFloatTag && (r.scalar.kind == ScalarKind::number ||
                                          r.scalar.kind == ScalarKind::integer)) ||
                    (tag == kBoolTag && r.scalar.kind == ScalarKind::boolean) ||
                    (tag == kNullTag && r.scalar.kind == ScalarKind::null);
  if (!fits) {
    r.problem = "unsupported tag " + tag + " on " + quote(text);
    return r;
  }
  if (tag == kFloatTag) r.scalar.kind = ScalarKind::number;
  return r;
}

std::string joinChoices(std::initializer_list<std::string_view> choices) {
  std::string out;
  std::size_t i = 0;
  for (const auto choice : choices) {
    if (i > 0) out += (i + 1 == choices.size()) ? " or " : ", ";
    out += choice;
    ++i;
  }
  return out;
}

// Records the shape of one document's events, to count documents without building nodes.
struct DocumentProbe final : YAML::EventHandler {
  YAML::Mark start = YAML::Mark::null_mark();
  YAML::Mark null_mark = YAML::Mark::null_mark();
  std::size_t events = 0;
  bool only_null = true;

  // A document that is nothing but an implicit null: empty, or content yaml-cpp skipped.
  bool emptyNull() const { return events == 1 && only_null; }

  void OnDocumentStart(const YAML::Mark& mark) override { start = mark; }
  void OnDocumentEnd() override {}
  void OnNull(const YAML::Mark& mark, YAML::anchor_t) override {
    ++events;
    null_mark = mark;
  }
  void OnAlias(const YAML::Mark&, YAML::anchor_t) override { seen(); }
  void OnScalar(const YAML::Mark&, const std::string&, YAML::anchor_t,
                const std::string&) override {
    seen();
  }
  void OnSequenceStart(const YAML::Mark&, const std::string&, YAML::anchor_t,
                       YAML::EmitterStyle::value) override {
    seen();
  }
  void OnSequenceEnd() override {}
  void OnMapStart(const YAML::Mark&, const std::string&, YAML::anchor_t,
                  YAML::EmitterStyle::value) override {
    seen();
  }
  void OnMapEnd() override {}

 private:
  void seen() {
    ++events;
    only_null = false;
  }
};

}  // namespace

void Diagnostics::fail(std::string_view path, std::string_view message) {
  if (first_) return;
  std::string text = source_;
  text += ": ";
  if (!path.empty()) {
    text += path;
    text += ": ";
  }
  text += message;
  first_ = Error{Errc::invalid_argument, std::move(text)};
}

Error Diagnostics::error() const {
  if (first_) return *first_;
  return Error{Errc::internal, source_ + ": no error recorded"};
}

bool Diagnostics::spend(std::string_view path) {
  if (budget_ == 0) return false;
  if (--budget_ == 0) {
    fail(path, "document too large (more than " + std::to_string(kMaxNodes) + " nodes)");
    return false;
  }
  return true;
}

Result<YAML::Node> parseDocument(std::string_view text, std::string_view source) {
  const auto at = [&](const YAML::Mark& mark) {
    std::string where(source);
    if (!mark.is_null()) {
      where += ":" + std::to_string(mark.line + 1) + ":" + std::to_string(mark.column + 1);
    }
    return where;
  };
  try {
    // Count the documents first, two at most: yaml-cpp 0.7's LoadAll never ends on some input
    // (a stray ',' at the top level yields empty documents forever without moving on).
    std::istringstream stream{std::string(text)};
    YAML::Parser parser(stream);
    DocumentProbe first;
    if (!parser.HandleNextDocument(first)) {
      return fail(Errc::parse_error, std::string(source) + ": empty document");
    }
    DocumentProbe second;
    const bool more = parser.HandleNextDocument(second);
    if (more && first.emptyNull() && second.emptyNull() &&
        second.null_mark.pos == first.null_mark.pos) {
      return fail(Errc::parse_error, at(first.null_mark) + ": unexpected content");
    }
    if (first.emptyNull()) return fail(Errc::parse_error, std::string(source) + ": empty document");
    if (more) {
      return fail(Errc::parse_error, at(second.start) + ": expected one YAML document, found more");
    }
    return YAML::Load(std::string(text));
  } catch (const YAML::Exception& e) {
    return fail(Errc::parse_error, at(e.mark) + ": " + e.msg);
  } catch (const std::exception& e) {
    return fail(Errc::parse_error, std::string(source) + ": " + e.what());
  }
}

std::string childPath(std::string_view parent, std::string_view key) {
  std::string out(parent);
  if (!out.empty()) out += '.';
  out += key;
  return out;
}

std::string indexPath(std::string_view parent, std::size_t index) {
  return std::string(parent) + "[" + std::to_string(index) + "]";
}

std::string quote(std::string_view text) {
  constexpr std::size_t kMax = 80;
  std::string out = "\"";
  for (std::size_t i = 0; i < text.size() && i < kMax; ++i) {
    const auto c = static_cast<unsigned char>(text[i]);
    if (c == '"' || c == '\\') {
      out += '\\';
      out += static_cast<char>(c);
    } else if (c == '\n') {
      out += "\\n";
    } else if (c == '\t') {
      out += "\\t";
    } else if (c < 0x20 || c == 0x7f) {
      static constexpr char kHex[] = "0123456789abcdef";
      out += "\\x";
      out += kHex[c >> 4];
      out += kHex[c & 0xf];
    } else {
      out += static_cast<char>(c);
    }
  }
  if (text.size() > kMax) out += "...";
  out += '"';
  return out;
}

std::optional<std::chrono::milliseconds> parseDuration(std::string_view text) {
  std::size_t digits = 0;
  while (digits < text.size() && isDigit(text[digits])) ++digits;
  if (digits == 0 || digits > 12) return std::nullopt;
  std::int64_t count = 0;
  std::from_chars(text.data(), text.data() + digits, count);
  const std::string_view unit = text.substr(digits);
  if (unit == "ms") return std::chrono::milliseconds(count);
  if (unit == "s") return std::chrono::milliseconds(count * 1000);
  if (unit == "m") return std::chrono::milliseconds(count * 60 * 1000);
  if (unit == "h") return std::chrono::milliseconds(count * 3600 * 1000);
  return std::nullopt;
}

bool Value::isNull() const {
  return node_.IsNull();
}
bool Value::isMap() const {
  return node_.IsMap();
}
bool Value::isList() const {
  return node_.IsSequence();
}

std::string Value::describe() const {
  if (node_.IsMap()) return "a mapping";
  if (node_.IsSequence()) return "a list";
  const auto r = resolve(node_);
  if (!r) return "nothing";
  switch (r->scalar.kind) {
    case ScalarKind::null:
      return "null";
    case ScalarKind::string:
      return quote(r->scalar.text);
    default:
      return r->scalar.text;
  }
}

void Value::fail(std::string_view message) const {
  diag_->fail(path_, message);
}

void Value::expected(std::string_view what) const {
  fail("expected " + std::string(what) + ", got " + describe());
}

std::optional<Scalar> Value::scalar() const {
  const auto r = resolve(node_);
  if (!r) {
    expected("a scalar");
    return std::nullopt;
  }
  if (!r->problem.empty()) {
    fail(r->problem);
    return std::nullopt;
  }
  return r->scalar;
}

std::optional<std::string> Value::string() const {
  const auto r = resolve(node_);
  if (!r || r->scalar.kind != ScalarKind::string) {
    std::string hint;
    if (r && r->scalar.kind != ScalarKind::null) hint = " (quote it to make it a string)";
    fail("expected a string, got " + describe() + hint);
    return std::nullopt;
  }
  return r->scalar.text;
}

std::optional<bool> Value::boolean() const {
  const auto r = resolve(node_);
  if (!r || r->scalar.kind != ScalarKind::boolean || !r->problem.empty()) {
    expected("true or false");
    return std::nullopt;
  }
  return r->scalar.boolean;
}

std::optional<std::int64_t> Value::integer(std::int64_t min, std::int64_t max) const {
  const auto r = resolve(node_);
  if (!r || r->scalar.kind != ScalarKind::integer || !r->problem.empty()) {
    expected("an integer");
    return std::nullopt;
  }
  const double value = r->scalar.number;
  if (value < static_cast<double>(min) || value > static_cast<double>(max)) {
    fail("expected an integer from " + std::to_string(min) + " to " + std::to_string(max) +
         ", got " + r->scalar.text);
    return std::nullopt;
  }
  return static_cast<std::int64_t>(value);
}

std::optional<double> Value::number() const {
  const auto r = resolve(node_);
  if (!r || (r->scalar.kind != ScalarKind::integer && r->scalar.kind != ScalarKind::number)) {
    expected("a number");
    return std::nullopt;
  }
  if (!r->problem.empty()) {
    fail(r->problem);
    return std::nullopt;
  }
  return r->scalar.number;
}

std::optional<std::chrono::milliseconds> Value::duration() const {
  const auto r = resolve(node_);
  if (r && r->scalar.kind == ScalarKind::string) {
    if (auto d = parseDuration(r->scalar.text)) return d;
  }
  expected("a duration like 500ms, 5s, 30m or 2h");
  return std::nullopt;
}

std::optional<std::string> Value::oneOf(std::initializer_list<std::string_view> choices) const {
  const auto r = resolve(node_);
  if (r && r->scalar.kind == ScalarKind::string) {
    for (const auto choice : choices) {
      if (r->scalar.text == choice) return r->scalar.text;
    }
  }
  expected(joinChoices(choices));
  return std::nullopt;
}

std::optional<std::vector<std::string>> Value::stringList() const {
  if (!node_.IsSequence()) {
    expected("a list of strings");
    return std::nullopt;
  }
  std::vector<std::string> out;
  for (const Value& item : items()) {
    auto text = item.string();
    if (!text) return std::nullopt;
    out.push_back(std::move(*text));
  }
  if (!diag_->ok()) return std::nullopt;
  return out;
}

std::optional<StringMap> Value::stringMap() const {
  MapReader reader(*this);
  if (!reader.valid()) return std::nullopt;
  StringMap out;
  for (const auto& [key, value] : reader.entries()) {
    auto text = value.string();
    if (!text) return std::nullopt;
    out.emplace(key, std::move(*text));
  }
  return out;
}

std::vector<Value> Value::items() const {
  std::vector<Value> out;
  if (!node_.IsSequence()) {
    expected("a list");
    return out;
  }
  out.reserve(node_.size());
  std::size_t index = 0;
  for (const auto& child : node_) {
    std::string child_path = indexPath(path_, index++);
    if (!diag_->spend(child_path)) return {};
    out.emplace_back(*diag_, child, std::move(child_path));
  }
  return out;
}

MapReader::MapReader(const Value& map, std::initializer_list<std::string_view> allowed)
    : diag_(&map.diagnostics()), path_(map.path()) {
  const std::vector<std::string_view> keys(allowed);
  load(map, &keys);
}

MapReader::MapReader(const Value& map) : diag_(&map.diagnostics()), path_(map.path()) {
  load(map, nullptr);
}

void MapReader::load(const Value& map, const std::vector<std::string_view>* allowed) {
  if (!map.isMap()) {
    map.expected("a mapping");
    return;
  }
  for (const auto& entry : map.node()) {
    const YAML::Node& key_node = entry.first;
    const auto key = resolve(key_node);
    if (!key || key->scalar.kind == ScalarKind::null || key->scalar.text.empty()) {
      diag_->fail(path_, "keys must be non-empty strings, got " +
                             Value(*diag_, key_node, path_).describe());
      return;
    }
    const std::string& name = key->scalar.text;
    std::string child_path = childPath(path_, name);
    if (!diag_->spend(child_path)) return;
    for (const auto& [seen, unused] : entries_) {
      if (seen == name) {
        diag_->fail(child_path, "duplicate key");
        return;
      }
    }
    if (allowed && std::find(allowed->begin(), allowed->end(), name) == allowed->end()) {
      std::string expected;
      for (const auto candidate : *allowed) {
        if (!expected.empty()) expected += ", ";
        expected += candidate;
      }
      diag_->fail(child_path, "unknown key (expected one of: " + expected + ")");
      return;
    }
    entries_.emplace_back(name, Value(*diag_, entry.second, std::move(child_path)));
  }
  valid_ = true;
}

std::optional<Value> MapReader::get(std::string_view key) const {
  for (const auto& [name, value] : entries_) {
    if (name == key) return value;
  }
  return std::nullopt;
}

std::optional<Value> MapReader::require(std::string_view key) const {
  auto value = get(key);
  if (!value && valid_) diag_->fail(childPath(path_, key), "required key is missing");
  return value;
}

void MapReader::read(std::string_view key, std::string& out) const {
  if (const auto value = get(key)) {
    if (auto v = value->string()) out = std::move(*v);
  }
}

void MapReader::read(std::string_view key, bool& out) const {
  if (const auto value = get(key)) {
    if (auto v = value->boolean()) out = *v;
  }
}

void MapReader::read(std::string_view key, int& out, int min, int max) const {
  if (const auto value = get(key)) {
    if (auto v = value->integer(min, max)) out = static_cast<int>(*v);
  }
}

void MapReader::read(std::string_view key, std::chrono::milliseconds& out) const {
  if (const auto value = get(key)) {
    if (auto v = value->duration()) out = *v;
  }
}

void MapReader::read(std::string_view key, std::vector<std::string>& out) const {
  if (const auto value = get(key)) {
    if (auto v = value->stringList()) out = std::move(*v);
  }
}

void MapReader::read(std::string_view key, StringMap& out) const {
  if (const auto value = get(key)) {
    if (auto v = value->stringMap()) out = std::move(*v);
  }
}

}  // namespace countersign::yaml
