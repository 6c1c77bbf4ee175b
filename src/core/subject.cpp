#include "countersign/subject.hpp"

#include <optional>
#include <vector>

namespace countersign::subject {
namespace {

// Splits on '.' without allocating the pieces.
std::vector<std::string_view> tokens(std::string_view text) {
  std::vector<std::string_view> out;
  std::size_t start = 0;
  while (true) {
    const std::size_t dot = text.find('.', start);
    if (dot == std::string_view::npos) {
      out.push_back(text.substr(start));
      return out;
    }
    out.push_back(text.substr(start, dot - start));
    start = dot + 1;
  }
}

// "a.b.>": a literal prefix and a tail wildcard, the usual route pattern: its prefix, which
// lets topicOf and targetFor work on whole strings instead of tokens.
std::optional<std::string_view> tailPrefix(std::string_view pattern) {
  if (pattern.size() < 3 || !pattern.ends_with(".>")) return std::nullopt;
  const std::string_view prefix = pattern.substr(0, pattern.size() - 2);
  if (prefix.find_first_of("*>") != std::string_view::npos) return std::nullopt;
  return prefix;
}

}  // namespace

bool isValid(std::string_view text, bool allow_wildcards) {
  if (text.empty()) return false;
  const auto parts = tokens(text);
  for (std::size_t i = 0; i < parts.size(); ++i) {
    const std::string_view token = parts[i];
    if (token.empty()) return false;
    for (const char c : token) {
      if (c == ' ' || c == '\t' || c == '\r' || c == '\n' || c == '\0') return false;
    }
    if (token == ">") {
      if (!allow_wildcards || i + 1 != parts.size()) return false;
    } else if (token == "*") {
      if (!allow_wildcards) return false;
    } else if (token.find_first_of("*>") != std::string_view::npos && allow_wildcards) {
      // A wildcard character inside a token is a literal to NATS but almost always a mistake
      // in a pattern: refuse it where patterns are written.
      return false;
    }
  }
  return true;
}

bool matches(std::string_view pattern, std::string_view subject) {
  std::size_t p = 0;
  std::size_t s = 0;
  while (true) {
    const std::size_t pend = pattern.find('.', p);
    const std::string_view ptoken =
        pattern.substr(p, pend == std::string_view::npos ? std::string_view::npos : pend - p);
    if (ptoken == ">") return s < subject.size();
    if (s > subject.size()) return false;
    const std::size_t send = subject.find('.', s);
    const std::string_view stoken =
        subject.substr(s, send == std::string_view::npos ? std::string_view::npos : send - s);
    if (ptoken != "*" && ptoken != stoken) return false;
    const bool plast = pend == std::string_view::npos;
    const bool slast = send == std::string_view::npos;
    if (plast || slast) return plast && slast;
    p = pend + 1;
    s = send + 1;
  }
}

bool overlaps(std::string_view a, std::string_view b) {
  const auto ta = tokens(a);
  const auto tb = tokens(b);
  std::size_t i = 0;
  for (; i < ta.size() && i < tb.size(); ++i) {
    if (ta[i] == ">" || tb[i] == ">") return true;
    if (ta[i] == "*" || tb[i] == "*") continue;
    if (ta[i] != tb[i]) return false;
  }
  if (ta.size() == tb.size()) return true;
  // One is longer: only a trailing '>' on the shorter side could cover the rest, handled above.
  return false;
}

std::optional<std::string> topicOf(std::string_view from, std::string_view subject) {
  if (!matches(from, subject)) return std::nullopt;
  // The tokens after the prefix, joined again: the rest of the subject as it is.
  if (const auto prefix = tailPrefix(from)) return std::string(subject.substr(prefix->size() + 1));
  const auto tf = tokens(from);
  const auto ts = tokens(subject);
  std::string topic;
  for (std::size_t i = 0; i < tf.size(); ++i) {
    if (tf[i] == "*") {
      if (!topic.empty()) topic += '.';
      topic += ts[i];
    } else if (tf[i] == ">") {
      for (std::size_t j = i; j < ts.size(); ++j) {
        if (!topic.empty()) topic += '.';
        topic += ts[j];
      }
      break;
    }
  }
  return topic;
}

std::optional<std::string> targetFor(std::string_view to, std::string_view topic) {
  if (const auto prefix = tailPrefix(to)) {
    if (topic.empty()) return std::nullopt;  // '>' needs at least one token
    std::string target;
    target.reserve(prefix->size() + 1 + topic.size());
    target.append(*prefix).append(1, '.').append(topic);
    return target;
  }
  const auto tt = tokens(to);
  const auto parts = topic.empty() ? std::vector<std::string_view>{} : tokens(topic);
  std::string target;
  std::size_t used = 0;
  for (std::size_t i = 0; i < tt.size(); ++i) {
    if (!target.empty()) target += '.';
    if (tt[i] == "*") {
      if (used >= parts.size()) return std::nullopt;
      target += parts[used++];
    } else if (tt[i] == ">") {
      if (used >= parts.size()) return std::nullopt;
      for (std::size_t j = used; j < parts.size(); ++j) {
        if (j > used) target += '.';
        target += parts[j];
      }
      used = parts.size();
    } else {
      target += tt[i];
    }
  }
  if (used != parts.size()) return std::nullopt;
  return target;
}

}  // namespace countersign::subject
