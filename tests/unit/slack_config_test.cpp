#include <gtest/gtest.h>

#include "countersign/config.hpp"

namespace countersign {
namespace {

constexpr std::string_view kGateway = R"(
policy: { file: p.yaml }
routes: [{ name: jobs, from: "agents.jobs.>", to: "jobs.>" }]
)";

constexpr std::string_view kSlack = R"(
slack:
  api_url: https://127.0.0.1:8443/api
  ca_file: ca.pem
  mode: http
  listen: "127.0.0.1:0"
  key_file: keys/slack.nk
  backfill: 2h
  channels:
    - { topics: ["finance.>"], channel: C0FINANCE }
    - { topics: [">"], channel: C0APPROVALS }
  console_url: https://cs.example/ui
notify:
  webhooks:
    - url: https://hooks.example.com/countersign
      events: [held, escalated, expired]
      secret_env: HOOK_SECRET
)";

Result<Config> bridge(std::string_view text) {
  return parseConfig(text, "c.yaml", "/etc/cs", {}, ConfigUse::bridge);
}

TEST(SlackConfig, BridgeReadsSlackAndNotifyWithoutPolicyOrRoutes) {
  auto config = bridge(kSlack);
  ASSERT_TRUE(config) << config.error().message;
  const SlackConfig& slack = config->slack;
  EXPECT_TRUE(slack.enabled);
  EXPECT_EQ(slack.api_url, "https://127.0.0.1:8443/api");
  EXPECT_EQ(slack.ca_file, "/etc/cs/ca.pem");
  EXPECT_EQ(slack.mode, SlackConfig::Mode::http);
  EXPECT_EQ(slack.key_file, "/etc/cs/keys/slack.nk");
  EXPECT_EQ(slack.backfill, std::chrono::hours(2));
  ASSERT_EQ(slack.channels.size(), 2u);
  EXPECT_EQ(slack.channels[0].channel, "C0FINANCE");
  EXPECT_EQ(slack.console_url, "https://cs.example/ui/");
  EXPECT_EQ(slack.bot_token_env, "SLACK_BOT_TOKEN");
  ASSERT_EQ(config->notify.webhooks.size(), 1u);
  EXPECT_EQ(config->notify.webhooks[0].max_attempts, 10);
  EXPECT_EQ(config->notify.webhooks[0].events.size(), 3u);
}

TEST(SlackConfig, DefaultsAreSocketModeAndSlacksApi) {
  auto config = bridge("slack:\n  channels: [{ topics: ['>'], channel: C1 }]\n");
  ASSERT_TRUE(config) << config.error().message;
  EXPECT_EQ(config->slack.mode, SlackConfig::Mode::socket);
  EXPECT_EQ(config->slack.api_url, "https://slack.com/api");
  EXPECT_EQ(config->slack.key_file, "/etc/cs/slack.nk");
  EXPECT_EQ(config->slack.backfill, std::chrono::hours(24));
  EXPECT_FALSE(config->notify.enabled);
}

TEST(SlackConfig, TheGatewayAcceptsTheSameFile) {
  auto config = parseConfig(std::string(kGateway) + std::string(kSlack), "c.yaml", "/etc/cs");
  ASSERT_TRUE(config) << config.error().message;
  EXPECT_EQ(config->routes.size(), 1u);
  // ... but still needs its own sections, and the bridge needs one of its own.
  EXPECT_FALSE(parseConfig(kSlack, "c.yaml", "/etc/cs"));
  auto none = bridge(kGateway);
  ASSERT_FALSE(none);
  EXPECT_NE(none.error().message.find("slack or a notify section"), std::string::npos);
}

void expectRefused(std::string_view text, std::string_view fragment) {
  auto config = bridge(text);
  ASSERT_FALSE(config) << text;
  EXPECT_NE(config.error().message.find(fragment), std::string::npos) << config.error().message;
}

TEST(SlackConfig, RefusesUnknownKeysAndBadValuesWithTheirPath) {
  expectRefused("slack:\n  chanels: []\n", "slack.chanels: unknown key");
  expectRefused("slack:\n  mode: sockets\n  channels: [{ topics: ['>'], channel: C1 }]\n",
                "slack.mode: expected socket or http");
  expectRefused("slack:\n  channels: [{ topics: ['a..b'], channel: C1 }]\n", "slack.channels[0].topics[0]");
  expectRefused("slack:\n  channels: [{ topics: ['>'], channel: '#general' }]\n", "slack.channels[0].channel");
  expectRefused("slack:\n  channels: []\n", "slack.channels: expected at least one channel");
  expectRefused("slack:\n  api_url: ftp://x\n  channels: [{ topics: ['>'], channel: C1 }]\n", "slack.api_url");
  expectRefused("slack:\n  listen: nope\n  channels: [{ topics: ['>'], channel: C1 }]\n", "slack.listen");
  expectRefused("slack:\n  bot_token_env: 'A B'\n  channels: [{ topics: ['>'], channel: C1 }]\n",
                "slack.bot_token_env");
  expectRefused("notify:\n  webhooks: [{ url: 'https://h', events: [helld], secret_env: S }]\n",
                "notify.webhooks[0].events[0]: unknown event");
  expectRefused("notify:\n  webhooks: [{ url: 'https://h', events: [held] }]\n",
                "notify.webhooks[0].secret_env: required key is missing");
  expectRefused("notify:\n  webhooks: [{ url: 'https://h', events: [held], secret_env: S, max_attempts: 0 }]\n",
                "notify.webhooks[0].max_attempts");
}

}  // namespace
}  // namespace countersign
