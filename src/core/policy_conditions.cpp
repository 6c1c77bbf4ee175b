#include "policy_conditions.hpp"

#include <algorithm>
#include <cstring>
#include <utility>

#include "countersign/json.hpp"
#include "countersign/message.hpp"
#include "countersign/subject.hpp"

namespace countersign {
namespace {

// Longer patterns are refused at load (a policy is written by people; this is generous).
constexpr std::size_t kMaxRegexPattern = 1024;

constexpr std::string_view kPayloadPrefix = "payload.";
constexpr std::string_view kHeaderPrefix = "header.";

std::string_view operatorName(OperatorKind kind) {
  switch (kind) {
    case OperatorKind::eq:
      return "eq";
    case OperatorKind::ne:
      return "ne";
    case OperatorKind::in:
      return "in";
    case OperatorKind::not_in:
      return "not_in";
    case OperatorKind::gt:
      return "gt";
    case OperatorKind::gte:
      return "gte";
    case OperatorKind::lt:
      return "lt";
    case OperatorKind::lte:
      return "lte";
    case OperatorKind::matches:
      return "matches";
    case OperatorKind::exists:
      return "exists";
  }
  return "?";
}

std::optional<OperatorKind> operatorFromName(std::string_view name) {
  for (const auto kind :
       {OperatorKind::eq, OperatorKind::ne, OperatorKind::in, OperatorKind::not_in,
        OperatorKind::gt, OperatorKind::gte, OperatorKind::lt, OperatorKind::lte,
        OperatorKind::matches, OperatorKind::exists}) {
    if (operatorName(kind) == name) return kind;
  }
  return std::nullopt;
}

std::string_view stringOf(const rapidjson::Value& value) {
  return {value.GetString(), value.GetStringLength()};
}

// ---- compiling ---------------------------------------------------------------------------

std::optional<Literal> compileLiteral(const yaml::Value& value, ConditionSource source) {
  if (value.isMap() || value.isList()) {
    value.expected("a scalar");
    return std::nullopt;
  }
  const auto scalar = value.scalar();
  if (!scalar) return std::nullopt;
  Literal literal;
  switch (scalar->kind) {
    case yaml::ScalarKind::null:
      literal.type = Literal::Type::null;
      break;
    case yaml::ScalarKind::boolean:
      literal.type = Literal::Type::boolean;
      literal.boolean = scalar->boolean;
      break;
    case yaml::ScalarKind::integer:
    case yaml::ScalarKind::number:
      literal.type = Literal::Type::number;
      literal.number = scalar->number;
      break;
    case yaml::ScalarKind::string:
      literal.type = Literal::Type::string;
      literal.text = scalar->text;
      break;
  }
  // A header value is always a string: any other literal could never match, which is a
  // mistake worth refusing (typically an unquoted number).
  if (source == ConditionSource::header && literal.type != Literal::Type::string) {
    value.fail("header values are strings: expected a string, got " + value.describe() +
               " (quote it)");
    return std::nullopt;
  }
  return literal;
}

std::optional<std::vector<Literal>> compileLiteralList(const yaml::Value& value,
                                                       ConditionSource source) {
  if (!value.isList()) {
    value.expected("a list of values");
    return std::nullopt;
  }
  const auto items = value.items();
  if (items.empty()) {
    value.fail("expected a non-empty list of values");
    return std::nullopt;
  }
  std::vector<Literal> out;
  for (const auto& item : items) {
    auto literal = compileLiteral(item, source);
    if (!literal) return std::nullopt;
    out.push_back(std::move(*literal));
  }
  return out;
}

std::shared_ptr<const re2::RE2> compileRegex(const yaml::Value& value, const std::string& pattern) {
  if (pattern.size() > kMaxRegexPattern) {
    value.fail("regex longer than " + std::to_string(kMaxRegexPattern) + " characters");
    return nullptr;
  }
  re2::RE2::Options options;
  options.set_log_errors(false);
  options.set_encoding(re2::RE2::Options::EncodingUTF8);
  // RE2 gives up compiling beyond its memory budget; the program size check below is the limit
  // users see, this only stops a pattern from taking much memory before it is refused.
  options.set_max_mem(8 << 20);
  auto regex = std::make_shared<const re2::RE2>(pattern, options);
  if (!regex->ok()) {
    std::string why = regex->error();
    switch (regex->error_code()) {
      case re2::RE2::ErrorBadPerlOp:
      case re2::RE2::ErrorBadEscape:
        // Lookahead, lookbehind and backreferences: RE2 keeps matching linear by not having them.
        why += " (RE2 syntax: no lookaround, no backreferences)";
        break;
      case re2::RE2::ErrorPatternTooLarge:
        why = "pattern compiles to more than " + std::to_string(kMaxRegexProgram) +
              " instructions (counted repetitions multiply it)";
        break;
      default:
        break;
    }
    value.fail("invalid regex " + yaml::quote(pattern) + ": " + why);
    return nullptr;
  }
  if (regex->ProgramSize() > kMaxRegexProgram) {
    value.fail("regex " + yaml::quote(pattern) + " compiles to " +
               std::to_string(regex->ProgramSize()) + " instructions, more than " +
               std::to_string(kMaxRegexProgram) + " (counted repetitions multiply it)");
    return nullptr;
  }
  return regex;
}

std::optional<Operator> compileOperator(OperatorKind kind, const yaml::Value& value,
                                        ConditionSource source) {
  Operator op;
  op.kind = kind;
  switch (kind) {
    case OperatorKind::eq:
    case OperatorKind::ne: {
      auto literal = compileLiteral(value, source);
      if (!literal) return std::nullopt;
      op.values.push_back(std::move(*literal));
      return op;
    }
    case OperatorKind::in:
    case OperatorKind::not_in: {
      auto literals = compileLiteralList(value, source);
      if (!literals) return std::nullopt;
      op.values = std::move(*literals);
      return op;
    }
    case OperatorKind::gt:
    case OperatorKind::gte:
    case OperatorKind::lt:
    case OperatorKind::lte: {
      if (source == ConditionSource::header) {
        value.fail("header values are strings: " + std::string(operatorName(kind)) +
                   " compares numbers");
        return std::nullopt;
      }
      const auto number = value.number();
      if (!number) return std::nullopt;
      op.bound = *number;
      return op;
    }
    case OperatorKind::matches: {
      auto pattern = value.string();
      if (!pattern) return std::nullopt;
      op.regex = compileRegex(value, *pattern);
      if (!op.regex) return std::nullopt;
      op.pattern = std::move(*pattern);
      return op;
    }
    case OperatorKind::exists: {
      const auto flag = value.boolean();
      if (!flag) return std::nullopt;
      op.exists = *flag;
      return op;
    }
  }
  return std::nullopt;
}

bool compileOperators(Condition& condition, const yaml::Value& value) {
  if (value.isList()) {
    auto op = compileOperator(OperatorKind::in, value, condition.source);
    if (!op) return false;
    condition.operators.push_back(std::move(*op));
    return true;
  }
  if (!value.isMap()) {
    auto op = compileOperator(OperatorKind::eq, value, condition.source);
    if (!op) return false;
    condition.operators.push_back(std::move(*op));
    return true;
  }
  const yaml::MapReader reader(
      value, {"eq", "ne", "in", "not_in", "gt", "gte", "lt", "lte", "matches", "exists"});
  if (!reader.valid()) return false;
  if (reader.entries().empty()) {
    value.fail("expected at least one operator");
    return false;
  }
  for (const auto& [name, operand] : reader.entries()) {
    auto op = compileOperator(*operatorFromName(name), operand, condition.source);
    if (!op) return false;
    condition.operators.push_back(std::move(*op));
  }
  return true;
}

std::string literalPrefix(std::string_view pattern) {
  std::size_t end = 0;
  while (true) {
    const std::size_t dot = pattern.find('.', end);
    if (dot == std::string_view::npos) return std::string(pattern.substr(0, end));
    const std::string_view token = pattern.substr(end, dot - end);
    if (token == "*" || token == ">") return std::string(pattern.substr(0, end));
    end = dot + 1;
  }
}

bool compilePatterns(Condition& condition, const yaml::Value& value) {
  std::vector<yaml::Value> items;
  if (value.isList()) {
    items = value.items();
    if (items.empty()) {
      value.fail("expected a non-empty list of subject patterns");
      return false;
    }
  } else if (value.isMap()) {
    value.expected("a subject pattern or a list of patterns");
    return false;
  } else {
    items.push_back(value);
  }
  for (const auto& item : items) {
    const auto text = item.string();
    if (!text) return false;
    if (!subject::isValid(*text, true)) {
      item.expected("a NATS subject pattern");
      return false;
    }
    SubjectPattern pattern{*text, subject::isValid(*text, false), {}};
    if (!pattern.literal) pattern.prefix = literalPrefix(pattern.text);
    condition.patterns.push_back(std::move(pattern));
  }
  return true;
}

bool compilePayloadPath(Condition& condition, const yaml::Value& value, std::string_view path) {
  std::size_t start = 0;
  while (true) {
    const std::size_t dot = path.find('.', start);
    const std::string_view segment =
        path.substr(start, dot == std::string_view::npos ? std::string_view::npos : dot - start);
    if (segment.empty()) {
      value.fail("empty segment in payload path " + yaml::quote(path));
      return false;
    }
    PathSegment piece{std::string(segment), std::nullopt};
    if (segment.size() <= 9 &&
        std::all_of(segment.begin(), segment.end(), [](char c) { return c >= '0' && c <= '9'; })) {
      piece.index = std::stoul(std::string(segment));
    }
    condition.path.push_back(std::move(piece));
    if (dot == std::string_view::npos) return true;
    start = dot + 1;
  }
}

// ---- evaluating --------------------------------------------------------------------------

const rapidjson::Value* walk(const rapidjson::Value& root, const std::vector<PathSegment>& path) {
  const rapidjson::Value* at = &root;
  for (const auto& segment : path) {
    if (at->IsObject()) {
      const auto member = at->FindMember(segment.name);
      if (member == at->MemberEnd()) return nullptr;
      at = &member->value;
    } else if (at->IsArray() && segment.index && *segment.index < at->Size()) {
      at = &(*at)[static_cast<rapidjson::SizeType>(*segment.index)];
    } else {
      return nullptr;
    }
  }
  return at;
}

Operand jsonOperand(const rapidjson::Value* value) {
  if (!value) return Operand{};
  return Operand{Operand::State::json, value, {}};
}

Operand operandOf(const Condition& condition, const JobView& job) {
  switch (condition.source) {
    case ConditionSource::header: {
      const std::string* value = findHeader(job.headers(), condition.name);
      if (!value) return Operand{};
      return Operand{Operand::State::text, nullptr, *value};
    }
    case ConditionSource::payload: {
      const rapidjson::Value* root = job.payloadJson();
      if (!root) return Operand{Operand::State::unknowable, nullptr, {}};
      return jsonOperand(walk(*root, condition.path));
    }
    case ConditionSource::label:
      return resolveLabel(condition.name, job);
    case ConditionSource::topic:
    case ConditionSource::subject:
      break;
  }
  return Operand{};
}

bool sameType(const Literal& literal, const Operand& operand) {
  if (operand.state == Operand::State::text) return literal.type == Literal::Type::string;
  const rapidjson::Value& v = *operand.json;
  switch (literal.type) {
    case Literal::Type::null:
      return v.IsNull();
    case Literal::Type::boolean:
      return v.IsBool();
    case Literal::Type::number:
      return v.IsNumber();
    case Literal::Type::string:
      return v.IsString();
  }
  return false;
}

// Same JSON type and same value; numbers compare as doubles.
bool equal(const Literal& literal, const Operand& operand) {
  if (!sameType(literal, operand)) return false;
  if (operand.state == Operand::State::text) return literal.text == operand.text;
  const rapidjson::Value& v = *operand.json;
  switch (literal.type) {
    case Literal::Type::null:
      return true;
    case Literal::Type::boolean:
      return v.GetBool() == literal.boolean;
    case Literal::Type::number:
      return v.GetDouble() == literal.number;
    case Literal::Type::string:
      return stringOf(v) == literal.text;
  }
  return false;
}

bool notEqual(const Literal& literal, const Operand& operand) {
  return sameType(literal, operand) && !equal(literal, operand);
}

std::optional<std::string_view> textOf(const Operand& operand) {
  if (operand.state == Operand::State::text) return operand.text;
  if (operand.state == Operand::State::json && operand.json->IsString()) {
    return stringOf(*operand.json);
  }
  return std::nullopt;
}

Outcome fromBool(bool value) {
  return value ? Outcome::holds : Outcome::fails;
}

Outcome apply(const Operator& op, const Operand& operand) {
  if (operand.state == Operand::State::unknowable) return Outcome::fails;
  if (operand.state == Operand::State::missing) {
    return fromBool(op.kind == OperatorKind::exists && !op.exists);
  }
  switch (op.kind) {
    case OperatorKind::exists:
      return fromBool(op.exists);
    case OperatorKind::eq:
      return fromBool(equal(op.values.front(), operand));
    case OperatorKind::ne:
      return fromBool(notEqual(op.values.front(), operand));
    case OperatorKind::in:
      return fromBool(std::any_of(op.values.begin(), op.values.end(),
                                  [&](const Literal& l) { return equal(l, operand); }));
    case OperatorKind::not_in:
      return fromBool(std::all_of(op.values.begin(), op.values.end(),
                                  [&](const Literal& l) { return notEqual(l, operand); }));
    case OperatorKind::gt:
    case OperatorKind::gte:
    case OperatorKind::lt:
    case OperatorKind::lte: {
      if (operand.state != Operand::State::json || !operand.json->IsNumber()) {
        return Outcome::fails;
      }
      const double v = operand.json->GetDouble();
      if (op.kind == OperatorKind::gt) return fromBool(v > op.bound);
      if (op.kind == OperatorKind::gte) return fromBool(v >= op.bound);
      if (op.kind == OperatorKind::lt) return fromBool(v < op.bound);
      return fromBool(v <= op.bound);
    }
    case OperatorKind::matches: {
      const auto text = textOf(operand);
      if (!text) return Outcome::fails;
      if (text->size() > kMaxRegexInput) return Outcome::indeterminate;
      // Searched anywhere in the text, like a regex test in most languages: ^ and $ anchor.
      return fromBool(re2::RE2::PartialMatch(re2::StringPiece(text->data(), text->size()), *op.regex));
    }
  }
  return Outcome::fails;
}

// Most rules fail on their topic; the first byte rejects most of them without a call.
bool sameBytes(const char* a, const char* b, std::size_t size) {
  return size == 0 || (a[0] == b[0] && std::memcmp(a, b, size) == 0);
}

bool patternMatches(const SubjectPattern& pattern, std::string_view text) {
  if (pattern.literal) {
    return pattern.text.size() == text.size() &&
           sameBytes(pattern.text.data(), text.data(), text.size());
  }
  return text.size() >= pattern.prefix.size() &&
         sameBytes(pattern.prefix.data(), text.data(), pattern.prefix.size()) &&
         subject::matches(pattern.text, text);
}

bool anyPatternMatches(const std::vector<SubjectPattern>& patterns, std::string_view text) {
  for (const auto& pattern : patterns) {
    if (patternMatches(pattern, text)) return true;
  }
  return false;
}

// ---- describing --------------------------------------------------------------------------

std::string describeLiteral(const Literal& literal) {
  switch (literal.type) {
    case Literal::Type::null:
      return "null";
    case Literal::Type::boolean:
      return literal.boolean ? "true" : "false";
    case Literal::Type::number:
      return json::formatNumberEs6(literal.number);
    case Literal::Type::string:
      return yaml::quote(literal.text);
  }
  return "?";
}

std::string describeOperator(const Operator& op) {
  std::string out(operatorName(op.kind));
  out += ' ';
  switch (op.kind) {
    case OperatorKind::eq:
    case OperatorKind::ne:
      out += describeLiteral(op.values.front());
      break;
    case OperatorKind::in:
    case OperatorKind::not_in: {
      out += '[';
      for (std::size_t i = 0; i < op.values.size(); ++i) {
        if (i > 0) out += ", ";
        out += describeLiteral(op.values[i]);
      }
      out += ']';
      break;
    }
    case OperatorKind::matches:
      out += yaml::quote(op.pattern);
      break;
    case OperatorKind::exists:
      out += op.exists ? "true" : "false";
      break;
    default:
      out += json::formatNumberEs6(op.bound);
      break;
  }
  return out;
}

std::string describeOperand(const Operand& operand) {
  if (operand.state == Operand::State::text) return yaml::quote(operand.text);
  if (operand.state != Operand::State::json) return "nothing";
  if (operand.json->IsString()) return yaml::quote(stringOf(*operand.json));
  std::string text = json::toString(*operand.json);
  if (text.size() > 80) text = text.substr(0, 80) + "...";
  return text;
}

std::string quotedList(const std::vector<SubjectPattern>& patterns) {
  std::string out;
  for (std::size_t i = 0; i < patterns.size(); ++i) {
    if (i > 0) out += ", ";
    out += yaml::quote(patterns[i].text);
  }
  return out;
}

// ---- normalising -------------------------------------------------------------------------

rapidjson::Value literalJson(const Literal& literal,
                             rapidjson::Document::AllocatorType& allocator) {
  rapidjson::Value out;
  switch (literal.type) {
    case Literal::Type::null:
      break;
    case Literal::Type::boolean:
      out.SetBool(literal.boolean);
      break;
    case Literal::Type::number:
      out.SetDouble(literal.number);
      break;
    case Literal::Type::string:
      out.SetString(literal.text.data(), static_cast<rapidjson::SizeType>(literal.text.size()),
                    allocator);
      break;
  }
  return out;
}

// A set of literals: sorted by canonical text, duplicates removed.
rapidjson::Value literalSet(const std::vector<Literal>& literals,
                            rapidjson::Document::AllocatorType& allocator) {
  std::vector<std::pair<std::string, const Literal*>> keyed;
  for (const auto& literal : literals) {
    rapidjson::Document scratch;
    const rapidjson::Value value = literalJson(literal, scratch.GetAllocator());
    keyed.emplace_back(json::canonicalize(value), &literal);
  }
  std::sort(keyed.begin(), keyed.end(),
            [](const auto& a, const auto& b) { return a.first < b.first; });
  keyed.erase(std::unique(keyed.begin(), keyed.end(),
                          [](const auto& a, const auto& b) { return a.first == b.first; }),
              keyed.end());
  rapidjson::Value out(rapidjson::kArrayType);
  for (const auto& [text, literal] : keyed)
    out.PushBack(literalJson(*literal, allocator), allocator);
  return out;
}

std::size_t distinctCount(const std::vector<Literal>& literals) {
  rapidjson::Document scratch;
  return literalSet(literals, scratch.GetAllocator()).Size();
}

void addMember(rapidjson::Value& object, std::string_view name, rapidjson::Value value,
               rapidjson::Document::AllocatorType& allocator) {
  rapidjson::Value key(name.data(), static_cast<rapidjson::SizeType>(name.size()), allocator);
  object.AddMember(key, value, allocator);
}

}  // namespace

bool isLabelName(std::string_view name) {
  if (name.empty()) return false;
  return std::all_of(name.begin(), name.end(), [](char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' ||
           c == '-';
  });
}

std::shared_ptr<const Condition> compileCondition(std::string_view key, const yaml::Value& value) {
  auto condition = std::make_shared<Condition>();
  condition->key = std::string(key);
  if (key == "topic" || key == "subject") {
    condition->source = key == "topic" ? ConditionSource::topic : ConditionSource::subject;
    if (!compilePatterns(*condition, value)) return nullptr;
    return condition;
  }
  if (key == "payload" || key == "header") {
    value.fail("expected " + std::string(key) + (key == "payload" ? ".<path>" : ".<name>"));
    return nullptr;
  }
  if (key.starts_with(kPayloadPrefix)) {
    condition->source = ConditionSource::payload;
    if (!compilePayloadPath(*condition, value, key.substr(kPayloadPrefix.size()))) return nullptr;
  } else if (key.starts_with(kHeaderPrefix)) {
    condition->source = ConditionSource::header;
    condition->name = std::string(key.substr(kHeaderPrefix.size()));
    if (condition->name.empty()) {
      value.fail("expected header.<name>");
      return nullptr;
    }
  } else if (isLabelName(key)) {
    condition->source = ConditionSource::label;
    condition->name = std::string(key);
  } else {
    value.fail(
        "unknown condition (expected topic, subject, payload.<path>, header.<name> or a label "
        "name of letters, digits, '_' and '-')");
    return nullptr;
  }
  if (!compileOperators(*condition, value)) return nullptr;
  return condition;
}

Operand resolveLabel(std::string_view name, const JobView& job) {
  if (const Labels* route = job.routeLabels()) {
    if (const auto it = route->find(name); it != route->end()) {
      return Operand{Operand::State::text, nullptr, it->second};
    }
  }
  // An empty payload carries no labels a worker could read: the header decides.
  if (job.payload().empty()) {
    if (const std::string* header = findHeader(job.headers(), name)) {
      return Operand{Operand::State::text, nullptr, *header};
    }
    return Operand{};
  }
  const rapidjson::Value* root = job.payloadJson();
  // A payload that is not JSON may be read differently by the worker (duplicate keys):
  // neither it nor a header may stand in for the labels it might carry.
  if (!root) return Operand{Operand::State::unknowable, nullptr, {}};
  if (root->IsObject()) {
    const rapidjson::Value key(rapidjson::StringRef(name.data(), name.size()));
    if (const auto labels = root->FindMember("labels");
        labels != root->MemberEnd() && labels->value.IsObject()) {
      if (const auto it = labels->value.FindMember(key); it != labels->value.MemberEnd()) {
        return jsonOperand(&it->value);
      }
    }
    if (const auto it = root->FindMember(key); it != root->MemberEnd()) {
      return jsonOperand(&it->value);
    }
  }
  if (const std::string* header = findHeader(job.headers(), name)) {
    return Operand{Operand::State::text, nullptr, *header};
  }
  return Operand{};
}

Outcome evaluateCondition(const Condition& condition, const JobView& job) {
  switch (condition.source) {
    case ConditionSource::topic:
      return fromBool(anyPatternMatches(condition.patterns, job.topic()));
    case ConditionSource::subject:
      return fromBool(anyPatternMatches(condition.patterns, job.subject()));
    default:
      break;
  }
  const Operand operand = operandOf(condition, job);
  bool indeterminate = false;
  for (const auto& op : condition.operators) {
    const Outcome outcome = apply(op, operand);
    if (outcome == Outcome::fails) return Outcome::fails;
    if (outcome == Outcome::indeterminate) indeterminate = true;
  }
  return indeterminate ? Outcome::indeterminate : Outcome::holds;
}

std::string describeFailure(const Condition& condition, const JobView& job) {
  if (condition.source == ConditionSource::topic || condition.source == ConditionSource::subject) {
    const std::string_view text =
        condition.source == ConditionSource::topic ? job.topic() : job.subject();
    std::string out = condition.key + " " + yaml::quote(text) + " does not match ";
    if (condition.patterns.size() == 1) return out + yaml::quote(condition.patterns[0].text);
    return out + "any of " + quotedList(condition.patterns);
  }
  const Operand operand = operandOf(condition, job);
  if (operand.state == Operand::State::unknowable) {
    return condition.key + ": payload is not JSON, no payload-derived value is read";
  }
  for (const auto& op : condition.operators) {
    const Outcome outcome = apply(op, operand);
    if (outcome == Outcome::holds) continue;
    if (outcome == Outcome::indeterminate) {
      return condition.key + " is longer than " + std::to_string(kMaxRegexInput) +
             " bytes or could not be matched: cannot evaluate " + describeOperator(op) +
             " (fail closed)";
    }
    if (operand.state == Operand::State::missing) {
      return condition.key + " is missing (needs " + describeOperator(op) + ")";
    }
    return condition.key + " " + describeOperand(operand) + " fails " + describeOperator(op);
  }
  return condition.key + " holds";
}

ConditionCheck checkCondition(const Condition& condition, const JobView& job) {
  ConditionCheck check{.key = condition.key,
                       .holds = evaluateCondition(condition, job) == Outcome::holds};
  if (condition.source == ConditionSource::topic || condition.source == ConditionSource::subject) {
    check.seen = yaml::quote(condition.source == ConditionSource::topic ? job.topic() : job.subject());
    check.test = condition.patterns.size() == 1 ? "matches " + yaml::quote(condition.patterns[0].text)
                                                : "matches any of " + quotedList(condition.patterns);
    return check;
  }
  const Operand operand = operandOf(condition, job);
  check.seen = operand.state == Operand::State::unknowable ? "payload is not JSON" : describeOperand(operand);
  for (const auto& op : condition.operators) {
    check.test += (check.test.empty() ? "" : " and ") + describeOperator(op);
  }
  return check;
}

rapidjson::Value normalise(const Condition& condition,
                           rapidjson::Document::AllocatorType& allocator) {
  rapidjson::Value out(rapidjson::kObjectType);
  if (condition.source == ConditionSource::topic || condition.source == ConditionSource::subject) {
    std::vector<std::string> patterns;
    for (const auto& pattern : condition.patterns) patterns.push_back(pattern.text);
    std::sort(patterns.begin(), patterns.end());
    patterns.erase(std::unique(patterns.begin(), patterns.end()), patterns.end());
    rapidjson::Value list(rapidjson::kArrayType);
    for (const auto& pattern : patterns) {
      list.PushBack(rapidjson::Value(pattern.data(),
                                     static_cast<rapidjson::SizeType>(pattern.size()), allocator),
                    allocator);
    }
    addMember(out, "patterns", std::move(list), allocator);
    return out;
  }
  const auto has = [&](OperatorKind kind) {
    return std::any_of(condition.operators.begin(), condition.operators.end(),
                       [&](const Operator& op) { return op.kind == kind; });
  };
  for (const auto& op : condition.operators) {
    switch (op.kind) {
      case OperatorKind::eq:
      case OperatorKind::ne:
        addMember(out, operatorName(op.kind), literalJson(op.values.front(), allocator), allocator);
        break;
      case OperatorKind::in:
      case OperatorKind::not_in: {
        // `x`, `[x]`, `{in: [x]}` and `{eq: x}` mean the same: one normal form.
        const OperatorKind single =
            op.kind == OperatorKind::in ? OperatorKind::eq : OperatorKind::ne;
        if (distinctCount(op.values) == 1 && !has(single)) {
          addMember(out, operatorName(single), literalJson(op.values.front(), allocator),
                    allocator);
        } else {
          addMember(out, operatorName(op.kind), literalSet(op.values, allocator), allocator);
        }
        break;
      }
      case OperatorKind::matches:
        addMember(out, "matches",
                  rapidjson::Value(op.pattern.data(),
                                   static_cast<rapidjson::SizeType>(op.pattern.size()), allocator),
                  allocator);
        break;
      case OperatorKind::exists:
        addMember(out, "exists", rapidjson::Value(op.exists), allocator);
        break;
      default:
        addMember(out, operatorName(op.kind), rapidjson::Value(op.bound), allocator);
        break;
    }
  }
  return out;
}

}  // namespace countersign
