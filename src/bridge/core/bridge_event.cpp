#include "bridge_event.hpp"

#include <algorithm>

#include "countersign/json.hpp"
#include "json_fields.hpp"
#include "countersign/subject.hpp"

namespace countersign::bridge {
namespace {

using bridge::detail::stringAt;

}  // namespace

Result<BridgeEvent> parseBridgeEvent(std::string_view text) {
  auto doc = json::parseStrict(text);
  if (!doc || !doc->IsObject()) return fail(Errc::invalid_argument, "event is not a JSON object");
  BridgeEvent event{stringAt(*doc, "event"),  stringAt(*doc, "approval_id"), stringAt(*doc, "topic"),
                    stringAt(*doc, "actor"),  stringAt(*doc, "reason"),      stringAt(*doc, "job_hash"),
                    stringAt(*doc, "policy_snapshot")};
  if (event.event.empty()) return fail(Errc::invalid_argument, "event lacks `event`");
  return event;
}

std::optional<std::string> channelFor(const std::vector<SlackChannelRoute>& routes, std::string_view topic) {
  for (const auto& route : routes) {
    for (const auto& pattern : route.topics) {
      if (subject::matches(pattern, topic)) return route.channel;
    }
  }
  return std::nullopt;
}

bool webhookWants(const WebhookConfig& hook, std::string_view event) {
  return std::find(hook.events.begin(), hook.events.end(), event) != hook.events.end();
}

bool slackCares(std::string_view event) {
  static constexpr std::string_view kEvents[] = {"held",     "vote",    "approved", "released",
                                                 "rejected", "expired", "conflict", "release_unknown"};
  return std::find(std::begin(kEvents), std::end(kEvents), event) != std::end(kEvents);
}

}  // namespace countersign::bridge
