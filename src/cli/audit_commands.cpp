// `countersign audit ID` and `countersign audit verify`: read the audit stream and check its
// hash chains and their signatures (docs/audit.md).
#include <nats/nats.h>
#include <rapidjson/document.h>

#include <algorithm>
#include <functional>
#include <iostream>
#include <map>
#include <optional>
#include <set>
#include <vector>

#include "client.hpp"
#include "core/json_writer.hpp"
#include "countersign/events.hpp"
#include "countersign/json.hpp"
#include "countersign/nkeys.hpp"
#include "nats/audit_reader.hpp"
#include "output.hpp"

namespace countersign::cli {
namespace {

struct StoredEvent {
  std::uint64_t stream_seq = 0;
  std::string body;
  std::optional<std::string> signature;  // Countersign-Event-Signature
  std::optional<std::string> key;        // Countersign-Event-Key
};

// Why the stream cannot be read, printed; the exit code for it. A request the server refused
// (the user may not use the JetStream API on this stream) says "permission denied", not Timeout.
int cannotRead(natsio::Connection& connection, natsStatus status, const std::string& subject, const Target& target,
               const std::string& what) {
  if (status == NATS_NOT_FOUND) {
    std::cerr << "countersign: " << what << ": " << natsStatus_GetText(status) << '\n';
    return kExitUnreachable;
  }
  return reportNoAnswer(connection.raw(), status, subject, target,
                        "is JetStream enabled, and may this user read " + target.audit_stream + "?");
}

// Calls `visit` for every message of the stream, oldest first. Returns kExitOk, or the exit code
// when the stream cannot be read (the reason is printed).
int forEachEvent(natsio::Connection& connection, const Target& target, int timeout_ms,
                 const std::function<void(const StoredEvent&)>& visit, std::uint64_t from = 0) {
  const std::string& stream = target.audit_stream;
  jsOptions wait;  // each JetStream request waits --timeout-ms
  jsOptions_Init(&wait);
  wait.Wait = timeout_ms;
  jsStreamInfo* info = nullptr;
  jsErrCode code = static_cast<jsErrCode>(0);
  natsStatus status = js_GetStreamInfo(&info, connection.js(), stream.c_str(), &wait, &code);
  if (status != NATS_OK) {
    return cannotRead(connection, status, "$JS.API.STREAM.INFO." + stream, target, "audit stream " + stream);
  }
  const std::uint64_t first = info->State.FirstSeq;
  const std::uint64_t last = info->State.LastSeq;
  const std::uint64_t count = info->State.Msgs;
  jsStreamInfo_Destroy(info);
  if (count == 0) return kExitOk;
  for (std::uint64_t seq = std::max(first, from); seq <= last; ++seq) {
    natsMsg* msg = nullptr;
    status = js_GetMsg(&msg, connection.js(), stream.c_str(), seq, &wait, &code);
    if (status == NATS_NOT_FOUND) continue;
    if (status != NATS_OK) {
      return cannotRead(connection, status, "$JS.API.STREAM.MSG.GET." + stream, target,
                        "reading " + stream + " #" + std::to_string(seq));
    }
    visit(StoredEvent{seq, std::string(natsMsg_GetData(msg), static_cast<std::size_t>(natsMsg_GetDataLength(msg))),
                      natsio::messageHeader(msg, kEventSignatureHeader), natsio::messageHeader(msg, kEventKeyHeader)});
    natsMsg_Destroy(msg);
  }
  return kExitOk;
}

std::string str(const rapidjson::Value& obj, const char* name) {
  const auto it = obj.FindMember(name);
  return it != obj.MemberEnd() && it->value.IsString() ? it->value.GetString() : "";
}

const std::string* orNull(const std::optional<std::string>& value) { return value ? &*value : nullptr; }

}  // namespace

std::optional<EventVerifier> trustedEventKeys(const std::vector<std::string>& given, const Target& target) {
  EventVerifier keys;
  for (const auto& text : given) {
    auto key = nkeys::parsePublicKey(text);
    if (!key) {
      std::cerr << "countersign: --key " << text << ": " << key.error().message << '\n';
      return std::nullopt;
    }
    keys.trust(*key);
  }
  if (!target.receipt_seed_file.empty()) {
    if (auto seed = nkeys::readSeedFile(target.receipt_seed_file)) keys.trust(nkeys::publicKeyOf(*seed));
  }
  return keys;
}

int auditCommand(const ClientOptions& options, const std::string& id, const AuditVerifyOptions& keys) {
  const auto target = resolveTarget(options);
  if (!target) return kExitUsage;
  const auto trusted = trustedEventKeys(keys.keys, *target);
  if (!trusted) return kExitUsage;
  if (trusted->empty()) {
    std::cerr << "countersign: no countersign public key to check the events' signatures with: they are shown "
                 "as not_checked (give --key U..., or --config naming a config whose receipts.seed_file can be read)\n";
  }
  auto connection = connectTo(*target);
  if (!connection) return kExitUnreachable;
  int found = 0;
  int doubtful = 0;  // events not verified
  Table table({"SIGNATURE", "AT", "EVENT", "ACTOR", "REASON"});
  const int read = forEachEvent(*connection, *target, options.timeout_ms, [&](const StoredEvent& e) {
    rapidjson::Document doc;
    doc.Parse(e.body.data(), e.body.size());
    if (doc.HasParseError() || !doc.IsObject() || str(doc, "approval_id") != id) return;
    ++found;
    const EventOrigin origin = trusted->check(e.body, orNull(e.signature), orNull(e.key));
    if (origin != EventOrigin::verified) ++doubtful;
    if (options.json) {
      // Each event as stored, with signature_check and stream_seq added; a body that is not
      // strict JSON is printed as a string under "body".
      if (auto marked = markedEvent(e.body, origin, e.stream_seq)) {
        std::cout << *marked << '\n';
      } else {
        detail::JsonObjectWriter w;
        w.field("body", e.body).field("signature_check", toString(origin)).field("stream_seq", e.stream_seq);
        std::cout << w.finish() << '\n';
      }
    } else {
      table.row({std::string(toString(origin)), str(doc, "at"), str(doc, "event"), str(doc, "actor"), str(doc, "reason")});
    }
  });
  if (read != kExitOk) return read;
  if (!options.json && found > 0) table.print(std::cout);
  if (found == 0) {
    std::cerr << "countersign: no events for " << id << " in " << target->audit_stream << '\n';
    return kExitRefused;
  }
  if (doubtful > 0 && !trusted->empty()) {
    std::cerr << "countersign: " << doubtful << " of " << found << " events of " << id
              << " are not verified: no known countersign signed them as they are (forged, altered, or written "
                 "before events were signed)\n";
  }
  return kExitOk;
}

namespace {

std::string seqList(const std::vector<std::uint64_t>& seqs, std::size_t at_most) {
  std::string out;
  for (std::size_t i = 0; i < seqs.size() && i < at_most; ++i) {
    out += (i == 0 ? "#" : ", #") + std::to_string(seqs[i]);
  }
  if (seqs.size() > at_most) out += " and " + std::to_string(seqs.size() - at_most) + " more";
  return out;
}

}  // namespace

int auditVerifyCommand(const ClientOptions& options, const AuditVerifyOptions& verify) {
  const auto target = resolveTarget(options);
  if (!target) return kExitUsage;
  const auto trusted = trustedEventKeys(verify.keys, *target);
  if (!trusted) return kExitUsage;
  if (trusted->empty()) {
    std::cerr << "countersign: audit verify needs countersign's public key: --key U... (`countersign keys show` "
                 "prints it), or --config naming a config whose receipts.seed_file can be read\n";
    return kExitUsage;
  }
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
  std::vector<std::uint64_t> foreign;  // stream sequences of messages that are not countersign events
  std::size_t events = 0;
  const int read = forEachEvent(*connection, *target, options.timeout_ms, [&](const StoredEvent& e) {
    ++events;
    rapidjson::Document doc;
    doc.Parse(e.body.data(), e.body.size());
    const auto where = "stream #" + std::to_string(e.stream_seq);
    const auto seq = doc.HasParseError() || !doc.IsObject() ? rapidjson::Value::ConstMemberIterator() : doc.FindMember("seq");
    const std::string chain = doc.HasParseError() || !doc.IsObject() ? std::string() : str(doc, "chain");
    if (chain.empty() || seq == doc.MemberEnd() || !seq->value.IsUint64()) {
      // Not JSON, or no place in a chain: it does not claim to be countersign's. The stream
      // refuses deletes, so it is reported, not held against the trail.
      foreign.push_back(e.stream_seq);
      return;
    }
    const std::string at = where + " (chain " + chain + " seq " + std::to_string(seq->value.GetUint64()) + ")";
    switch (trusted->check(e.body, orNull(e.signature), orNull(e.key))) {
      case EventOrigin::verified:
        break;
      case EventOrigin::unsigned_event:
        problems.push_back(at + ": unsigned: not made by a known countersign (forged, or written before events were signed: see --from)");
        return;
      case EventOrigin::unknown_key:
      case EventOrigin::not_checked:
        problems.push_back(at + ": signed by an unknown key " + *e.key);
        return;
      case EventOrigin::bad_signature:
        problems.push_back(at + ": bad signature (the event was altered, or the signature forged)");
        return;
    }
    chains[chain].push_back(Link{seq->value.GetUint64(), str(doc, "prev"),
                                 "sha256:" + json::sha256Hex(e.body), e.stream_seq});
  }, verify.from);
  if (read != kExitOk) return read;
  for (auto& [chain, links] : chains) {
    std::sort(links.begin(), links.end(), [](const Link& a, const Link& b) { return a.seq < b.seq; });
    // From a stream sequence on, a chain may begin before it: its first event here is not seq 1.
    const std::uint64_t first = verify.from > 0 ? links.front().seq : 1;
    for (std::size_t i = 0; i < links.size(); ++i) {
      const Link& link = links[i];
      const std::string where = "chain " + chain + " seq " + std::to_string(link.seq) + " (stream #" +
                                std::to_string(link.stream_seq) + ")";
      if (link.seq != first + i) {
        problems.push_back(where + (link.seq < first + i ? ": seq appears twice" : ": events before it are missing"));
        break;
      }
      if (i == 0 && link.seq != 1) continue;  // its predecessor is before --from
      const std::string expected_prev = i == 0 ? "" : links[i - 1].hash;
      if (link.prev != expected_prev) {
        problems.push_back(where + ": prev does not match the previous event (altered, inserted or removed)");
        break;
      }
    }
  }
  if (options.json) {
    // {"ok", "events", "chains", "stream", "keys", "foreign", "foreign_seqs", "problems": [...]}
    detail::JsonObjectWriter w;
    w.field("ok", problems.empty())
        .field("events", static_cast<std::uint64_t>(events))
        .field("chains", static_cast<std::uint64_t>(chains.size()))
        .field("stream", target->audit_stream);
    w.strings("keys", trusted->keys());
    w.field("foreign", static_cast<std::uint64_t>(foreign.size()));
    w.key("foreign_seqs");
    w.writer().StartArray();
    for (const auto seq : foreign) w.writer().Uint64(seq);
    w.writer().EndArray();
    w.strings("problems", problems);
    std::cout << w.finish() << '\n';
    return problems.empty() ? kExitOk : kExitRefused;
  }
  if (!foreign.empty()) {
    std::cout << "audit: " << foreign.size() << " foreign message(s) on the stream, not countersign events (ignored): "
              << seqList(foreign, 20) << '\n';
  }
  if (!problems.empty()) {
    for (const auto& problem : problems) std::cerr << "audit: " << problem << '\n';
    std::cerr << "audit verify FAILED: " << problems.size() << " problem(s) in " << events << " messages\n";
    return kExitRefused;
  }
  std::cout << "audit verify ok: " << events - foreign.size() << " signed events in " << chains.size()
            << " chain(s), stream " << target->audit_stream << '\n';
  return kExitOk;
}

}  // namespace countersign::cli
