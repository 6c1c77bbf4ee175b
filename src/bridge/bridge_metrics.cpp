#include "bridge_metrics.hpp"

#include <vector>

namespace countersign::bridge {
namespace {

std::string escapeLabel(std::string_view value) {
  std::string out;
  for (const char c : value) {
    if (c == '\\' || c == '"') out += '\\';
    if (c == '\n') {
      out += "\\n";
      continue;
    }
    out += c;
  }
  return out;
}

std::string key(std::string_view family, std::string_view label) {
  return std::string(family) + '\x1e' + std::string(label);
}

}  // namespace

void BridgeMetrics::bump(std::string_view family, std::string_view label) {
  std::lock_guard lock(mutex_);
  ++counters_[key(family, label)];
}

std::uint64_t BridgeMetrics::count(std::string_view family, std::string_view label) const {
  std::lock_guard lock(mutex_);
  const auto it = counters_.find(key(family, label));
  return it == counters_.end() ? 0 : it->second;
}

std::string BridgeMetrics::render() const {
  std::string out;
  const auto scalar = [&](std::string_view name, std::string_view help, std::string_view type, std::int64_t value) {
    out.append("# HELP ").append(name).append(" ").append(help).append("\n# TYPE ").append(name).append(" ");
    out.append(type).append("\n").append(name).append(" ").append(std::to_string(value)).append("\n");
  };
  scalar("countersign_bridge_slack_posts_total", "Held jobs posted to Slack.", "counter", static_cast<std::int64_t>(posts_.load()));
  scalar("countersign_bridge_slack_updates_total", "Slack messages updated with an outcome.", "counter",
         static_cast<std::int64_t>(updates_.load()));
  scalar("countersign_bridge_failures_total", "Events given up after retries.", "counter",
         static_cast<std::int64_t>(failures_.load()));
  scalar("countersign_bridge_consumer_lag", "Events on the audit stream not yet delivered to the bridge.", "gauge",
         lag_.load());
  struct Family {
    std::string_view id, name, help, label1, label2;
  };
  const Family families[] = {
      {"clicks", "countersign_bridge_clicks_total", "Clicks on Approve and Reject, by result.", "result", ""},
      {"slack", "countersign_bridge_slack_api_errors_total", "Slack Web API errors by method and error.", "method", "error"},
      {"webhook", "countersign_bridge_webhook_deliveries_total", "Webhook delivery attempts by result.", "result", ""},
      {"interaction", "countersign_bridge_interactions_total", "HTTP interactivity posts by result.", "result", ""},
      {"events", "countersign_bridge_events_total", "Events handled, by event.", "event", ""},
      {"refused", "countersign_bridge_events_refused_total",
       "Events ignored because countersign's key does not verify their signature.", "signature_check", ""},
  };
  std::lock_guard lock(mutex_);
  for (const auto& family : families) {
    out.append("# HELP ").append(family.name).append(" ").append(family.help).append("\n# TYPE ");
    out.append(family.name).append(" counter\n");
    const std::string prefix = std::string(family.id) + '\x1e';
    for (auto it = counters_.lower_bound(prefix); it != counters_.end() && it->first.starts_with(prefix); ++it) {
      const std::string label = it->first.substr(prefix.size());
      out.append(family.name).append("{").append(family.label1).append("=\"");
      if (family.label2.empty()) {
        out.append(escapeLabel(label));
      } else {
        const std::size_t sep = label.find('\x1f');
        out.append(escapeLabel(label.substr(0, sep))).append("\",").append(family.label2).append("=\"");
        out.append(escapeLabel(sep == std::string::npos ? "" : label.substr(sep + 1)));
      }
      out.append("\"} ").append(std::to_string(it->second)).append("\n");
    }
  }
  return out;
}

}  // namespace countersign::bridge
