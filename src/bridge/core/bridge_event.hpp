// The events the bridge consumes (`<prefix>.events.<event>.<topic>` bodies) and where they go:
// which Slack channel shows a topic, which webhooks want an event. Pure.
#pragma once

#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "countersign/bridge_config.hpp"
#include "countersign/result.hpp"

namespace countersign::bridge {

struct BridgeEvent {
  std::string event;  // held, vote, approved, released, rejected, expired, conflict, ...
  std::string approval_id;
  std::string topic;
  std::string actor;
  std::string reason;
  std::string job_hash;
  std::string policy_snapshot;
};

// invalid_argument when the body is not an event object with `event`.
Result<BridgeEvent> parseBridgeEvent(std::string_view json);

// The channel of the first route whose topic patterns match; nullopt when none does.
std::optional<std::string> channelFor(const std::vector<SlackChannelRoute>& routes, std::string_view topic);

bool webhookWants(const WebhookConfig& hook, std::string_view event);

// Whether the Slack side has anything to do with this event.
bool slackCares(std::string_view event);

}  // namespace countersign::bridge
