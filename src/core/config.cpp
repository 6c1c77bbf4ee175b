// The configuration file (docs/configuration.md): read with path-aware errors, then environment
// overrides, then the checks that relate fields to each other (subject overlaps), which name the
// environment variable when a value came from there.
//
// Relative paths in the file are resolved against the file's folder. Relative paths given in
// environment variables are resolved against the current working directory, like any path typed
// on a command line.
#include "countersign/config.hpp"

#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "bridge_config.hpp"
#include "countersign/nkeys.hpp"
#include "countersign/redact.hpp"
#include "countersign/subject.hpp"
#include "policy_conditions.hpp"
#include "yaml_reader.hpp"

extern char** environ;

namespace countersign {
namespace {

constexpr std::string_view kEnvPrefix = "COUNTERSIGN_";

// Where each overridable value came from, for the messages of the checks run after overrides.
struct Origins {
  std::string servers = "nats.servers";
  std::string prefix = "control.prefix";
};

bool isNameChar(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' ||
         c == '-';
}

bool isName(std::string_view text) {
  return !text.empty() && std::all_of(text.begin(), text.end(), isNameChar);
}

bool hasSpace(std::string_view text) {
  return std::any_of(text.begin(), text.end(), [](char c) {
    return c == ' ' || c == '\t' || c == '\r' || c == '\n' || c == '\0';
  });
}

// Each returns a problem description, or an empty string when the value is fine.
std::string serverProblem(std::string_view url) {
  if (url.empty() || hasSpace(url) || url.find(',') != std::string_view::npos) {
    return "expected a server URL like nats://127.0.0.1:4222, got " + yaml::quote(maskUrlCredentials(url));
  }
  return {};
}

std::string bucketProblem(std::string_view bucket) {
  if (!isName(bucket)) {
    return "expected a bucket name of letters, digits, '_' and '-', got " + yaml::quote(bucket);
  }
  return {};
}

std::string prefixProblem(std::string_view prefix) {
  if (!subject::isValid(prefix, false)) {
    return "expected a subject without wildcards, got " + yaml::quote(prefix);
  }
  return {};
}

bool isPort(std::string_view text) {
  if (text.empty() || text.size() > 5) return false;
  if (!std::all_of(text.begin(), text.end(), [](char c) { return c >= '0' && c <= '9'; })) {
    return false;
  }
  return std::stoi(std::string(text)) <= 65535;
}

// "host:port", "[v6]:port", or empty (no listener). Port 0 picks a free port.
std::string listenProblem(std::string_view listen) {
  if (listen.empty()) return {};
  const std::string problem = "expected host:port (or empty), got " + yaml::quote(listen);
  if (hasSpace(listen)) return problem;
  std::string_view host;
  std::string_view port;
  if (listen.front() == '[') {
    const std::size_t close = listen.find("]:");
    if (close == std::string_view::npos || close == 1) return problem;
    host = listen.substr(1, close - 1);
    port = listen.substr(close + 2);
  } else {
    const std::size_t colon = listen.rfind(':');
    if (colon == std::string_view::npos || colon == 0) return problem;
    host = listen.substr(0, colon);
    port = listen.substr(colon + 1);
    if (host.find(':') != std::string_view::npos) return problem;
  }
  if (host.empty() || !isPort(port)) return problem;
  return {};
}

// An nkey user public key ("U...", checksum verified).
std::string publicKeyProblem(std::string_view key) {
  if (auto parsed = nkeys::parsePublicKey(key); !parsed) {
    return "expected an nkey user public key (U...), got " + yaml::quote(key) + ": " + parsed.error().message;
  }
  return {};
}

std::string pathProblem(std::string_view path) {
  if (path.empty()) return "expected a non-empty path";
  if (path.find('\0') != std::string_view::npos) return "path contains a NUL byte";
  return {};
}

std::string resolvePath(const std::string& base_dir, const std::string& path) {
  if (path.empty() || base_dir.empty()) return path;
  const std::filesystem::path p(path);
  if (p.is_absolute()) return path;
  return (std::filesystem::path(base_dir) / p).lexically_normal().string();
}

std::string resolveAgainstWorkingDir(const std::string& path) {
  std::error_code ec;
  const auto absolute = std::filesystem::absolute(path, ec);
  if (ec) return path;
  return absolute.lexically_normal().string();
}

// The sequence of wildcard tokens of a pattern: "a.*.b.>" -> "*>".
std::string wildcardShape(std::string_view pattern) {
  std::string shape;
  std::size_t start = 0;
  while (true) {
    const std::size_t dot = pattern.find('.', start);
    const std::string_view token =
        pattern.substr(start, dot == std::string_view::npos ? std::string_view::npos : dot - start);
    if (token == "*" || token == ">") shape += token;
    if (dot == std::string_view::npos) return shape;
    start = dot + 1;
  }
}

// Records the problem at `value` when there is one.
bool check(const yaml::Value& value, const std::string& problem) {
  if (problem.empty()) return true;
  value.fail(problem);
  return false;
}

void readString(const yaml::MapReader& map, std::string_view key, std::string& out,
                std::string (*problem)(std::string_view)) {
  if (const auto value = map.get(key)) {
    if (auto text = value->string()) {
      if (check(*value, problem(*text))) out = std::move(*text);
    }
  }
}

std::string nonEmpty(std::string_view text) {
  return text.empty() ? std::string("expected a non-empty string") : std::string();
}
std::string anyString(std::string_view) {
  return {};
}

void readNats(const yaml::Value& value, NatsConfig& nats) {
  const yaml::MapReader map(
      value, {"servers", "embedded", "data_dir", "server_binary", "credentials", "tls", "name",
              "inbox_prefix"});
  if (!map.valid()) return;
  if (const auto servers = map.get("servers")) {
    if (auto list = servers->stringList()) {
      if (list->empty()) {
        servers->fail("expected at least one server");
      } else {
        for (std::size_t i = 0; i < list->size(); ++i) {
          const std::string problem = serverProblem((*list)[i]);
          if (!problem.empty()) {
            value.diagnostics().fail(yaml::indexPath(servers->path(), i), problem);
          }
        }
        nats.servers = std::move(*list);
      }
    }
  }
  map.read("embedded", nats.embedded);
  readString(map, "data_dir", nats.data_dir, pathProblem);
  readString(map, "server_binary", nats.server_binary, pathProblem);
  readString(map, "credentials", nats.credentials, anyString);
  readString(map, "name", nats.name, nonEmpty);
  readString(map, "inbox_prefix", nats.inbox_prefix, [](std::string_view text) {
    return text.empty() || subject::isValid(text, false)
               ? std::string()
               : "expected a subject prefix without wildcards, got " + yaml::quote(text);
  });
  if (const auto tls = map.get("tls")) {
    const yaml::MapReader tls_map(*tls, {"ca", "cert", "key"});
    if (!tls_map.valid()) return;
    readString(tls_map, "ca", nats.tls_ca, anyString);
    readString(tls_map, "cert", nats.tls_cert, anyString);
    readString(tls_map, "key", nats.tls_key, anyString);
    if (nats.tls_cert.empty() != nats.tls_key.empty()) {
      tls->fail("cert and key go together: set both or neither");
    }
  }
}

void readPolicy(const yaml::Value& value, PolicyConfig& policy) {
  const yaml::MapReader map(value, {"file", "watch"});
  if (!map.valid()) return;
  if (const auto file = map.require("file")) {
    if (auto text = file->string()) {
      if (check(*file, pathProblem(*text))) policy.file = std::move(*text);
    }
  }
  map.read("watch", policy.watch);
}

void readStore(const yaml::Value& value, StoreConfig& store) {
  const yaml::MapReader map(value, {"bucket", "replicas", "max_age"});
  if (!map.valid()) return;
  readString(map, "bucket", store.bucket, bucketProblem);
  map.read("replicas", store.replicas, 1, 5);
  if (const auto max_age = map.get("max_age")) {
    if (const auto duration = max_age->duration()) {
      if (duration->count() % 1000 != 0) {
        max_age->fail("expected a whole number of seconds, got " + max_age->describe());
      } else {
        store.max_age = std::chrono::duration_cast<std::chrono::seconds>(*duration);
      }
    }
  }
}

void readRoute(const yaml::Value& value, RouteConfig& route) {
  const yaml::MapReader map(value, {"name", "from", "to", "mode", "to_stream", "queue", "labels",
                                    "ingress_stream", "durable", "ack_wait"});
  if (!map.valid()) return;
  if (const auto name = map.require("name")) {
    if (auto text = name->string()) {
      if (isName(*text)) {
        route.name = std::move(*text);
      } else {
        name->expected("a route name of letters, digits, '_' and '-'");
      }
    }
  }
  if (const auto from = map.require("from")) {
    if (auto text = from->string()) {
      if (!subject::isValid(*text, true)) {
        from->expected("a NATS subject pattern");
      } else if (wildcardShape(*text).empty()) {
        from->fail("expected a pattern with at least one wildcard (* or >), got " +
                   yaml::quote(*text) + ": the matched part is the job's topic");
      } else {
        route.from = std::move(*text);
      }
    }
  }
  if (const auto to = map.require("to")) {
    if (auto text = to->string()) {
      if (!subject::isValid(*text, true)) {
        to->expected("a NATS subject pattern");
      } else if (!route.from.empty() && wildcardShape(*text) != wildcardShape(route.from)) {
        to->fail(yaml::quote(*text) + " must have the same wildcards in the same order as from " +
                 yaml::quote(route.from) + " so that the topic can be carried over");
      } else {
        route.to = std::move(*text);
      }
    }
  }
  if (const auto mode = map.get("mode")) {
    if (const auto text = mode->oneOf({"core", "jetstream"})) {
      route.mode = *text == "core" ? RouteMode::core : RouteMode::jetstream;
    }
  }
  if (const auto stream = map.get("to_stream")) {
    if (auto text = stream->string()) {
      if (!text->empty() && !isName(*text)) {
        stream->expected("a stream name of letters, digits, '_' and '-'");
      } else {
        route.to_stream = std::move(*text);
      }
    }
  }
  for (const auto& [key, out] : {std::pair<std::string_view, std::string*>{"ingress_stream", &route.ingress_stream},
                                 std::pair<std::string_view, std::string*>{"durable", &route.durable}}) {
    if (const auto name = map.get(key)) {
      if (auto text = name->string()) {
        if (!text->empty() && !isName(*text)) {
          name->expected("a name of letters, digits, '_' and '-'");
        } else {
          *out = std::move(*text);
        }
      }
    }
  }
  if (const auto ack_wait = map.get("ack_wait")) {
    if (const auto duration = ack_wait->duration()) {
      if (*duration < std::chrono::seconds(1)) {
        ack_wait->fail("expected at least 1s, got " + ack_wait->describe());
      } else {
        route.ack_wait = *duration;
      }
    }
  }
  if (const auto queue = map.get("queue")) {
    if (auto text = queue->string()) {
      if (!subject::isValid(*text, false)) {
        queue->expected("a queue group name (a subject without wildcards)");
      } else {
        route.queue = std::move(*text);
      }
    }
  }
  if (const auto labels = map.get("labels")) {
    if (auto values = labels->stringMap()) {
      for (const auto& [name, unused] : *values) {
        if (!isLabelName(name)) {
          value.diagnostics().fail(yaml::childPath(labels->path(), name),
                                   "label names are letters, digits, '_' and '-'");
        }
      }
      route.labels = std::move(*values);
    }
  }
}

void readControl(const yaml::Value& value, ControlConfig& control) {
  const yaml::MapReader map(value, {"prefix", "reply_subjects"});
  if (!map.valid()) return;
  readString(map, "prefix", control.prefix, prefixProblem);
  if (const auto replies = map.get("reply_subjects")) {
    if (auto list = replies->stringList()) {
      for (std::size_t i = 0; i < list->size(); ++i) {
        if (!subject::isValid((*list)[i], true)) {
          value.diagnostics().fail(
              yaml::indexPath(replies->path(), i),
              "expected a NATS subject pattern, got " + yaml::quote((*list)[i]));
        }
      }
      control.reply_subjects = std::move(*list);
    }
  }
}

void readPositiveDuration(const yaml::MapReader& map, std::string_view key,
                          std::chrono::milliseconds& out) {
  if (const auto value = map.get(key)) {
    if (const auto duration = value->duration()) {
      if (duration->count() <= 0) {
        value->fail("expected a positive duration, got " + value->describe());
      } else {
        out = *duration;
      }
    }
  }
}

// A bearer token: exactly one of token_env (an environment variable), token_file (a file whose
// first line is the token) or token (inline; fine for tests, not for production).
void readToken(const yaml::Value& value, ApiToken& token, const std::string& base_dir,
               const Environment& env) {
  const yaml::MapReader map(value, {"approver", "token_env", "token_file", "token", "scope"});
  if (!map.valid()) return;
  readString(map, "approver", token.approver, nonEmpty);
  if (!map.get("approver")) map.require("approver");
  if (const auto scope = map.get("scope")) {
    if (const auto text = scope->oneOf({"approve", "read"})) {
      token.scope = *text == "read" ? ApiToken::Scope::read : ApiToken::Scope::approve;
    }
  }
  const auto from_env = map.get("token_env");
  const auto from_file = map.get("token_file");
  const auto inline_token = map.get("token");
  const int sources = (from_env ? 1 : 0) + (from_file ? 1 : 0) + (inline_token ? 1 : 0);
  if (sources != 1) {
    value.fail("expected exactly one of token_env, token_file or token");
    return;
  }
  std::string text;
  if (from_env) {
    if (auto name = from_env->string()) {
      const auto it = env.find(*name);
      const char* process_value = std::getenv(name->c_str());
      text = it != env.end() ? it->second : process_value ? process_value : "";
      if (text.empty()) from_env->fail("environment variable " + yaml::quote(*name) + " is not set or empty");
    }
  } else if (from_file) {
    if (auto path = from_file->string()) {
      std::ifstream in(resolvePath(base_dir, *path));
      if (!in || !std::getline(in, text)) {
        from_file->fail("cannot read a token from " + yaml::quote(*path));
      }
      while (!text.empty() && (text.back() == '\r' || text.back() == ' ')) text.pop_back();
      if (in && text.empty()) from_file->fail("the first line of " + yaml::quote(*path) + " is empty");
    }
  } else if (auto literal = inline_token->string()) {
    text = std::move(*literal);
    if (text.empty()) inline_token->fail("expected a non-empty token");
  }
  if (!text.empty() && text.size() < 16) {
    value.fail("tokens must be at least 16 characters long");
    return;
  }
  token.token = std::move(text);
}

// A list of names (people, groups, channels): each in the approval-id characters.
std::vector<std::string> readNames(const yaml::Value& value, std::string_view what) {
  std::vector<std::string> names;
  auto list = value.stringList();
  if (!list) return names;
  for (std::size_t i = 0; i < list->size(); ++i) {
    if (!isApproverName((*list)[i])) {
      value.diagnostics().fail(yaml::indexPath(value.path(), i),
                               "expected " + std::string(what) + " of letters, digits, '_', '-', '=' and '.' (at most 64), got " +
                                   yaml::quote((*list)[i]));
    }
  }
  return std::move(*list);
}

// Who a channel may act for: names, group:<g> or "*".
std::vector<std::string> readMayActFor(const yaml::Value& value) {
  std::vector<std::string> entries;
  auto list = value.stringList();
  if (!list) return entries;
  for (std::size_t i = 0; i < list->size(); ++i) {
    const std::string& entry = (*list)[i];
    const std::string_view name = entry.starts_with("group:") ? std::string_view(entry).substr(6) : std::string_view(entry);
    if (entry != "*" && !isApproverName(name)) {
      value.diagnostics().fail(yaml::indexPath(value.path(), i),
                               "expected a person's name, group:<group> or \"*\", got " + yaml::quote(entry));
    }
  }
  return std::move(*list);
}

// Keys must be nkey user public keys, each listed once in the whole registry.
std::vector<std::string> readKeys(const yaml::Value& value, std::map<std::string, std::string>& seen) {
  std::vector<std::string> keys;
  auto list = value.stringList();
  if (!list) return keys;
  for (std::size_t i = 0; i < list->size(); ++i) {
    const std::string& key = (*list)[i];
    const std::string at = yaml::indexPath(value.path(), i);
    if (const auto problem = publicKeyProblem(key); !problem.empty()) {
      value.diagnostics().fail(at, problem);
      continue;
    }
    if (const auto [it, fresh] = seen.emplace(key, at); !fresh) {
      value.diagnostics().fail(at, "the same key is also at " + it->second);
    }
  }
  return std::move(*list);
}

void readApprovers(const yaml::Value& value, ApproverRegistry& registry) {
  const yaml::MapReader map(value, {"require_signature", "people", "channels"});
  if (!map.valid()) return;
  map.read("require_signature", registry.require_signature);
  std::map<std::string, std::string> keys_seen;
  std::map<std::string, std::string> names_seen;
  const auto name = [&](const yaml::MapReader& item, std::string& out) {
    const auto node = item.require("name");
    if (!node) return;
    auto text = node->string();
    if (!text) return;
    if (!isApproverName(*text)) {
      node->expected("a name of letters, digits, '_', '-', '=' and '.' (at most 64)");
      return;
    }
    if (const auto [it, fresh] = names_seen.emplace(*text, node->path()); !fresh) {
      node->fail("duplicate name " + yaml::quote(*text) + " (also " + it->second + ")");
      return;
    }
    out = std::move(*text);
  };
  if (const auto people = map.get("people")) {
    if (!people->isList()) people->expected("a list of people");
    for (const auto& item : people->items()) {
      const yaml::MapReader p(item, {"name", "groups", "keys", "slack", "email"});
      if (!p.valid()) continue;
      Person person;
      name(p, person.name);
      if (const auto groups = p.get("groups")) person.groups = readNames(*groups, "group names");
      if (const auto keys = p.get("keys")) person.keys = readKeys(*keys, keys_seen);
      p.read("slack", person.slack);
      p.read("email", person.email);
      registry.people.push_back(std::move(person));
    }
  }
  if (const auto channels = map.get("channels")) {
    if (!channels->isList()) channels->expected("a list of channels");
    for (const auto& item : channels->items()) {
      const yaml::MapReader c(item, {"name", "keys", "may_act_for"});
      if (!c.valid()) continue;
      Channel channel;
      name(c, channel.name);
      if (const auto keys = c.require("keys")) channel.keys = readKeys(*keys, keys_seen);
      if (const auto who = c.require("may_act_for")) channel.may_act_for = readMayActFor(*who);
      registry.channels.push_back(std::move(channel));
    }
  }
}

// With a registry, every REST token acts as a known person.
void checkTokens(const yaml::Value& root, const Config& config) {
  if (!config.approvers) return;
  for (std::size_t i = 0; i < config.admin.tokens.size(); ++i) {
    const std::string& who = config.admin.tokens[i].approver;
    if (!who.empty() && config.approvers->person(who) == nullptr) {
      root.diagnostics().fail("admin.tokens[" + std::to_string(i) + "].approver",
                              yaml::quote(who) + " is not in approvers.people");
    }
  }
}

void readSections(const yaml::Value& root, Config& config, const std::string& base_dir,
                  const Environment& env, ConfigUse use) {
  const yaml::MapReader top(root, {"nats", "policy", "store", "routes", "control", "admin",
                                   "release", "events", "audit", "concurrency", "slack", "notify",
                                   "approvers", "receipts"});
  if (!top.valid()) return;
  const bool gateway = use == ConfigUse::gateway;
  if (const auto nats = top.get("nats")) readNats(*nats, config.nats);
  if (const auto policy = gateway ? top.require("policy") : top.get("policy")) {
    readPolicy(*policy, config.policy);
  }
  if (const auto store = top.get("store")) readStore(*store, config.store);
  if (const auto slack = top.get("slack")) readSlackSection(*slack, config.slack, base_dir, listenProblem);
  if (const auto notify = top.get("notify")) readNotifySection(*notify, config.notify);
  if (!gateway && !top.has("slack") && !top.has("notify")) {
    root.fail("the bridge needs a slack or a notify section");
  }
  if (const auto routes = gateway ? top.require("routes") : top.get("routes")) {
    const auto items = routes->items();
    if (routes->isList() && items.empty()) routes->fail("expected at least one route");
    for (const auto& item : items) {
      RouteConfig route;
      readRoute(item, route);
      for (std::size_t i = 0; i < config.routes.size(); ++i) {
        if (!route.name.empty() && config.routes[i].name == route.name) {
          root.diagnostics().fail(yaml::childPath(item.path(), "name"),
                                  "duplicate route name " + yaml::quote(route.name) +
                                      " (also routes[" + std::to_string(i) + "].name)");
        }
      }
      config.routes.push_back(std::move(route));
    }
  }
  if (const auto control = top.get("control")) readControl(*control, config.control);
  if (const auto approvers = top.get("approvers")) {
    config.approvers.emplace();
    readApprovers(*approvers, *config.approvers);
  }
  if (const auto admin = top.get("admin")) {
    const yaml::MapReader map(*admin, {"listen", "tokens", "max_connections"});
    if (map.valid()) {
      readString(map, "listen", config.admin.listen, listenProblem);
      map.read("max_connections", config.admin.max_connections, 2, 100000);
      if (const auto tokens = map.get("tokens")) {
        if (!tokens->isList()) tokens->expected("a list of tokens");
        for (const auto& item : tokens->items()) {
          ApiToken token;
          readToken(item, token, base_dir, env);
          for (const auto& other : config.admin.tokens) {
            if (!token.token.empty() && other.token == token.token) item.fail("the same token twice");
          }
          config.admin.tokens.push_back(std::move(token));
        }
      }
    }
  }
  checkTokens(root, config);
  if (const auto audit = top.get("audit")) {
    const yaml::MapReader map(*audit, {"enabled", "stream", "replicas", "max_age", "public_key"});
    if (map.valid()) {
      map.read("enabled", config.audit.enabled);
      readString(map, "public_key", config.audit.public_key,
                 [](std::string_view key) { return key.empty() ? std::string() : publicKeyProblem(key); });
      readString(map, "stream", config.audit.stream, [](std::string_view text) {
        return isName(text) ? std::string() : "expected a stream name of letters, digits, '_' and '-'";
      });
      map.read("replicas", config.audit.replicas, 1, 5);
      if (const auto max_age = map.get("max_age")) {
        if (const auto duration = max_age->duration()) {
          config.audit.max_age = std::chrono::duration_cast<std::chrono::seconds>(*duration);
        }
      }
    }
  }
  if (const auto receipts = top.get("receipts")) {
    const yaml::MapReader map(*receipts, {"seed_file", "allowed"});
    if (map.valid()) {
      readString(map, "seed_file", config.receipts.seed_file, nonEmpty);
      map.read("allowed", config.receipts.allowed);
    }
  }
  if (const auto concurrency = top.get("concurrency")) {
    const yaml::MapReader map(*concurrency, {"holds", "control", "intake_bytes", "receipt_signers"});
    if (map.valid()) {
      map.read("holds", config.concurrency.holds, 1, 65536);
      map.read("control", config.concurrency.control, 1, 256);
      map.read("intake_bytes", config.concurrency.intake_bytes, 1024 * 1024, 2147483647);
      map.read("receipt_signers", config.concurrency.receipt_signers, 0, 64);
    }
  }
  if (const auto release = top.get("release")) {
    const yaml::MapReader map(*release, {"replay_interval", "lease", "publish_timeout"});
    if (map.valid()) {
      readPositiveDuration(map, "replay_interval", config.release.replay_interval);
      readPositiveDuration(map, "lease", config.release.lease);
      readPositiveDuration(map, "publish_timeout", config.release.publish_timeout);
    }
  }
  if (const auto events = top.get("events")) {
    const yaml::MapReader map(*events, {"allowed", "include_payload", "redact"});
    if (map.valid()) {
      map.read("allowed", config.events.allowed);
      map.read("include_payload", config.events.include_payload);
      if (const auto redact = map.get("redact")) {
        if (auto list = redact->stringList()) {
          for (std::size_t i = 0; i < list->size(); ++i) {
            const std::string& path = (*list)[i];
            if (path.empty() || path.front() == '.' || path.back() == '.' || path.find("..") != std::string::npos) {
              root.diagnostics().fail(yaml::indexPath(redact->path(), i),
                                      "expected a dotted JSON path such as card.number, got " + yaml::quote(path));
            }
          }
          config.events.redact = std::move(*list);
        }
      }
    }
  }
}

Status envError(std::string_view variable, std::string_view problem) {
  return fail(Errc::invalid_argument, std::string(variable) + ": " + std::string(problem));
}

Status applyEnvironment(const Environment& env, Config& config, Origins& origins) {
  const auto get = [&](std::string_view name) -> const std::string* {
    const auto it = env.find(name);
    return it == env.end() ? nullptr : &it->second;
  };
  if (const auto* value = get("COUNTERSIGN_NATS_URL")) {
    std::vector<std::string> servers;
    std::size_t start = 0;
    while (true) {
      const std::size_t comma = value->find(',', start);
      std::string item =
          value->substr(start, comma == std::string::npos ? std::string::npos : comma - start);
      item.erase(0, item.find_first_not_of(" \t"));
      item.erase(item.find_last_not_of(" \t") + 1);
      if (const auto problem = serverProblem(item); !problem.empty()) {
        return envError("COUNTERSIGN_NATS_URL", problem);
      }
      servers.push_back(std::move(item));
      if (comma == std::string::npos) break;
      start = comma + 1;
    }
    config.nats.servers = std::move(servers);
    origins.servers = "COUNTERSIGN_NATS_URL";
  }
  if (const auto* value = get("COUNTERSIGN_NATS_EMBEDDED")) {
    if (*value == "true") {
      config.nats.embedded = true;
    } else if (*value == "false") {
      config.nats.embedded = false;
    } else {
      return envError("COUNTERSIGN_NATS_EMBEDDED",
                      "expected true or false, got " + yaml::quote(*value));
    }
  }
  if (const auto* value = get("COUNTERSIGN_DATA_DIR")) {
    if (const auto problem = pathProblem(*value); !problem.empty()) {
      return envError("COUNTERSIGN_DATA_DIR", problem);
    }
    config.nats.data_dir = resolveAgainstWorkingDir(*value);
  }
  if (const auto* value = get("COUNTERSIGN_POLICY_FILE")) {
    if (const auto problem = pathProblem(*value); !problem.empty()) {
      return envError("COUNTERSIGN_POLICY_FILE", problem);
    }
    config.policy.file = resolveAgainstWorkingDir(*value);
  }
  if (const auto* value = get("COUNTERSIGN_BUCKET")) {
    if (const auto problem = bucketProblem(*value); !problem.empty()) {
      return envError("COUNTERSIGN_BUCKET", problem);
    }
    config.store.bucket = *value;
  }
  if (const auto* value = get("COUNTERSIGN_PREFIX")) {
    if (const auto problem = prefixProblem(*value); !problem.empty()) {
      return envError("COUNTERSIGN_PREFIX", problem);
    }
    config.control.prefix = *value;
    origins.prefix = "COUNTERSIGN_PREFIX";
  }
  if (const auto* value = get("COUNTERSIGN_ADMIN_LISTEN")) {
    if (const auto problem = listenProblem(*value); !problem.empty()) {
      return envError("COUNTERSIGN_ADMIN_LISTEN", problem);
    }
    config.admin.listen = *value;
  }
  return {};
}

// Checks between fields, after the overrides: nothing countersign publishes may come back in.
Status checkSubjects(const Config& config, const Origins& origins) {
  const std::string control = config.control.prefix + ".>";
  const std::string control_desc =
      yaml::quote(control) + " (" + origins.prefix + " " + yaml::quote(config.control.prefix) + ")";
  const auto refuse = [&](const std::string& path, const std::string& message) {
    return fail(Errc::invalid_argument, config.source + ": " + path + ": " + message);
  };
  for (std::size_t i = 0; i < config.routes.size(); ++i) {
    const RouteConfig& route = config.routes[i];
    const std::string at = "routes[" + std::to_string(i) + "]";
    if (subject::overlaps(route.from, control)) {
      return refuse(at + ".from", yaml::quote(route.from) + " overlaps " + control_desc +
                                      ": control and event subjects would be taken as jobs");
    }
    if (subject::overlaps(route.to, control)) {
      return refuse(at + ".to", yaml::quote(route.to) + " overlaps " + control_desc +
                                    ": released jobs would land on control or event subjects");
    }
    for (std::size_t j = 0; j < config.routes.size(); ++j) {
      const RouteConfig& other = config.routes[j];
      const std::string other_at = "routes[" + std::to_string(j) + "]";
      if (subject::overlaps(route.to, other.from)) {
        return refuse(at + ".to", yaml::quote(route.to) + " overlaps " + other_at + ".from " +
                                      yaml::quote(other.from) +
                                      ": released jobs would be taken in again (a loop)");
      }
      if (j < i && subject::overlaps(route.from, other.from)) {
        return refuse(at + ".from", yaml::quote(route.from) + " overlaps " + other_at + ".from " +
                                        yaml::quote(other.from) +
                                        ": a job would be taken by both routes");
      }
    }
  }
  return {};
}

void resolvePaths(Config& config, const std::string& base_dir) {
  config.policy.file = resolvePath(base_dir, config.policy.file);
  config.nats.data_dir = resolvePath(base_dir, config.nats.data_dir);
  config.nats.credentials = resolvePath(base_dir, config.nats.credentials);
  config.nats.tls_ca = resolvePath(base_dir, config.nats.tls_ca);
  config.nats.tls_cert = resolvePath(base_dir, config.nats.tls_cert);
  config.nats.tls_key = resolvePath(base_dir, config.nats.tls_key);
  config.receipts.seed_file = resolvePath(base_dir, config.receipts.seed_file);
  // A bare command name is looked up on PATH; anything with a '/' is a path.
  if (config.nats.server_binary.find('/') != std::string::npos) {
    config.nats.server_binary = resolvePath(base_dir, config.nats.server_binary);
  }
}

}  // namespace

Result<Config> parseConfig(std::string_view yaml_text, std::string_view source,
                           const std::string& base_dir, const Environment& env, ConfigUse use) {
  const auto document = yaml::parseDocument(yaml_text, source);
  if (!document) return std::unexpected(document.error());
  try {
    Config config;
    config.source = std::string(source);
    yaml::Diagnostics diag{std::string(source)};
    readSections(yaml::Value(diag, *document, ""), config, base_dir, env, use);
    if (!diag.ok()) return std::unexpected(diag.error());
    resolvePaths(config, base_dir);
    Origins origins;
    if (auto status = applyEnvironment(env, config, origins); !status) {
      return std::unexpected(status.error());
    }
    if (auto status = checkSubjects(config, origins); !status) {
      return std::unexpected(status.error());
    }
    return config;
  } catch (const std::exception& e) {
    return fail(Errc::invalid_argument, std::string(source) + ": " + e.what());
  }
}

Result<Config> loadConfig(const std::string& path, const Environment& env, ConfigUse use) {
  std::error_code ec;
  if (std::filesystem::is_directory(path, ec)) return fail(Errc::io, path + ": is a directory");
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    return fail(Errc::io, path + ": cannot open config file: " + std::strerror(errno));
  }
  std::ostringstream text;
  text << in.rdbuf();
  if (in.bad()) return fail(Errc::io, path + ": cannot read config file");
  const auto absolute = std::filesystem::absolute(path, ec);
  const std::string base_dir = ec ? std::string() : absolute.parent_path().string();
  return parseConfig(text.str(), path, base_dir, env, use);
}

Environment processEnvironment() {
  Environment env;
  for (char** entry = environ; entry && *entry; ++entry) {
    const std::string_view text(*entry);
    if (!text.starts_with(kEnvPrefix)) continue;
    const std::size_t eq = text.find('=');
    if (eq == std::string_view::npos) continue;
    env.emplace(std::string(text.substr(0, eq)), std::string(text.substr(eq + 1)));
  }
  return env;
}

}  // namespace countersign
