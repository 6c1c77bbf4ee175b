// approve / reject / show / pending: a thin client of the control subjects (docs/protocol.md).
#include <nats/nats.h>
#include <rapidjson/document.h>
#include <rapidjson/prettywriter.h>
#include <rapidjson/stringbuffer.h>

#include <chrono>
#include <cstdio>
#include <expected>
#include <cstdlib>
#include <filesystem>
#include <iostream>

#include "client.hpp"
#include "output.hpp"
#include "commands.hpp"
#include "countersign/config.hpp"
#include "countersign/control_request.hpp"
#include "countersign/clock.hpp"
#include "countersign/json.hpp"
#include "countersign/nkeys.hpp"
#include "nats/connection.hpp"
#include "core/json_writer.hpp"

namespace countersign::cli {
namespace {

// Sends one control request and returns the answer's text, or the exit code.
std::expected<std::string, int> exchange(const ClientOptions& options, std::string_view op, const std::string& body) {
  Target target;
  int exit_code = kExitOk;
  auto connection = connectFor(options, target, exit_code);
  if (!connection) return std::unexpected(exit_code);
  const std::string subject = target.prefix + ".control." + std::string(op);
  natsMsg* reply = nullptr;
  const natsStatus status = natsConnection_Request(&reply, connection->raw(), subject.c_str(),
                                                   body.data(), static_cast<int>(body.size()),
                                                   options.timeout_ms);
  if (status != NATS_OK) {
    return std::unexpected(reportNoAnswer(connection->raw(), status, subject, target, "is countersign running?"));
  }
  std::string text(natsMsg_GetData(reply), static_cast<std::size_t>(natsMsg_GetDataLength(reply)));
  natsMsg_Destroy(reply);
  return text;
}

// Sends one control request; prints the answer; returns the exit code.
int request(const ClientOptions& options, std::string_view op, const std::string& body,
            const std::function<void(const rapidjson::Document&)>& print_human) {
  auto answered = exchange(options, op, body);
  if (!answered) return answered.error();
  const std::string& text = *answered;
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
    const std::string status_word = doc.HasMember("status") && doc["status"].IsString() ? doc["status"].GetString() : "error";
    std::string reason;
    std::cerr << "countersign: " << status_word << " (" << code << ")";
    for (const char* field : {"reason", "field", "approval_id"}) {
      if (doc.HasMember(field) && doc[field].IsString()) {
        std::cerr << ' ' << field << '=' << doc[field].GetString();
        if (std::string_view(field) == "reason") reason = doc[field].GetString();
      }
    }
    std::cerr << '\n';
    std::string id;
    rapidjson::Document request_doc;
    request_doc.Parse(body.data(), body.size());
    if (!request_doc.HasParseError() && request_doc.IsObject() && request_doc.HasMember("id") && request_doc["id"].IsString()) {
      id = request_doc["id"].GetString();
    }
    if (const std::string next = nextStep(status_word, reason, id); !next.empty()) std::cerr << next << '\n';
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

// "3m12s"-style durations for tables; "-" when unknown.
std::string humanDuration(std::chrono::seconds s) {
  if (s.count() < 0) return "overdue";
  const long long total = s.count();
  char buf[32];
  if (total < 60) {
    std::snprintf(buf, sizeof buf, "%llds", total);
  } else if (total < 3600) {
    std::snprintf(buf, sizeof buf, "%lldm%02llds", total / 60, total % 60);
  } else if (total < 86400) {
    std::snprintf(buf, sizeof buf, "%lldh%02lldm", total / 3600, (total % 3600) / 60);
  } else {
    std::snprintf(buf, sizeof buf, "%lldd%02lldh", total / 86400, (total % 86400) / 3600);
  }
  return buf;
}

std::string since(const std::string& rfc3339, bool until) {
  std::chrono::system_clock::time_point t;
  if (rfc3339.empty() || !parseRfc3339(rfc3339, t)) return "-";
  const auto now = std::chrono::system_clock::now();
  return humanDuration(std::chrono::duration_cast<std::chrono::seconds>(until ? t - now : now - t));
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

namespace {

// A signed approve/reject: the record is fetched first, so that the signature binds the job
// hash and policy snapshot it holds (and, with --job-hash, the hash the reviewer saw must be it).
std::expected<std::string, int> signedBody(const ClientOptions& client, std::string_view action,
                                           const std::string& id, const std::string& approver,
                                           const std::string& reason, const std::string& job_hash,
                                           const std::string& key_file) {
  auto seed = nkeys::readSeedFile(key_file);
  if (!seed) {
    std::cerr << "countersign: " << seed.error().message << '\n';
    return std::unexpected(kExitUsage);
  }
  detail::JsonObjectWriter get;
  get.field("id", id);
  auto answered = exchange(client, "get", get.finish());
  if (!answered) return std::unexpected(answered.error());
  auto doc = json::parseStrict(*answered);
  if (!doc || !doc->IsObject() || !doc->HasMember("record") || !(*doc)["record"].IsObject()) {
    std::cerr << "countersign: cannot read approval " << id << ": " << *answered << '\n';
    return std::unexpected(kExitRefused);
  }
  const rapidjson::Value& record = (*doc)["record"];
  const std::string hash = str(record, "job_hash");
  if (!job_hash.empty() && job_hash != hash) {
    std::cerr << "countersign: approval " << id << " holds job hash " << hash << ", not the one given\n";
    return std::unexpected(kExitRefused);
  }
  const nkeys::Signer signer(*seed);
  const ControlRequestFields fields{.action = std::string(action),
                                    .id = str(record, "id"),
                                    .approver = approver,
                                    .job_hash = hash,
                                    .policy_snapshot = str(record, "policy_snapshot"),
                                    .at = formatRfc3339(std::chrono::system_clock::now()),
                                    .reason = reason,
                                    .via = {}};
  return signedControlRequest(fields, signer);
}

int decideCommand(const ClientOptions& client, std::string_view action, const std::string& id,
                  const std::string& approver, const std::string& reason, const std::string& job_hash,
                  const std::string& key_file) {
  if (!key_file.empty()) {
    auto body = signedBody(client, action, id, approver, reason, job_hash, key_file);
    if (!body) return body.error();
    return request(client, action, *body, printStatus);
  }
  detail::JsonObjectWriter w;
  w.field("id", id).field("approver", approver).optional("reason", reason).optional("job_hash", job_hash);
  return request(client, action, w.finish(), printStatus);
}

}  // namespace

int approveCommand(const ClientOptions& client, const std::string& id, const std::string& approver,
                   const std::string& reason, const std::string& job_hash, const std::string& key_file) {
  return decideCommand(client, "approve", id, approver, reason, job_hash, key_file);
}

int rejectCommand(const ClientOptions& client, const std::string& id, const std::string& approver,
                  const std::string& reason, const std::string& key_file) {
  return decideCommand(client, "reject", id, approver, reason, {}, key_file);
}

int showCommand(const ClientOptions& client, const std::string& id) {
  detail::JsonObjectWriter w;
  w.field("id", id);
  return request(client, "get", w.finish(), [](const rapidjson::Document& doc) {
    const auto it = doc.FindMember("record");
    if (it == doc.MemberEnd() || !it->value.IsObject()) return;
    const rapidjson::Value& r = it->value;
    for (const char* field : {"id", "job_id", "state", "topic", "subject", "target", "rule", "policy_snapshot",
                              "job_hash", "created_at", "expires_at", "decided_by", "decided_at",
                              "reason", "released_at", "release_msg_id"}) {
      const std::string value = str(r, field);
      if (!value.empty()) std::printf("%-16s %s\n", field, value.c_str());
    }
    const auto list = [&](const char* name) {
      std::string out;
      if (const auto found = r.FindMember(name); found != r.MemberEnd() && found->value.IsArray()) {
        for (const auto& v : found->value.GetArray()) {
          if (v.IsString()) out += (out.empty() ? "" : ", ") + std::string(v.GetString());
        }
      }
      return out;
    };
    if (const std::string requester = str(r, "requester"); !requester.empty()) {
      std::printf("%-16s %s\n", "requester", requester.c_str());
    }
    const std::string approvers = list("approvers");
    std::printf("%-16s %s\n", "approvers", approvers.empty() ? "(anyone allowed)" : approvers.c_str());
    if (doc.HasMember("votes") && doc["votes"].IsInt() && doc.HasMember("quorum") && doc["quorum"].IsInt()) {
      std::string voters;
      if (doc.HasMember("voters") && doc["voters"].IsArray()) {
        for (const auto& v : doc["voters"].GetArray()) {
          if (v.IsString()) voters += (voters.empty() ? "" : ", ") + std::string(v.GetString());
        }
      }
      std::printf("%-16s %d of %d%s%s\n", "votes", doc["votes"].GetInt(), doc["quorum"].GetInt(),
                  voters.empty() ? "" : ": ", voters.c_str());
    }
    if (const auto votes = r.FindMember("approvals"); votes != r.MemberEnd() && votes->value.IsArray()) {
      for (const auto& vote : votes->value.GetArray()) {
        std::printf("%-16s %s at %s%s%s\n", "approval", str(vote, "approver").c_str(), str(vote, "at").c_str(),
                    str(vote, "reason").empty() ? "" : ": ", str(vote, "reason").c_str());
      }
    }
    if (doc.HasMember("payload_redacted")) std::printf("%-16s %s\n", "payload", "(redacted as configured)");
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

int pendingCommand(const ClientOptions& client, const std::string& state, int limit,
                   const std::string& after) {
  detail::JsonObjectWriter w;
  if (state != "all") w.field("state", state);
  w.field("limit", limit).optional("after", after);
  return request(client, "list", w.finish(), [](const rapidjson::Document& doc) {
    const auto it = doc.FindMember("items");
    if (it == doc.MemberEnd() || !it->value.IsArray()) return;
    Table table({"ID", "JOB ID", "STATE", "TOPIC", "RULE", "REQUESTER", "VOTES", "AGE", "EXPIRES IN"});
    for (const auto& item : it->value.GetArray()) {
      const auto number = [&](const char* name) {
        return item.HasMember(name) && item[name].IsInt() ? item[name].GetInt() : 0;
      };
      const std::string votes = std::to_string(number("votes")) + "/" + std::to_string(number("quorum"));
      table.row({str(item, "id"), str(item, "job_id"), str(item, "state"), str(item, "topic"), str(item, "rule"),
                 str(item, "requester"), votes, since(str(item, "created_at"), false),
                 since(str(item, "expires_at"), true)});
    }
    table.print(std::cout);
    if (const auto next = doc.FindMember("next_after"); next != doc.MemberEnd() && next->value.IsString()) {
      std::printf("(more: --after %s)\n", next->value.GetString());
    }
  });
}

}  // namespace countersign::cli

namespace countersign::cli {

int releaseCommand(const ClientOptions& client, const std::string& id, const std::string& who,
                   const std::string& mode, const std::string& reason) {
  detail::JsonObjectWriter w;
  w.field("id", id).field("operator", who).field("mode", mode).optional("reason", reason);
  return request(client, "release", w.finish(), printStatus);
}

// What `submit` prints with --json: {"status", "answer", "stream"?, "seq"?}. `answer` is
// countersign's answer (a JSON object), or the worker's reply (JSON when it parses, else a string)
// with status "worker_reply".
namespace {

std::string submitJson(const std::string& status, const std::string& answer, const std::string& ingress) {
  detail::JsonObjectWriter w;
  w.field("status", status);
  if (auto parsed = json::parseStrict(answer)) {
    w.raw("answer", answer);
  } else {
    w.field("answer", answer);
  }
  if (!ingress.empty()) {
    if (auto ack = json::parseStrict(ingress); ack && ack->IsObject()) {
      if (ack->HasMember("stream") && (*ack)["stream"].IsString()) w.field("stream", (*ack)["stream"].GetString());
      if (ack->HasMember("seq") && (*ack)["seq"].IsUint64()) w.field("seq", (*ack)["seq"].GetUint64());
    }
  }
  return w.finish();
}

std::string headerOf(natsMsg* msg, const char* name) {
  const char* value = nullptr;
  return natsMsgHeader_Get(msg, name, &value) == NATS_OK && value != nullptr ? value : "";
}

std::string dataOf(natsMsg* msg) {
  return std::string(natsMsg_GetData(msg), static_cast<std::size_t>(natsMsg_GetDataLength(msg)));
}

}  // namespace

int submitCommand(const ClientOptions& options, const std::string& subject, const std::string& payload,
                  const std::vector<std::string>& headers) {
  Target target;
  int exit_code = kExitOk;
  auto connection = connectFor(options, target, exit_code);
  if (!connection) return exit_code;
  natsMsg* msg = nullptr;
  if (natsMsg_Create(&msg, subject.c_str(), nullptr, payload.data(), static_cast<int>(payload.size())) != NATS_OK) {
    std::cerr << "countersign: not a valid subject: " << subject << '\n';
    return kExitUsage;
  }
  std::unique_ptr<natsMsg, decltype(&natsMsg_Destroy)> msg_guard(msg, &natsMsg_Destroy);
  for (const auto& header : headers) {
    const auto eq = header.find('=');
    if (eq == std::string::npos || eq == 0) {
      std::cerr << "countersign: --header: expected K=V, got \"" << header << "\"\n";
      return kExitUsage;
    }
    natsMsgHeader_Add(msg, header.substr(0, eq).c_str(), header.substr(eq + 1).c_str());
  }
  // On a route in `mode: jetstream` the first answer is the ingress stream's PubAck; countersign
  // answers on Countersign-Reply-To once it has decided. On a core route that header is unused.
  natsInbox* decision_inbox = nullptr;
  natsInbox_Create(&decision_inbox);
  std::unique_ptr<natsInbox, decltype(&natsInbox_Destroy)> inbox_guard(decision_inbox, &natsInbox_Destroy);
  natsSubscription* decision_sub = nullptr;
  if (natsConnection_SubscribeSync(&decision_sub, connection->raw(), decision_inbox) != NATS_OK) {
    std::cerr << "countersign: cannot subscribe to a reply inbox\n";
    return kExitUnreachable;
  }
  const RetiringSubscription sub_guard(*connection, decision_sub);  // a late decision may still come
  natsMsgHeader_Set(msg, "Countersign-Reply-To", decision_inbox);

  natsMsg* reply = nullptr;
  const natsStatus status = natsConnection_RequestMsg(&reply, connection->raw(), msg, options.timeout_ms);
  if (status != NATS_OK) {
    return reportNoAnswer(connection->raw(), status, subject, target,
                          "is countersign running, and is a worker subscribed for allowed jobs?");
  }
  std::string status_word = headerOf(reply, "Countersign-Status");
  std::string answer = dataOf(reply);
  std::string ingress;
  natsMsg_Destroy(reply);
  if (status_word.empty()) {
    auto ack = json::parseStrict(answer);
    const bool is_puback = ack && ack->IsObject() && ack->HasMember("stream") && ack->HasMember("seq");
    if (is_puback) {
      ingress = answer;
      natsMsg* decision = nullptr;
      const natsStatus waited = natsSubscription_NextMsg(&decision, decision_sub, options.timeout_ms);
      if (waited != NATS_OK) {
        std::cerr << "countersign: the job is stored in stream " << (*ack)["stream"].GetString()
                  << " but no decision came within " << options.timeout_ms
                  << " ms: is countersign running for this route?\n";
        return kExitUnreachable;
      }
      status_word = headerOf(decision, "Countersign-Status");
      answer = dataOf(decision);
      natsMsg_Destroy(decision);
    } else {
      status_word = "worker_reply";
    }
  }
  if (options.json) {
    std::cout << submitJson(status_word, answer, ingress) << '\n';
  } else {
    std::cout << answer << '\n';
  }
  const bool refused = status_word == "denied" || status_word == "throttled" || status_word == "conflict" ||
                       status_word == "too_large" || status_word == "unavailable";
  return refused ? kExitRefused : kExitOk;
}

}  // namespace countersign::cli
