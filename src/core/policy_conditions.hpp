// Internal: the compiled form of a rule's `when` conditions, how they are evaluated against a
// job, and their normalised JSON form (what the policy snapshot hashes). Semantics are described
// at the top of policy.cpp.
#pragma once

#include <rapidjson/document.h>
#include <re2/re2.h>

#include <cstddef>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "countersign/policy.hpp"
#include "yaml_reader.hpp"

namespace countersign {

// Strings longer than this are not run through a `matches` regex: the evaluation is
// indeterminate and the job is denied (fail closed). RE2 runs in time linear in the input; the
// bound keeps one condition's cost on the serial intake thread small whatever the pattern.
inline constexpr std::size_t kMaxRegexInput = 64 * 1024;
// A `matches` pattern compiles to at most this many RE2 instructions, else the policy is refused
// at load: counted repetitions multiply a program, and when RE2's DFA cannot cache the states of
// a large program it falls back to a search costing input x program (measured on one 64 KiB
// string: `[a-h]{1,500}z`, 1,004 instructions, 19 ms; `(a|...|h){1,1000}z`, 4,004, 6.6 s).
inline constexpr int kMaxRegexProgram = 1000;

enum class ConditionSource { topic, subject, header, payload, label };
enum class OperatorKind { eq, ne, in, not_in, gt, gte, lt, lte, matches, exists };

// A scalar compared by JSON type and value.
struct Literal {
  enum class Type { null, boolean, number, string };
  Type type = Type::null;
  bool boolean = false;
  double number = 0;
  std::string text;
};

struct Operator {
  OperatorKind kind = OperatorKind::eq;
  std::vector<Literal> values;  // eq / ne: one; in / not_in: one or more
  double bound = 0;             // gt / gte / lt / lte
  std::string pattern;          // matches: the regex as written (RE2 syntax)
  std::shared_ptr<const re2::RE2> regex;
  bool exists = true;  // exists
};

struct SubjectPattern {
  std::string text;
  bool literal = false;  // no wildcard: compared as a string
  // The literal tokens before the first wildcard, with their dots ("a.b." for "a.b.*.>"): a
  // subject that does not start with it cannot match, which rejects most rules with one compare.
  std::string prefix;
};

struct PathSegment {
  std::string name;
  std::optional<std::size_t> index;  // the segment is a number: also an array index
};

struct Condition {
  std::string key;  // as written: "topic", "payload.amount", "header.X-Env", "env"
  ConditionSource source = ConditionSource::label;
  std::string name;                      // header or label name
  std::vector<PathSegment> path;         // payload
  std::vector<SubjectPattern> patterns;  // topic / subject: any of them
  std::vector<Operator> operators;       // header / payload / label: all of them
};

enum class Outcome { holds, fails, indeterminate };

// What a condition compares: a JSON value, a string (header, route label), nothing (missing
// path), or unknowable (the payload is not JSON, so no payload-derived value may be used).
struct Operand {
  enum class State { missing, unknowable, json, text };
  State state = State::missing;
  const rapidjson::Value* json = nullptr;
  std::string_view text;
};

// Label names (bare `when` keys, throttle keys): letters, digits, '_' and '-'.
bool isLabelName(std::string_view name);

// Compiles `when.<key>: <value>`; nullptr with an error recorded in the diagnostics on failure.
std::shared_ptr<const Condition> compileCondition(std::string_view key, const yaml::Value& value);

// Label lookup without allocating: route label, else (payload must be JSON) payload
// labels.<name>, else payload top-level <name>, else header <name>.
Operand resolveLabel(std::string_view name, const JobView& job);

Outcome evaluateCondition(const Condition& condition, const JobView& job);

// Why the condition did not hold, for explain(): `topic "a.b" does not match "c.d"`.
std::string describeFailure(const Condition& condition, const JobView& job);

// What the condition tests and the value it saw, whether or not it holds.
ConditionCheck checkCondition(const Condition& condition, const JobView& job);

// The normalised JSON value of one condition (added under its key by the caller).
rapidjson::Value normalise(const Condition& condition,
                           rapidjson::Document::AllocatorType& allocator);

}  // namespace countersign
