#include "retry.hpp"

#include <algorithm>
#include <charconv>

namespace countersign::bridge {

std::optional<std::chrono::milliseconds> retryDelay(const RetryPolicy& policy, int attempt,
                                                    std::optional<std::chrono::seconds> retry_after) {
  if (policy.max_attempts > 0 && attempt >= policy.max_attempts) return std::nullopt;
  if (retry_after) {
    return std::chrono::milliseconds(std::min<std::chrono::seconds>(*retry_after, std::chrono::hours(1)));
  }
  auto delay = policy.initial;
  for (int i = 1; i < attempt && delay < policy.max; ++i) delay *= 2;
  return std::min(delay, policy.max);
}

std::optional<std::chrono::seconds> parseRetryAfter(std::string_view header) {
  while (!header.empty() && header.front() == ' ') header.remove_prefix(1);
  while (!header.empty() && header.back() == ' ') header.remove_suffix(1);
  if (header.empty() || header.size() > 9) return std::nullopt;
  long seconds = 0;
  const auto [end, ec] = std::from_chars(header.data(), header.data() + header.size(), seconds);
  if (ec != std::errc() || end != header.data() + header.size() || seconds < 0) return std::nullopt;
  return std::chrono::seconds(seconds);
}

bool isRetryableStatus(int status) { return status == 0 || status == 429 || status >= 500; }

}  // namespace countersign::bridge
