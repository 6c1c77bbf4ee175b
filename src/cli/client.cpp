#include "client.hpp"

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <sstream>

#include "countersign/json.hpp"
#include "countersign/redact.hpp"

namespace countersign::cli {
namespace {

std::string env(const char* name) {
  const char* value = std::getenv(name);
  return value != nullptr ? value : "";
}

std::vector<std::string> splitUrls(const std::string& urls) {
  std::vector<std::string> out;
  std::stringstream in(urls);
  for (std::string url; std::getline(in, url, ',');) {
    if (!url.empty()) out.push_back(url);
  }
  return out;
}

// Fills `nats` from the `nats` CLI's context file NAME (or a path to one). Fields read: url,
// user, password, token, creds, nkey, cert, key, ca, inbox_prefix; the others are ignored.
bool applyContext(const std::string& name, NatsConfig& nats) {
  const std::string path = name.find('/') != std::string::npos ? name : natsContextDir() + "/" + name + ".json";
  std::ifstream in(path);
  if (!in) {
    std::cerr << "countersign: --context " << name << ": cannot read " << path << '\n';
    return false;
  }
  std::stringstream text;
  text << in.rdbuf();
  auto doc = json::parseStrict(text.str());
  if (!doc || !doc->IsObject()) {
    std::cerr << "countersign: --context " << name << ": " << path << " is not a JSON object\n";
    return false;
  }
  auto read = [&](const char* key, std::string& into) {
    const auto it = doc->FindMember(key);
    if (it != doc->MemberEnd() && it->value.IsString() && it->value.GetStringLength() > 0) {
      into = it->value.GetString();
    }
  };
  std::string url;
  read("url", url);
  if (!url.empty()) nats.servers = splitUrls(url);
  read("user", nats.user);
  read("password", nats.password);
  read("token", nats.token);
  read("creds", nats.credentials);
  read("nkey", nats.nkey_seed_file);
  read("cert", nats.tls_cert);
  read("key", nats.tls_key);
  read("ca", nats.tls_ca);
  read("inbox_prefix", nats.inbox_prefix);
  return true;
}

void override(std::string& into, const std::string& value) {
  if (!value.empty()) into = value;
}

}  // namespace

std::string natsContextDir() {
  if (const std::string xdg = env("XDG_CONFIG_HOME"); !xdg.empty()) return xdg + "/nats/context";
  return env("HOME") + "/.config/nats/context";
}

std::optional<Target> resolveTarget(const ClientOptions& options) {
  Target target;
  target.nats.name = "countersign-cli";
  std::string config_path = options.config_path;
  if (config_path.empty() && std::filesystem::exists("config/countersign.yaml")) {
    config_path = "config/countersign.yaml";
  }
  if (!config_path.empty()) {
    auto config = loadConfig(config_path, processEnvironment());
    if (!config) {
      std::cerr << "countersign: " << config.error().message << '\n';
      if (!options.config_path.empty()) return std::nullopt;
    } else {
      target.nats.servers = config->nats.servers;
      target.nats.credentials = config->nats.credentials;
      target.nats.tls_ca = config->nats.tls_ca;
      target.nats.tls_cert = config->nats.tls_cert;
      target.nats.tls_key = config->nats.tls_key;
      target.prefix = config->control.prefix;
      target.audit_stream = config->audit.stream;
      target.receipt_seed_file = config->receipts.seed_file;
    }
  }
  if (!options.context.empty() && !applyContext(options.context, target.nats)) return std::nullopt;
  if (const std::string url = env("NATS_URL"); !url.empty()) target.nats.servers = splitUrls(url);
  if (!options.server.empty()) target.nats.servers = splitUrls(options.server);
  if (target.nats.servers.empty()) target.nats.servers = {"nats://127.0.0.1:4222"};
  override(target.nats.user, options.user);
  override(target.nats.password, options.password);
  override(target.nats.token, options.token);
  override(target.nats.credentials, options.creds);
  override(target.nats.nkey_seed_file, options.nkey);
  override(target.nats.tls_cert, options.tls_cert);
  override(target.nats.tls_key, options.tls_key);
  override(target.nats.tls_ca, options.tls_ca);
  override(target.nats.inbox_prefix, options.inbox_prefix);
  if (target.nats.tls_cert.empty() != target.nats.tls_key.empty()) {
    std::cerr << "countersign: --tlscert and --tlskey go together (or the context's cert and key)\n";
    return std::nullopt;
  }
  target.server = maskUrlCredentials(target.nats.servers.front());
  if (!options.prefix.empty()) target.prefix = options.prefix;
  return target;
}

std::unique_ptr<natsio::Connection> connectTo(const Target& target) {
  auto connection = natsio::Connection::connect(target.nats, "", false);
  if (!connection) {
    // The error names the servers with their credentials masked. The hint points at what to
    // change: who connects when the server refused the user, else where.
    const std::string& message = connection.error().message;
    const auto says = [&](const char* part) { return message.find(part) != std::string::npos; };
    const bool uses_tls = !target.nats.tls_ca.empty() || !target.nats.tls_cert.empty();
    std::cerr << "countersign: " << message << '\n'
              << (says("uthorization") || says("uthentication")
                      ? "(check who connects: --creds, --user/--password, --nkey, --token or the context's)"
                  : says("SSL") || says("TLS") || (uses_tls && says("Protocol Error"))
                      ? "(check --tlsca, --tlscert and --tlskey, or the context's: the server may ask for a client "
                        "certificate)"
                  : says("file") || says("seed") ? "(check the file named above)"
                                                 : "(set --server, NATS_URL, --context or --config)")
              << '\n';
    return nullptr;
  }
  return std::move(*connection);
}

std::unique_ptr<natsio::Connection> connectFor(const ClientOptions& options, Target& target, int& exit_code) {
  auto resolved = resolveTarget(options);
  if (!resolved) {
    exit_code = kExitUsage;
    return nullptr;
  }
  target = std::move(*resolved);
  auto connection = connectTo(target);
  if (!connection) exit_code = kExitUnreachable;
  return connection;
}

int reportNoAnswer(natsConnection* connection, natsStatus status, const std::string& subject,
                   const Target& target, std::string_view hint) {
  // A refused publish or subscribe does not fail the call: the server says so asynchronously
  // and the request times out. cnats keeps the server's words as the connection's last error.
  const char* last_text = nullptr;
  const natsStatus last = natsConnection_GetLastError(connection, &last_text);
  const std::string text = last_text != nullptr ? last_text : "";
  if (last == NATS_NOT_PERMITTED || text.find("Permissions Violation") != std::string::npos ||
      text.find("permissions violation") != std::string::npos) {
    std::cerr << "countersign: permission denied by the NATS server on " << target.server << ": " << text
              << "\n(the NATS user needs publish on " << subject << " and subscribe on its reply inbox, "
              << "e.g. _INBOX.>; docs/cli.md lists what each command needs)\n";
    return kExitRefused;
  }
  if (status == NATS_NO_RESPONDERS) {
    std::cerr << "countersign: nobody answers on " << subject << " at " << target.server << ": " << hint << '\n';
    return kExitUnreachable;
  }
  std::cerr << "countersign: no answer on " << subject << " from " << target.server << " ("
            << natsStatus_GetText(status) << "): " << hint << '\n';
  return kExitUnreachable;
}

}  // namespace countersign::cli
