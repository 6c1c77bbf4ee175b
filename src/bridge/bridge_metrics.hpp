// The bridge's Prometheus metrics: counters by label set, a gauge for the consumer's lag.
// Thread-safe.
#pragma once

#include <atomic>
#include <cstdint>
#include <map>
#include <mutex>
#include <string>
#include <string_view>

namespace countersign::bridge {

class BridgeMetrics {
 public:
  // countersign_bridge_slack_posts_total / _updates_total
  void post() { posts_.fetch_add(1); }
  void update() { updates_.fetch_add(1); }
  // countersign_bridge_clicks_total{result}: approved, rejected, vote_recorded, unknown_user,
  // forbidden, conflict, bad_request, unauthenticated, ...
  void click(std::string_view result) { bump("clicks", result); }
  // countersign_bridge_slack_errors_total{method,error}
  void slackError(std::string_view method, std::string_view error) { bump("slack", std::string(method) + '\x1f' + std::string(error)); }
  // countersign_bridge_webhook_deliveries_total{result}: delivered, retried, given_up
  void webhook(std::string_view result) { bump("webhook", result); }
  // countersign_bridge_interactions_total{result}: accepted, bad_signature, stale, too_large, bad_request
  void interaction(std::string_view result) { bump("interaction", result); }
  // countersign_bridge_failures_total: events given up
  void failure() { failures_.fetch_add(1); }
  void events(std::string_view event) { bump("events", event); }
  // countersign_bridge_events_refused_total{signature_check}: events ignored because countersign's
  // key does not verify them (unsigned, unknown_key, bad_signature)
  void refused(std::string_view check) { bump("refused", check); }
  void setLag(std::int64_t pending) { lag_.store(pending); }

  std::uint64_t count(std::string_view family, std::string_view label) const;
  std::uint64_t posts() const { return posts_.load(); }
  std::string render() const;

 private:
  void bump(std::string_view family, std::string_view label);
  mutable std::mutex mutex_;
  std::map<std::string, std::uint64_t, std::less<>> counters_;  // family '\x1e' label
  std::atomic<std::uint64_t> posts_{0};
  std::atomic<std::uint64_t> updates_{0};
  std::atomic<std::uint64_t> failures_{0};
  std::atomic<std::int64_t> lag_{0};
};

}  // namespace countersign::bridge
