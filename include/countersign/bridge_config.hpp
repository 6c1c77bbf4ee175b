// The `slack:` and `notify:` sections of the configuration file, read by `countersign bridge`
// (the gateway accepts and ignores them, so one file can serve both processes).
#pragma once

#include <chrono>
#include <string>
#include <vector>

namespace countersign {

// Which Slack channel gets the jobs whose topic matches one of `topics` (NATS wildcards).
struct SlackChannelRoute {
  std::vector<std::string> topics;
  std::string channel;
};

struct SlackConfig {
  bool enabled = false;  // the section is present
  std::string api_url = "https://slack.com/api";
  std::string ca_file;  // extra CA bundle for api_url (empty: the system's)
  std::string bot_token_env = "SLACK_BOT_TOKEN";
  enum class Mode { socket, http } mode = Mode::socket;
  std::string app_token_env = "SLACK_APP_TOKEN";
  std::string signing_secret_env = "SLACK_SIGNING_SECRET";
  std::string listen = "127.0.0.1:9465";  // http mode: POST /slack/interactions
  std::string key_file = "slack.nk";      // the channel's nkey seed (resolved against the file)
  std::chrono::milliseconds backfill{std::chrono::hours(24)};
  std::vector<SlackChannelRoute> channels;
  std::string console_url;  // adds a Details button: <console_url>approvals/<id>
};

struct WebhookConfig {
  std::string url;
  std::vector<std::string> events;  // event names (held, approved, ...)
  std::string secret_env;
  int max_attempts = 10;
};

struct NotifyConfig {
  bool enabled = false;  // the section is present
  std::vector<WebhookConfig> webhooks;
};

}  // namespace countersign
