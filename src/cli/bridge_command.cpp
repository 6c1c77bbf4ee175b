// `countersign bridge`: the Slack bridge and webhook notifier, its own process (it talks to the
// Internet; the gateway need not). Wires the bridge's parts to NATS, Slack and its admin
// listener, and runs until SIGTERM.
#include <pthread.h>
#include <signal.h>

#include <cstdlib>
#include <ctime>
#include <iostream>

#include "bridge/bridge.hpp"
#include "bridge/core/interaction.hpp"
#include "bridge/interaction_server.hpp"
#include "bridge/socket_mode.hpp"
#include "client.hpp"
#include "commands.hpp"
#include "core/json_writer.hpp"
#include "countersign/events.hpp"
#include "countersign/nkeys.hpp"
#include "http/admin_server.hpp"
#include "nats/kv_bucket.hpp"

namespace countersign::cli {
namespace {

std::string envValue(const std::string& name) {
  const char* value = std::getenv(name.c_str());
  return value == nullptr ? std::string() : std::string(value);
}

LogLevel levelOf(const std::string& text) {
  if (text == "debug") return LogLevel::debug;
  if (text == "warn") return LogLevel::warn;
  if (text == "error") return LogLevel::error;
  return LogLevel::info;
}

// What the bridge needs from the approvers registry: who is who on Slack, and the name of the
// channel whose keys hold the bridge's public key.
struct Identity {
  std::vector<bridge::SlackPerson> people;
  std::string via;
};

Result<Identity> identityFor(const Config& config, const std::string& public_key) {
  Identity identity;
  if (!config.approvers) {
    return fail(Errc::invalid_argument,
                "the Slack bridge needs an approvers section: people with their slack ids, and a channel "
                "whose keys hold " + public_key);
  }
  for (const auto& person : config.approvers->people) {
    if (!person.slack.empty()) identity.people.push_back({person.name, person.slack});
  }
  for (const auto& channel : config.approvers->channels) {
    for (const auto& key : channel.keys) {
      if (key == public_key) identity.via = channel.name;
    }
  }
  if (identity.via.empty()) {
    return fail(Errc::invalid_argument, "slack.key_file: its public key " + public_key +
                                            " is in no approvers.channels[].keys: add it to the bridge's channel");
  }
  return identity;
}

}  // namespace

int bridgeCommand(const RunOptions& options) {
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGTERM);
  sigaddset(&signals, SIGINT);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);

  // `--check --json` answers {"ok": false, "error"} on stdout, as `run --check --json` does.
  const auto refuse = [&options](const std::string& message) {
    if (options.check && options.json) {
      detail::JsonObjectWriter w;
      w.field("ok", false).field("error", message);
      std::cout << w.finish() << '\n';
    } else {
      std::cerr << "countersign bridge: " << message << '\n';
    }
    return kExitUsage;
  };
  auto loaded = loadConfig(options.config_path, processEnvironment(), ConfigUse::bridge);
  if (!loaded) return refuse(loaded.error().message);
  const Config config = std::move(*loaded);

  std::string bot_token;
  std::string app_token;
  std::string signing_secret;
  std::optional<nkeys::Signer> signer;
  Identity identity;
  if (config.slack.enabled) {
    bot_token = envValue(config.slack.bot_token_env);
    if (bot_token.empty()) return refuse("slack.bot_token_env: environment variable " + config.slack.bot_token_env + " is not set");
    if (config.slack.mode == SlackConfig::Mode::socket) {
      app_token = envValue(config.slack.app_token_env);
      if (app_token.empty()) return refuse("slack.app_token_env: environment variable " + config.slack.app_token_env + " is not set (socket mode)");
    } else {
      signing_secret = envValue(config.slack.signing_secret_env);
      if (signing_secret.empty()) return refuse("slack.signing_secret_env: environment variable " + config.slack.signing_secret_env + " is not set (http mode)");
    }
    auto seed = nkeys::readSeedFile(config.slack.key_file);
    if (!seed) return refuse("slack.key_file: " + seed.error().message);
    signer.emplace(*seed);
    auto found = identityFor(config, signer->encodedPublicKey());
    if (!found) return refuse(found.error().message);
    identity = std::move(*found);
  }
  std::vector<bridge::ResolvedWebhook> webhooks;
  for (std::size_t i = 0; i < config.notify.webhooks.size(); ++i) {
    const auto& hook = config.notify.webhooks[i];
    std::string secret = envValue(hook.secret_env);
    if (secret.empty()) {
      return refuse("notify.webhooks[" + std::to_string(i) + "].secret_env: environment variable " + hook.secret_env + " is not set");
    }
    webhooks.push_back({hook, std::move(secret)});
  }
  // Events are believed only when countersign signed them: its public key from audit.public_key,
  // and from receipts.seed_file when the bridge can read it (the same host and config).
  EventVerifier event_keys;
  if (auto configured = nkeys::parsePublicKey(config.audit.public_key)) event_keys.trust(*configured);
  if (auto seed = nkeys::readSeedFile(config.receipts.seed_file)) event_keys.trust(nkeys::publicKeyOf(*seed));
  if (event_keys.empty()) {
    return refuse("audit.public_key: the bridge checks every event's signature with countersign's public key: set "
                  "audit.public_key to what `countersign keys show` prints on the gateway (receipts.seed_file " +
                  config.receipts.seed_file + " cannot be read here)");
  }
  auto http_client = bridge::HttpsClient::create(config.slack.ca_file);
  if (!http_client) return refuse("slack.ca_file: " + http_client.error().message);
  if (options.check && options.json) {
    detail::JsonObjectWriter w;
    w.field("ok", true).field("config", options.config_path);
    if (config.slack.enabled) {
      w.key("slack");
      auto& out = w.writer();
      out.StartObject();
      out.Key("mode");
      out.String(config.slack.mode == SlackConfig::Mode::socket ? "socket" : "http");
      out.Key("channel_routes");
      out.Uint64(config.slack.channels.size());
      out.Key("via");
      out.String(identity.via.data(), static_cast<rapidjson::SizeType>(identity.via.size()));
      out.EndObject();
    } else {
      w.field("slack", false);
    }
    w.field("webhooks", static_cast<std::uint64_t>(webhooks.size()));
    w.key("event_keys");
    auto& out = w.writer();
    out.StartArray();
    for (const auto& key : event_keys.keys()) out.String(key.data(), static_cast<rapidjson::SizeType>(key.size()));
    out.EndArray();
    std::cout << w.finish() << '\n';
    return kExitOk;
  }
  if (options.check) {
    std::cout << "ok config " << options.config_path << ": "
              << (config.slack.enabled ? std::string("slack (") + (config.slack.mode == SlackConfig::Mode::socket ? "socket" : "http") +
                                             " mode, " + std::to_string(config.slack.channels.size()) + " channel route(s), via " + identity.via + ")"
                                       : std::string("no slack"))
              << ", " << webhooks.size() << " webhook(s), events checked against";
    for (const auto& key : event_keys.keys()) std::cout << ' ' << key;
    std::cout << '\n';
    return kExitOk;
  }

  StreamLogger log(options.log_format == "text" ? LogFormat::text : LogFormat::json, levelOf(options.log_level));
  SystemClock clock;
  bridge::BridgeMetrics metrics;
  auto connection = natsio::Connection::connect(config.nats, "bridge", true,
                                                [&log](std::string_view line) { log.info(line); });
  if (!connection) {
    std::cerr << "countersign bridge: " << connection.error().message << '\n';
    return kExitUnreachable;
  }
  auto store = natsio::KvBucket::open(**connection, config.store);
  if (!store) {
    std::cerr << "countersign bridge: store: " << store.error().message << '\n';
    return kExitUnreachable;
  }
  std::unique_ptr<bridge::SlackApi> slack;
  if (config.slack.enabled) {
    slack = std::make_unique<bridge::SlackApi>(**http_client, config.slack.api_url, bot_token, app_token, log, metrics);
    if (const auto auth = slack->call("auth.test", "{}"); auth.ok) log.info("slack: authenticated");
  }
  bridge::Bridge service(bridge::BridgeParts{config, log, metrics, **connection, **store, **http_client, slack.get(),
                                             signer ? &*signer : nullptr, identity.via, identity.people,
                                             std::move(webhooks), clock, &event_keys});
  service.start();

  std::unique_ptr<bridge::SocketMode> socket_mode;
  std::unique_ptr<bridge::InteractionServer> interactions;
  if (config.slack.enabled && config.slack.mode == SlackConfig::Mode::socket) {
    socket_mode = std::make_unique<bridge::SocketMode>(*slack, **http_client, log,
                                                       [&service](std::string payload) { service.enqueueInteraction(std::move(payload)); });
    socket_mode->start();
  } else if (config.slack.enabled) {
    auto started = bridge::InteractionServer::start(
        config.slack.listen, signing_secret,
        [&clock] { return std::chrono::duration_cast<std::chrono::seconds>(clock.now().time_since_epoch()).count(); },
        [&service](std::string body) {
          // Verified: decode the form here, queue the click (the worker decodes the payload).
          if (auto payload = bridge::formField(body, "payload")) service.enqueueInteraction(std::move(*payload));
        },
        log, metrics);
    if (!started) {
      std::cerr << "countersign bridge: " << started.error().message << '\n';
      service.stop();
      return kExitUnreachable;
    }
    interactions = std::move(*started);
  }

  std::unique_ptr<http::AdminServer> admin;
  if (!config.admin.listen.empty()) {
    http::AdminHandlers handlers{
        .readiness =
            [&] {
              http::Readiness r;
              if (!(*connection)->connected()) r.failing.push_back("nats: disconnected");
              if (!service.consumerReady()) r.failing.push_back("consumer: waiting for stream " + config.audit.stream);
              if (slack && !slack->authOk()) r.failing.push_back("slack: authentication refused");
              r.ready = r.failing.empty();
              return r;
            },
        .metrics = [&] { return metrics.render(); },
        .control = nullptr};
    auto started = http::AdminServer::start(config.admin, std::move(handlers), log);
    if (!started) {
      std::cerr << "countersign bridge: admin.listen: " << started.error().message << '\n';
      return kExitUnreachable;
    }
    admin = std::move(*started);
  }
  std::cout << "countersign bridge ready: " << (config.slack.enabled ? (config.slack.mode == SlackConfig::Mode::socket ? "slack socket mode" : "slack http mode") : "no slack");
  if (interactions) std::cout << " (POST http://" << config.slack.listen.substr(0, config.slack.listen.rfind(':')) << ':' << interactions->port() << "/slack/interactions)";
  if (admin) std::cout << ", admin port " << admin->port();
  std::cout << '\n' << std::flush;
  log.info("bridge ready", {{"via", identity.via}});

  while (true) {
    const timespec tick{1, 0};
    const int signo = sigtimedwait(&signals, nullptr, &tick);
    if (signo == SIGTERM || signo == SIGINT) break;
  }
  log.info("bridge: shutting down");
  if (socket_mode) socket_mode->stop();
  if (interactions) interactions->stop();
  service.stop();
  if (admin) admin->stop();
  (*store)->stopWatching();
  (*connection)->drain(std::chrono::seconds(5));
  return kExitOk;
}

}  // namespace countersign::cli
