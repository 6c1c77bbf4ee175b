// `countersign audit ID` and `countersign audit verify`: read the audit stream and check its
// hash chains (docs/audit.md).
#include <nats/nats.h>
#include <rapidjson/document.h>

#include <algorithm>
#include <cstdio>
#include <functional>
#include <iostream>
#include <map>
#include <vector>

#include "client.hpp"
#include "core/json_writer.hpp"
#include "countersign/json.hpp"

namespace countersign::cli {
namespace {

struct StoredEvent {
  std::uint64_t stream_seq = 0;
  std::string body;
};

// Calls `visit` for every message of the stream, oldest first. False when the stream cannot be
// read (the reason is printed).
bool forEachEvent(natsio::Connection& connection, const std::string& stream,
                  const std::function<void(const StoredEvent&)>& visit) {
  jsStreamInfo* info = nullptr;
  jsErrCode code = static_cast<jsErrCode>(0);
  natsStatus status = js_GetStreamInfo(&info, connection.js(), stream.c_str(), nullptr, &code);
  if (status != NATS_OK) {
    std::cerr << "countersign: audit stream " << stream << ": " << natsStatus_GetText(status) << '\n';
    return false;
  }
  const std::uint64_t first = info->State.FirstSeq;
  const std::uint64_t last = info->State.LastSeq;
  const std::uint64_t count = info->State.Msgs;
  jsStreamInfo_Destroy(info);
  if (count == 0) return true;
  for (std::uint64_t seq = first; seq <= last; ++seq) {
    natsMsg* msg = nullptr;
    status = js_GetMsg(&msg, connection.js(), stream.c_str(), seq, nullptr, &code);
    if (status == NATS_NOT_FOUND) continue;
    if (status != NATS_OK) {
      std::cerr << "countersign: reading " << stream << " #" << seq << ": " << natsStatus_GetText(status) << '\n';
      return false;
    }
    visit(StoredEvent{seq, std::string(natsMsg_GetData(msg), static_cast<std::size_t>(natsMsg_GetDataLength(msg)))});
    natsMsg_Destroy(msg);
  }
  return true;
}

std::string str(const rapidjson::Value& obj, const char* name) {
  const auto it = obj.FindMember(name);
  return it != obj.MemberEnd() && it->value.IsString() ? it->value.GetString() : "";
}

}  // namespace

int auditCommand(const ClientOptions& options, const std::string& id) {
  const auto target = resolveTarget(options);
  if (!target) return kExitUsage;
  auto connection = connectTo(*target);
  if (!connection) return kExitUnreachable;
  int found = 0;
  if (!options.json) std::printf("%-24s %-16s %-20s %s\n", "AT", "EVENT", "ACTOR", "REASON");
  const bool ok = forEachEvent(*connection, target->audit_stream, [&](const StoredEvent& e) {
    rapidjson::Document doc;
    doc.Parse(e.body.data(), e.body.size());
    if (doc.HasParseError() || !doc.IsObject() || str(doc, "approval_id") != id) return;
    ++found;
    if (options.json) {
      std::cout << e.body << '\n';
    } else {
      std::printf("%-24s %-16s %-20s %s\n", str(doc, "at").c_str(), str(doc, "event").c_str(),
                  str(doc, "actor").c_str(), str(doc, "reason").c_str());
    }
  });
  if (!ok) return kExitUnreachable;
  if (found == 0) {
    std::cerr << "countersign: no events for " << id << " in " << target->audit_stream << '\n';
    return kExitRefused;
  }
  return kExitOk;
}

int auditVerifyCommand(const ClientOptions& options) {
  const auto target = resolveTarget(options);
  if (!target) return kExitUsage;
  auto connection = connectTo(*target);
  if (!connection) return kExitUnreachable;

  struct Link {
    std::uint64_t seq;
    std::string prev;
    std::string hash;
    std::uint64_t stream_seq;
  };
  std::map<std::string, std::vector<Link>> chains;
  std::vector<std::string> problems;
  std::size_t events = 0;
  const bool ok = forEachEvent(*connection, target->audit_stream, [&](const StoredEvent& e) {
    ++events;
    rapidjson::Document doc;
    doc.Parse(e.body.data(), e.body.size());
    const auto where = "stream #" + std::to_string(e.stream_seq);
    if (doc.HasParseError() || !doc.IsObject()) {
      problems.push_back(where + ": not a JSON event");
      return;
    }
    const auto seq = doc.FindMember("seq");
    const std::string chain = str(doc, "chain");
    if (chain.empty() || seq == doc.MemberEnd() || !seq->value.IsUint64()) {
      problems.push_back(where + ": event carries no chain (not written by countersign's audit)");
      return;
    }
    chains[chain].push_back(Link{seq->value.GetUint64(), str(doc, "prev"),
                                 "sha256:" + json::sha256Hex(e.body), e.stream_seq});
  });
  if (!ok) return kExitUnreachable;
  for (auto& [chain, links] : chains) {
    std::sort(links.begin(), links.end(), [](const Link& a, const Link& b) { return a.seq < b.seq; });
    for (std::size_t i = 0; i < links.size(); ++i) {
      const Link& link = links[i];
      const std::string where = "chain " + chain + " seq " + std::to_string(link.seq) + " (stream #" +
                                std::to_string(link.stream_seq) + ")";
      if (link.seq != i + 1) {
        problems.push_back(where + (link.seq <= i ? ": seq appears twice" : ": events before it are missing"));
        break;
      }
      const std::string expected_prev = i == 0 ? "" : links[i - 1].hash;
      if (link.prev != expected_prev) {
        problems.push_back(where + ": prev does not match the previous event (altered, inserted or removed)");
        break;
      }
    }
  }
  if (options.json) {
    // {"ok", "events", "chains", "stream", "problems": [...]}
    detail::JsonObjectWriter w;
    w.field("ok", problems.empty())
        .field("events", static_cast<std::uint64_t>(events))
        .field("chains", static_cast<std::uint64_t>(chains.size()))
        .field("stream", target->audit_stream);
    w.key("problems");
    w.writer().StartArray();
    for (const auto& problem : problems) w.writer().String(problem.data(), static_cast<rapidjson::SizeType>(problem.size()));
    w.writer().EndArray();
    std::cout << w.finish() << '\n';
    return problems.empty() ? kExitOk : kExitRefused;
  }
  if (!problems.empty()) {
    for (const auto& problem : problems) std::cerr << "audit: " << problem << '\n';
    std::cerr << "audit verify FAILED: " << problems.size() << " problem(s) in " << events << " events\n";
    return kExitRefused;
  }
  std::cout << "audit verify ok: " << events << " events in " << chains.size() << " chain(s), stream "
            << target->audit_stream << '\n';
  return kExitOk;
}

}  // namespace countersign::cli
