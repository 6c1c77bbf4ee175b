#include "slack_api.hpp"

#include "countersign/json.hpp"
#include "json_fields.hpp"
#include "retry.hpp"

namespace countersign::bridge {

bool SlackReply::retryable() const {
  if (ok) return false;
  if (http_status == 0 || http_status == 429 || http_status >= 500) return true;
  return error == "ratelimited" || error == "internal_error" || error == "fatal_error" ||
         error == "request_timeout" || error == "service_unavailable";
}

bool SlackReply::authError() const {
  return error == "invalid_auth" || error == "not_authed" || error == "account_inactive" ||
         error == "token_revoked" || error == "token_expired";
}

SlackApi::SlackApi(HttpsClient& client, std::string api_url, std::string bot_token, std::string app_token,
                   Logger& log, BridgeMetrics& metrics)
    : client_(client),
      api_url_(std::move(api_url)),
      bot_token_(std::move(bot_token)),
      app_token_(std::move(app_token)),
      log_(log),
      metrics_(metrics) {
  while (!api_url_.empty() && api_url_.back() == '/') api_url_.pop_back();
}

SlackReply SlackApi::call(const std::string& method, const std::string& json_body, bool app_token) {
  const std::string& token = app_token ? app_token_ : bot_token_;
  const auto http = client_.post(api_url_ + "/" + method, "application/json; charset=utf-8", json_body,
                                 {{"Authorization", "Bearer " + token}});
  SlackReply reply;
  reply.http_status = http.status;
  reply.retry_after = parseRetryAfter(http.retry_after);
  reply.body = http.body;
  if (http.status == 0) {
    reply.error = "connection";
    log_.warn("slack: no answer", {{"method", method}, {"error", http.error}});
  } else if (auto doc = json::parseStrict(http.body); doc && doc->IsObject()) {
    const auto* ok = detail::member(*doc, "ok");
    reply.ok = http.status == 200 && ok != nullptr && ok->IsBool() && ok->GetBool();
    reply.error = detail::stringAt(*doc, "error");
  }
  if (!reply.ok && reply.error.empty()) reply.error = http.status == 429 ? "ratelimited" : "http_" + std::to_string(http.status);
  if (reply.ok) {
    if (!auth_ok_.exchange(true)) log_.info("slack: calls succeed again", {{"method", method}});
    std::lock_guard lock(mutex_);
    auth_logged_.clear();
    return reply;
  }
  metrics_.slackError(method, reply.error);
  if (reply.authError()) {
    auth_ok_.store(false);
    std::lock_guard lock(mutex_);
    if (auth_logged_.insert(method).second) {
      log_.error("slack: authentication refused (check the token)", {{"method", method}, {"error", reply.error}});
    }
  } else if (!reply.retryable()) {
    log_.error("slack: call failed", {{"method", method}, {"error", reply.error}});
  }
  return reply;
}

SlackReply SlackApi::callUntilDone(const std::string& method, const std::string& json_body, bool app_token,
                                   const std::function<bool(std::chrono::milliseconds)>& sleep_unless_stopping) {
  for (int attempt = 1;; ++attempt) {
    SlackReply reply = call(method, json_body, app_token);
    if (reply.ok || (!reply.retryable() && !reply.authError())) return reply;
    // Auth errors are retried too, with the same backoff: a token revoked by mistake can be
    // restored on Slack's side, and the event must not be lost meanwhile (/readyz says why).
    const auto delay = retryDelay(kSlackRetry, attempt, reply.retry_after);
    if (!delay || !sleep_unless_stopping(*delay)) return reply;
  }
}

}  // namespace countersign::bridge
