// NATS subject wildcards: '*' matches one token, '>' one or more trailing tokens.
#pragma once

#include <optional>
#include <string>
#include <string_view>

namespace countersign::subject {

// A valid subject or pattern: non-empty tokens separated by '.', no whitespace, '>' only as
// the last token, wildcards only as whole tokens. `allow_wildcards=false` for literal subjects.
bool isValid(std::string_view text, bool allow_wildcards);

bool matches(std::string_view pattern, std::string_view subject);

// Whether some subject matches both patterns.
bool overlaps(std::string_view a, std::string_view b);

// The topic: the tokens of `subject` matched by the wildcard tokens of route pattern `from`,
// joined by '.'. ("agents.jobs.>", "agents.jobs.finance.pay") -> "finance.pay".
// nullopt when the subject does not match.
std::optional<std::string> topicOf(std::string_view from, std::string_view subject);

// The target: `to` with its wildcard tokens replaced by the topic's tokens in order
// ("jobs.>", "finance.pay") -> "jobs.finance.pay". nullopt when the shapes do not fit.
std::optional<std::string> targetFor(std::string_view to, std::string_view topic);

}  // namespace countersign::subject
