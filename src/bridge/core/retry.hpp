// When to try a failed call again: exponential backoff from `initial` doubling to `max`, or the
// server's Retry-After when it gave one, for at most `max_attempts` attempts (0: no limit).
// Pure: the caller sleeps.
#pragma once

#include <chrono>
#include <optional>
#include <string_view>

namespace countersign::bridge {

struct RetryPolicy {
  std::chrono::milliseconds initial{1000};
  std::chrono::milliseconds max{30000};
  int max_attempts = 0;  // 0: retry for ever
};

// Slack's Web API: 1 s doubling to 30 s, until it works (events wait unacked meanwhile).
inline constexpr RetryPolicy kSlackRetry{std::chrono::milliseconds(1000), std::chrono::milliseconds(30000), 0};
// Webhooks: 1 s doubling to 5 min, at most 10 attempts (configurable per hook).
inline constexpr RetryPolicy kWebhookRetry{std::chrono::milliseconds(1000), std::chrono::minutes(5), 10};

// The wait before attempt `attempt + 1`, after `attempt` (1-based) failed; nullopt when the
// policy gives up. A Retry-After from the server wins over the backoff (capped at one hour).
std::optional<std::chrono::milliseconds> retryDelay(const RetryPolicy& policy, int attempt,
                                                    std::optional<std::chrono::seconds> retry_after = {});

// A Retry-After header in delta-seconds ("30"); nullopt for anything else.
std::optional<std::chrono::seconds> parseRetryAfter(std::string_view header);

// Whether an HTTP status is worth retrying: 429, 5xx, and 0 (no answer: connection error).
bool isRetryableStatus(int status);

}  // namespace countersign::bridge
