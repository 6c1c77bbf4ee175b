// Slack's Web API as the bridge uses it: one POST per call (JSON body, bearer token), with
// Slack's failures sorted out: rate limits (HTTP 429 or "ratelimited") wait Retry-After (1 s
// doubling to 30 s when absent), auth errors make the bridge not ready until a call succeeds
// again and are logged once per method, other failures retry with backoff. Tokens are never
// logged. Thread-safe.
#pragma once

#include <atomic>
#include <chrono>
#include <functional>
#include <mutex>
#include <optional>
#include <set>
#include <string>

#include "bridge_metrics.hpp"
#include "countersign/log.hpp"
#include "https_client.hpp"

namespace countersign::bridge {

struct SlackReply {
  int http_status = 0;
  bool ok = false;
  std::string error;  // Slack's error code, or "http_<status>", or "connection"
  std::optional<std::chrono::seconds> retry_after;
  std::string body;
  // Worth trying again: rate limits, 5xx, no answer, Slack's internal/fatal errors.
  bool retryable() const;
  bool authError() const;
};

class SlackApi {
 public:
  SlackApi(HttpsClient& client, std::string api_url, std::string bot_token, std::string app_token,
           Logger& log, BridgeMetrics& metrics);

  // One attempt. `app_token`: authenticate with the app-level token (apps.connections.open).
  SlackReply call(const std::string& method, const std::string& json_body, bool app_token = false);

  // Attempts until ok, a failure that retrying cannot fix, or `stopping()` says to stop.
  // `waiting` runs before each wait (e.g. to tell JetStream the event is still in progress).
  SlackReply callUntilDone(const std::string& method, const std::string& json_body, bool app_token,
                           const std::function<bool(std::chrono::milliseconds)>& sleep_unless_stopping);

  // False after an auth error until a call succeeds again.
  bool authOk() const { return auth_ok_.load(); }

 private:
  HttpsClient& client_;
  std::string api_url_;
  std::string bot_token_;
  std::string app_token_;
  Logger& log_;
  BridgeMetrics& metrics_;
  std::atomic<bool> auth_ok_{true};
  std::mutex mutex_;
  std::set<std::string> auth_logged_;  // methods whose auth error was logged
};

}  // namespace countersign::bridge
