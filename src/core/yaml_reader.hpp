// Internal: path-aware reading of YAML documents on yaml-cpp, shared by the policy and the config
// loaders. Every error names the full path of the offending key and what was found there
// (`routes[0].mode: expected core or jetstream, got "jetsream"`). Scalars are typed by the YAML
// 1.2 core schema: unquoted `1` is a number, quoted `"1"` a string, `true`/`false` booleans,
// `null`/`~`/empty null.
//
// Readers do not throw and do not stop at the first error: they record it in Diagnostics (the
// first one wins, later ones are usually its consequences) and return nullopt / empty values, so
// that loaders read straight through and check `ok()` once per section.
#pragma once

#include <yaml-cpp/yaml.h>

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <initializer_list>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "countersign/result.hpp"

namespace countersign::yaml {

using StringMap = std::map<std::string, std::string, std::less<>>;

// Collects the first error of one document. Also bounds the number of nodes visited, so that
// aliases (`*a` repeated) cannot make a small document expand into an enormous walk.
class Diagnostics {
 public:
  static constexpr std::size_t kMaxNodes = 200000;

  explicit Diagnostics(std::string source) : source_(std::move(source)) {}

  void fail(std::string_view path, std::string_view message);
  bool ok() const { return !first_.has_value(); }
  // Errc::invalid_argument, "<source>: <path>: <message>". Only meaningful when !ok().
  Error error() const;
  // Counts one visited node; false (with an error recorded) once the budget is spent.
  bool spend(std::string_view path);

 private:
  std::string source_;
  std::optional<Error> first_;
  std::size_t budget_ = kMaxNodes;
};

// Parses exactly one YAML document. Syntax errors read "<source>:<line>:<column>: <what>";
// an empty document (nothing but comments or whitespace) and several documents are refused.
// Never throws.
Result<YAML::Node> parseDocument(std::string_view text, std::string_view source);

enum class ScalarKind { null, boolean, integer, number, string };

// A scalar typed by the YAML 1.2 core schema.
struct Scalar {
  ScalarKind kind = ScalarKind::null;
  std::string text;      // the scalar as written (for strings: the string itself)
  bool boolean = false;  // kind == boolean
  double number = 0;     // kind == integer or number (integers are within +-2^53)
};

// "a.b" + "c" -> "a.b.c"; "" + "c" -> "c".
std::string childPath(std::string_view parent, std::string_view key);
// "routes" + 0 -> "routes[0]".
std::string indexPath(std::string_view parent, std::size_t index);

// A quoted, shortened rendering of text for messages: "jetsream".
std::string quote(std::string_view text);

// Parses "500ms", "5s", "30m", "2h" (a non-negative integer and a unit).
std::optional<std::chrono::milliseconds> parseDuration(std::string_view text);

// One node and where it is.
class Value {
 public:
  Value(Diagnostics& diagnostics, YAML::Node node, std::string path)
      : diag_(&diagnostics), node_(std::move(node)), path_(std::move(path)) {}

  const std::string& path() const { return path_; }
  const YAML::Node& node() const { return node_; }
  Diagnostics& diagnostics() const { return *diag_; }

  bool isNull() const;
  bool isMap() const;
  bool isList() const;

  // What was found, for messages: `"three"`, `3.5`, `true`, `null`, `a list`, `a mapping`.
  std::string describe() const;
  // Records "<path>: <message>".
  void fail(std::string_view message) const;
  // Records "<path>: expected <what>, got <describe()>".
  void expected(std::string_view what) const;

  // Typed readers: nullopt (and an error recorded) when the node does not have that type.
  std::optional<Scalar> scalar() const;  // any scalar, typed (no .inf/.nan, no huge integers)
  std::optional<std::string> string() const;
  std::optional<bool> boolean() const;
  std::optional<std::int64_t> integer(std::int64_t min, std::int64_t max) const;
  std::optional<double> number() const;
  std::optional<std::chrono::milliseconds> duration() const;
  // A string that must be one of `choices`: "expected core or jetstream, got "jetsream"".
  std::optional<std::string> oneOf(std::initializer_list<std::string_view> choices) const;
  std::optional<std::vector<std::string>> stringList() const;
  std::optional<StringMap> stringMap() const;

  // The elements of a list (an error and {} when it is not a list).
  std::vector<Value> items() const;

 private:
  Diagnostics* diag_;
  YAML::Node node_;
  std::string path_;
};

// A mapping read against a set of allowed keys. Keys must be strings and unique; a key outside
// `allowed` is an error naming the allowed ones:
// `routes[0].modee: unknown key (expected one of: name, from, to, mode, ...)`.
class MapReader {
 public:
  MapReader(const Value& map, std::initializer_list<std::string_view> allowed);
  // Any key is allowed (labels, `when`).
  explicit MapReader(const Value& map);

  // False when the node was not a mapping or a key was refused.
  bool valid() const { return valid_; }
  const std::string& path() const { return path_; }

  std::optional<Value> get(std::string_view key) const;
  bool has(std::string_view key) const { return get(key).has_value(); }
  // Records `<path>.<key>: required key is missing` when absent.
  std::optional<Value> require(std::string_view key) const;
  // In document order.
  const std::vector<std::pair<std::string, Value>>& entries() const { return entries_; }

  // Assign `out` when the key is present and well-typed; leave it alone when absent.
  void read(std::string_view key, std::string& out) const;
  void read(std::string_view key, bool& out) const;
  void read(std::string_view key, int& out, int min, int max) const;
  void read(std::string_view key, std::chrono::milliseconds& out) const;
  void read(std::string_view key, std::vector<std::string>& out) const;
  void read(std::string_view key, StringMap& out) const;

 private:
  void load(const Value& map, const std::vector<std::string_view>* allowed);

  Diagnostics* diag_;
  std::string path_;
  bool valid_ = false;
  std::vector<std::pair<std::string, Value>> entries_;
};

}  // namespace countersign::yaml
