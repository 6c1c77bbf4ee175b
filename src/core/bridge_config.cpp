#include "bridge_config.hpp"

#include <algorithm>
#include <filesystem>

#include "countersign/subject.hpp"

namespace countersign {
namespace {

constexpr std::string_view kEventNames[] = {"allowed",  "denied",   "throttled", "held",
                                            "approved", "rejected", "expired",   "released",
                                            "replayed", "conflict", "vote",      "escalated",
                                            "release_unknown"};

bool isEnvName(std::string_view name) {
  return !name.empty() && std::all_of(name.begin(), name.end(), [](char c) {
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_';
  });
}

bool isHttpUrl(std::string_view url) {
  const auto rest = [&]() -> std::string_view {
    if (url.starts_with("https://")) return url.substr(8);
    if (url.starts_with("http://")) return url.substr(7);
    return {};
  }();
  return !rest.empty() && rest.front() != '/' &&
         std::none_of(url.begin(), url.end(), [](char c) { return c <= ' ' || c == 0x7f; });
}

// A Slack conversation id: upper-case letters and digits (C..., G..., D...).
bool isChannelId(std::string_view id) {
  return !id.empty() && id.size() <= 32 && std::all_of(id.begin(), id.end(), [](char c) {
    return (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9');
  });
}

void readEnvName(const yaml::MapReader& map, std::string_view key, std::string& out) {
  if (const auto value = map.get(key)) {
    if (auto text = value->string()) {
      if (isEnvName(*text)) {
        out = std::move(*text);
      } else {
        value->expected("an environment variable name (letters, digits, '_')");
      }
    }
  }
}

void readUrl(const yaml::Value& value, std::string& out, bool allow_empty) {
  if (auto text = value.string()) {
    if ((allow_empty && text->empty()) || isHttpUrl(*text)) {
      out = std::move(*text);
    } else {
      value.expected(allow_empty ? "an http(s) URL or empty" : "an http(s) URL");
    }
  }
}

std::string resolve(const std::string& base_dir, const std::string& path) {
  if (path.empty() || base_dir.empty() || std::filesystem::path(path).is_absolute()) return path;
  return (std::filesystem::path(base_dir) / path).lexically_normal().string();
}

void readChannel(const yaml::Value& item, SlackChannelRoute& route) {
  const yaml::MapReader map(item, {"topics", "channel"});
  if (!map.valid()) return;
  if (const auto topics = map.require("topics")) {
    if (auto list = topics->stringList()) {
      if (list->empty()) topics->fail("expected at least one topic pattern");
      for (std::size_t i = 0; i < list->size(); ++i) {
        if (!subject::isValid((*list)[i], true)) {
          item.diagnostics().fail(yaml::indexPath(topics->path(), i),
                                  "expected a topic pattern, got " + yaml::quote((*list)[i]));
        }
      }
      route.topics = std::move(*list);
    }
  }
  if (const auto channel = map.require("channel")) {
    if (auto text = channel->string()) {
      if (isChannelId(*text)) {
        route.channel = std::move(*text);
      } else {
        channel->expected("a Slack channel id such as C0123ABCD");
      }
    }
  }
}

}  // namespace

void readSlackSection(const yaml::Value& value, SlackConfig& slack, const std::string& base_dir,
                      ProblemCheck listen_problem) {
  const yaml::MapReader map(
      value, {"api_url", "ca_file", "bot_token_env", "mode", "app_token_env", "signing_secret_env",
              "listen", "key_file", "backfill", "channels", "console_url"});
  if (!map.valid()) return;
  slack.enabled = true;
  if (const auto url = map.get("api_url")) readUrl(*url, slack.api_url, false);
  if (const auto ca = map.get("ca_file")) {
    if (auto text = ca->string()) slack.ca_file = resolve(base_dir, *text);
  }
  readEnvName(map, "bot_token_env", slack.bot_token_env);
  readEnvName(map, "app_token_env", slack.app_token_env);
  readEnvName(map, "signing_secret_env", slack.signing_secret_env);
  if (const auto mode = map.get("mode")) {
    if (const auto text = mode->oneOf({"socket", "http"})) {
      slack.mode = *text == "http" ? SlackConfig::Mode::http : SlackConfig::Mode::socket;
    }
  }
  if (const auto listen = map.get("listen")) {
    if (auto text = listen->string()) {
      const std::string problem = text->empty() ? "expected host:port" : listen_problem(*text);
      if (problem.empty()) {
        slack.listen = std::move(*text);
      } else {
        listen->fail(problem);
      }
    }
  }
  if (const auto key = map.get("key_file")) {
    if (auto text = key->string()) {
      if (text->empty()) {
        key->fail("expected the path of the channel's nkey seed file");
      } else {
        slack.key_file = std::move(*text);
      }
    }
  }
  slack.key_file = resolve(base_dir, slack.key_file);
  if (const auto backfill = map.get("backfill")) {
    if (const auto duration = backfill->duration()) slack.backfill = *duration;
  }
  if (const auto channels = map.require("channels")) {
    if (!channels->isList()) {
      channels->expected("a list of {topics, channel}");
    } else if (channels->items().empty()) {
      channels->fail("expected at least one channel");
    }
    for (const auto& item : channels->items()) {
      SlackChannelRoute route;
      readChannel(item, route);
      slack.channels.push_back(std::move(route));
    }
  }
  if (const auto console = map.get("console_url")) {
    readUrl(*console, slack.console_url, true);
    if (!slack.console_url.empty() && slack.console_url.back() != '/') slack.console_url += '/';
  }
}

void readNotifySection(const yaml::Value& value, NotifyConfig& notify) {
  const yaml::MapReader map(value, {"webhooks"});
  if (!map.valid()) return;
  notify.enabled = true;
  const auto webhooks = map.require("webhooks");
  if (!webhooks) return;
  if (!webhooks->isList()) webhooks->expected("a list of webhooks");
  for (const auto& item : webhooks->items()) {
    WebhookConfig hook;
    const yaml::MapReader hook_map(item, {"url", "events", "secret_env", "max_attempts"});
    if (!hook_map.valid()) continue;
    if (const auto url = hook_map.require("url")) readUrl(*url, hook.url, false);
    if (const auto events = hook_map.require("events")) {
      if (auto list = events->stringList()) {
        if (list->empty()) events->fail("expected at least one event name");
        for (std::size_t i = 0; i < list->size(); ++i) {
          if (std::find(std::begin(kEventNames), std::end(kEventNames), (*list)[i]) ==
              std::end(kEventNames)) {
            item.diagnostics().fail(yaml::indexPath(events->path(), i),
                                    "unknown event " + yaml::quote((*list)[i]));
          }
        }
        hook.events = std::move(*list);
      }
    }
    if (hook_map.require("secret_env")) readEnvName(hook_map, "secret_env", hook.secret_env);
    hook_map.read("max_attempts", hook.max_attempts, 1, 1000);
    notify.webhooks.push_back(std::move(hook));
  }
}

}  // namespace countersign
