// approve / reject / show / pending: a thin client of the control subjects (docs/protocol.md).
#include <nats/nats.h>
#include <rapidjson/document.h>
#include <rapidjson/prettywriter.h>
#include <rapidjson/stringbuffer.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <iostream>

#include "commands.hpp"
#include "countersign/config.hpp"
#include "countersign/json.hpp"
#include "nats/connection.hpp"
#include "core/json_writer.hpp"

namespace countersign::cli {
namespace {

constexpr int kExitOk = 0;
constexpr int kExitRefused = 1;      // a 4xx/5xx answer
constexpr int kExitUsage = 2;        // bad options or config
constexpr int kExitUnreachable = 3;  // no server or no answer

struct Target {
  std::string server;
  std::string prefix = "countersign";
};

std::optional<Target> resolve(const ClientOptions& options) {
  Target target;
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
      target.server = config->nats.servers.front();
      target.prefix = config->control.prefix;
    }
  }
  if (const char* env = std::getenv("NATS_URL"); env != nullptr && *env != '\0') target.server = env;
  if (!options.server.empty()) target.server = options.server;
  if (target.server.empty()) target.server = "nats://127.0.0.1:4222";
  if (!options.prefix.empty()) target.prefix = options.prefix;
  return target;
}

// Sends one control request; prints the answer; returns the exit code.
int request(const ClientOptions& options, std::string_view op, const std::string& body,
            const std::function<void(const rapidjson::Document&)>& print_human) {
  const auto target = resolve(options);
  if (!target) return kExitUsage;
  NatsConfig nats;
  nats.servers = {target->server};
  nats.name = "countersign-cli";
  auto connection = natsio::Connection::connect(nats, "", false);
  if (!connection) {
    std::cerr << "countersign: cannot connect to " << target->server << ": "
              << connection.error().message << "\n(set --server, NATS_URL or --config)\n";
    return kExitUnreachable;
  }
  const std::string subject = target->prefix + ".control." + std::string(op);
  natsMsg* reply = nullptr;
  const natsStatus status = natsConnection_Request(&reply, (*connection)->raw(), subject.c_str(),
                                                   body.data(), static_cast<int>(body.size()),
                                                   options.timeout_ms);
  if (status != NATS_OK) {
    std::cerr << "countersign: no answer on " << subject << " from " << target->server << " ("
              << natsStatus_GetText(status) << "): is countersign running?\n";
    return kExitUnreachable;
  }
  const std::string text(natsMsg_GetData(reply), static_cast<std::size_t>(natsMsg_GetDataLength(reply)));
  natsMsg_Destroy(reply);
  rapidjson::Document doc;
  doc.Parse(text.data(), text.size());
  if (doc.HasParseError() || !doc.IsObject()) {
    std::cerr << "countersign: unreadable answer: " << text << '\n';
    return kExitRefused;
  }
  const int code = doc.HasMember("code") && doc["code"].IsInt() ? doc["code"].GetInt() : 500;
  if (options.json) {
    std::cout << text << '\n';
  } else if (code >= 400) {
    std::cerr << "countersign: " << (doc.HasMember("status") ? doc["status"].GetString() : "error") << " (" << code << ")";
    for (const char* field : {"reason", "field", "approval_id"}) {
      if (doc.HasMember(field) && doc[field].IsString()) std::cerr << ' ' << field << '=' << doc[field].GetString();
    }
    std::cerr << '\n';
  } else {
    print_human(doc);
  }
  return code >= 400 ? kExitRefused : kExitOk;
}

std::string str(const rapidjson::Value& obj, const char* name) {
  if (!obj.IsObject()) return {};
  const auto it = obj.FindMember(name);
  return it != obj.MemberEnd() && it->value.IsString() ? it->value.GetString() : "";
}

void printStatus(const rapidjson::Document& doc) {
  std::cout << str(doc, "status") << " (" << doc["code"].GetInt() << ") " << str(doc, "approval_id");
  if (!str(doc, "msg_id").empty()) std::cout << " msg_id=" << str(doc, "msg_id");
  if (doc.HasMember("released") && doc["released"].IsBool()) {
    std::cout << " released=" << (doc["released"].GetBool() ? "yes" : "no");
  }
  std::cout << '\n';
}

}  // namespace

int approveCommand(const ClientOptions& client, const std::string& id, const std::string& approver,
                   const std::string& reason, const std::string& job_hash) {
  detail::JsonObjectWriter w;
  w.field("id", id).field("approver", approver).optional("reason", reason).optional("job_hash", job_hash);
  return request(client, "approve", w.finish(), printStatus);
}

int rejectCommand(const ClientOptions& client, const std::string& id, const std::string& approver,
                  const std::string& reason) {
  detail::JsonObjectWriter w;
  w.field("id", id).field("approver", approver).optional("reason", reason);
  return request(client, "reject", w.finish(), printStatus);
}

int showCommand(const ClientOptions& client, const std::string& id) {
  detail::JsonObjectWriter w;
  w.field("id", id);
  return request(client, "get", w.finish(), [](const rapidjson::Document& doc) {
    const auto it = doc.FindMember("record");
    if (it == doc.MemberEnd() || !it->value.IsObject()) return;
    const rapidjson::Value& r = it->value;
    for (const char* field : {"id", "state", "topic", "subject", "target", "rule", "policy_snapshot",
                              "job_hash", "created_at", "expires_at", "decided_by", "decided_at",
                              "reason", "released_at", "release_msg_id"}) {
      const std::string value = str(r, field);
      if (!value.empty()) std::printf("%-16s %s\n", field, value.c_str());
    }
    std::string payload = str(r, "payload");
    if (str(r, "payload_encoding") == "json") {
      rapidjson::Document parsed;
      parsed.Parse(payload.data(), payload.size());
      if (!parsed.HasParseError()) {
        rapidjson::StringBuffer buffer;
        rapidjson::PrettyWriter<rapidjson::StringBuffer> pretty(buffer);
        parsed.Accept(pretty);
        payload = buffer.GetString();
      }
    } else {
      payload = "(base64) " + payload;
    }
    std::printf("payload\n%s\n", payload.c_str());
  });
}

int pendingCommand(const ClientOptions& client, const std::string& state, int limit) {
  detail::JsonObjectWriter w;
  if (state != "all") w.field("state", state);
  w.field("limit", limit);
  return request(client, "list", w.finish(), [](const rapidjson::Document& doc) {
    const auto it = doc.FindMember("items");
    if (it == doc.MemberEnd() || !it->value.IsArray()) return;
    std::printf("%-40s %-10s %-32s %-28s %s\n", "ID", "STATE", "TOPIC", "RULE", "CREATED");
    for (const auto& item : it->value.GetArray()) {
      std::printf("%-40s %-10s %-32s %-28s %s\n", str(item, "id").c_str(), str(item, "state").c_str(),
                  str(item, "topic").c_str(), str(item, "rule").c_str(), str(item, "created_at").c_str());
    }
  });
}

}  // namespace countersign::cli
