#include "countersign/record.hpp"

#include <rapidjson/document.h>

#include <string_view>
#include <unordered_map>
#include <vector>

#include "countersign/json.hpp"
#include "json_writer.hpp"

namespace countersign {
namespace {

using detail::JsonObjectWriter;

// Reads an optional string member; false when present with another type.
bool readString(const rapidjson::Value& obj, const char* name, std::string& out) {
  const auto it = obj.FindMember(name);
  if (it == obj.MemberEnd() || it->value.IsNull()) return true;
  if (!it->value.IsString()) return false;
  out.assign(it->value.GetString(), it->value.GetStringLength());
  return true;
}

Result<rapidjson::Document> parseObject(std::string_view json, std::string_view what) {
  rapidjson::Document doc;
  doc.Parse(json.data(), json.size());
  if (doc.HasParseError() || !doc.IsObject()) {
    return fail(Errc::parse_error, std::string(what) + ": not a JSON object");
  }
  return doc;
}

void writeVotes(JsonObjectWriter& w, std::string_view name, const std::vector<ApprovalVote>& votes) {
  auto& out = w.writer();
  w.key(name);
  out.StartArray();
  for (const auto& vote : votes) {
    out.StartObject();
    w.field("approver", vote.approver).field("at", vote.at).field("reason", vote.reason);
    if (!vote.via.empty()) w.field("via", vote.via);
    out.EndObject();
  }
  out.EndArray();
}

bool readStrings(const rapidjson::Value& obj, const char* name, std::vector<std::string>& out) {
  const auto it = obj.FindMember(name);
  if (it == obj.MemberEnd() || it->value.IsNull()) return true;
  if (!it->value.IsArray()) return false;
  for (const auto& v : it->value.GetArray()) {
    if (!v.IsString()) return false;
    out.emplace_back(v.GetString(), v.GetStringLength());
  }
  return true;
}

bool readVotes(const rapidjson::Value& obj, const char* name, std::vector<ApprovalVote>& out) {
  const auto it = obj.FindMember(name);
  if (it == obj.MemberEnd() || it->value.IsNull()) return true;
  if (!it->value.IsArray()) return false;
  for (const auto& v : it->value.GetArray()) {
    if (!v.IsObject()) return false;
    ApprovalVote vote;
    if (!readString(v, "approver", vote.approver) || !readString(v, "at", vote.at) ||
        !readString(v, "reason", vote.reason) || !readString(v, "via", vote.via)) {
      return false;
    }
    out.push_back(std::move(vote));
  }
  return true;
}

bool readQuorum(const rapidjson::Value& obj, Quorum& quorum) {
  const auto it = obj.FindMember("quorum");
  if (it == obj.MemberEnd() || it->value.IsNull()) return true;
  if (it->value.IsInt()) {
    quorum.count = it->value.GetInt();
    return quorum.count >= 1;
  }
  if (!it->value.IsObject()) return false;
  for (const auto& m : it->value.GetObject()) {
    if (!m.value.IsInt() || m.value.GetInt() < 1) return false;
    quorum.per_group.emplace(std::string(m.name.GetString(), m.name.GetStringLength()), m.value.GetInt());
  }
  return true;
}

Result<ApprovalRecord> badField(std::string_view field) {
  return fail(Errc::parse_error, "approval record: field '" + std::string(field) + "' has the wrong type or is missing");
}

}  // namespace

std::string_view toString(ApprovalState state) {
  switch (state) {
    case ApprovalState::pending: return "pending";
    case ApprovalState::approved: return "approved";
    case ApprovalState::released: return "released";
    case ApprovalState::rejected: return "rejected";
    case ApprovalState::expired: return "expired";
    case ApprovalState::release_unknown: return "release_unknown";
  }
  return "pending";
}

std::optional<ApprovalState> parseApprovalState(std::string_view text) {
  for (const auto state : {ApprovalState::pending, ApprovalState::approved, ApprovalState::released,
                           ApprovalState::rejected, ApprovalState::expired,
                           ApprovalState::release_unknown}) {
    if (toString(state) == text) return state;
  }
  return std::nullopt;
}

std::string_view toString(FinalDecision decision) {
  switch (decision) {
    case FinalDecision::approved: return "approved";
    case FinalDecision::rejected: return "rejected";
    case FinalDecision::expired: return "expired";
  }
  return "rejected";
}

std::string toJson(const ApprovalRecord& r) {
  JsonObjectWriter w;
  w.field("id", r.id)
      .field("state", toString(r.state))
      .field("route", r.route)
      .field("subject", r.subject)
      .field("target", r.target)
      .field("topic", r.topic);
  auto& out = w.writer();
  w.key("headers");
  out.StartObject();
  // Group values by name, keeping each name's wire order and the first-seen order of names:
  // one pass to number the names, one to chain each value to the next of its name.
  const std::size_t count = r.headers.size();
  constexpr std::size_t kNone = static_cast<std::size_t>(-1);
  std::vector<std::size_t> next(count, kNone);
  std::vector<std::size_t> firsts;
  {
    std::unordered_map<std::string_view, std::size_t> last;  // name -> its latest index so far
    last.reserve(count);
    for (std::size_t i = 0; i < count; ++i) {
      const auto [it, inserted] = last.try_emplace(r.headers[i].first, i);
      if (inserted) {
        firsts.push_back(i);
      } else {
        next[it->second] = i;
        it->second = i;
      }
    }
  }
  for (const std::size_t first : firsts) {
    const std::string& name = r.headers[first].first;
    out.Key(name.data(), static_cast<rapidjson::SizeType>(name.size()));
    out.StartArray();
    for (std::size_t j = first; j != kNone; j = next[j]) {
      const std::string& v = r.headers[j].second;
      out.String(v.data(), static_cast<rapidjson::SizeType>(v.size()));
    }
    out.EndArray();
  }
  out.EndObject();
  if (r.payload_is_json) {
    w.field("payload", r.payload).field("payload_encoding", "json");
  } else {
    w.field("payload", json::base64Encode(r.payload)).field("payload_encoding", "base64");
  }
  w.field("job_id", r.job_id)
      .field("job_hash", r.job_hash)
      .field("policy_snapshot", r.policy_snapshot)
      .field("rule", r.rule)
      .field("requester", r.requester)
      .field("created_at", r.created_at)
      .field("expires_at", r.expires_at)
      .field("on_timeout", r.on_timeout);
  writeVotes(w, "approvals", r.approvals);
  w.strings("approvers", r.approvers);
  w.key("quorum");
  if (r.quorum.per_group.empty()) {
    out.Int(r.quorum.count);
  } else {
    out.StartObject();
    for (const auto& [group, n] : r.quorum.per_group) {
      out.Key(group.data(), static_cast<rapidjson::SizeType>(group.size()));
      out.Int(n);
    }
    out.EndObject();
  }
  w.field("separation_of_duties", r.separation_of_duties);
  w.key("escalations");
  out.StartArray();
  for (const auto& step : r.escalations) {
    out.StartObject();
    out.Key("at");
    out.String(step.at.data(), static_cast<rapidjson::SizeType>(step.at.size()));
    w.strings("approvers", step.approvers);
    out.EndObject();
  }
  out.EndArray();
  writeVotes(w, "votes", r.votes);
  w.field("binding", r.binding);
  w.field("decided_by", r.decided_by)
      .field("decided_at", r.decided_at)
      .field("reason", r.reason)
      .field("released_at", r.released_at)
      .field("release_msg_id", r.release_msg_id)
      .field("replays", r.replays)
      .optional("tag", r.tag);
  return w.finish();
}

Result<ApprovalRecord> parseApprovalRecord(std::string_view json) {
  auto doc = parseObject(json, "approval record");
  if (!doc) return std::unexpected(doc.error());
  const rapidjson::Value& d = *doc;
  ApprovalRecord r;
  std::string state;
  std::string encoding;
  std::string payload;
  struct Field {
    const char* name;
    std::string* out;
  };
  const Field fields[] = {
      {"id", &r.id},
      {"state", &state},
      {"route", &r.route},
      {"subject", &r.subject},
      {"target", &r.target},
      {"topic", &r.topic},
      {"payload", &payload},
      {"payload_encoding", &encoding},
      {"job_id", &r.job_id},
      {"job_hash", &r.job_hash},
      {"policy_snapshot", &r.policy_snapshot},
      {"rule", &r.rule},
      {"requester", &r.requester},
      {"created_at", &r.created_at},
      {"expires_at", &r.expires_at},
      {"on_timeout", &r.on_timeout},
      {"decided_by", &r.decided_by},
      {"decided_at", &r.decided_at},
      {"reason", &r.reason},
      {"released_at", &r.released_at},
      {"release_msg_id", &r.release_msg_id},
      {"tag", &r.tag},
  };
  for (const auto& f : fields) {
    if (!readString(d, f.name, *f.out)) return badField(f.name);
  }
  if (r.id.empty()) return badField("id");
  if (r.on_timeout.empty()) r.on_timeout = "reject";
  if (r.on_timeout != "reject" && r.on_timeout != "allow") return badField("on_timeout");
  const auto parsed_state = parseApprovalState(state);
  if (!parsed_state) return badField("state");
  r.state = *parsed_state;
  if (encoding == "json") {
    r.payload_is_json = true;
    r.payload = std::move(payload);
  } else if (encoding == "base64") {
    auto bytes = json::base64Decode(payload);
    if (!bytes) return badField("payload");
    r.payload = std::move(*bytes);
  } else {
    return badField("payload_encoding");
  }
  if (const auto it = d.FindMember("headers"); it != d.MemberEnd()) {
    if (!it->value.IsObject()) return badField("headers");
    for (const auto& m : it->value.GetObject()) {
      if (!m.value.IsArray()) return badField("headers");
      const std::string name(m.name.GetString(), m.name.GetStringLength());
      for (const auto& v : m.value.GetArray()) {
        if (!v.IsString()) return badField("headers");
        r.headers.emplace_back(name, std::string(v.GetString(), v.GetStringLength()));
      }
    }
  }
  if (!readVotes(d, "approvals", r.approvals)) return badField("approvals");
  if (!readVotes(d, "votes", r.votes)) return badField("votes");
  if (!readStrings(d, "approvers", r.approvers)) return badField("approvers");
  if (!readQuorum(d, r.quorum)) return badField("quorum");
  if (const auto it = d.FindMember("separation_of_duties"); it != d.MemberEnd() && !it->value.IsNull()) {
    if (!it->value.IsBool()) return badField("separation_of_duties");
    r.separation_of_duties = it->value.GetBool();
  }
  if (const auto it = d.FindMember("escalations"); it != d.MemberEnd() && !it->value.IsNull()) {
    if (!it->value.IsArray()) return badField("escalations");
    for (const auto& v : it->value.GetArray()) {
      EscalationRecord step;
      if (!v.IsObject() || !readString(v, "at", step.at) || !readStrings(v, "approvers", step.approvers)) {
        return badField("escalations");
      }
      r.escalations.push_back(std::move(step));
    }
  }
  if (const auto it = d.FindMember("binding"); it != d.MemberEnd() && !it->value.IsNull()) {
    if (!it->value.IsInt() || it->value.GetInt() < 0) return badField("binding");
    r.binding = it->value.GetInt();
  }
  if (const auto it = d.FindMember("replays"); it != d.MemberEnd()) {
    if (!it->value.IsInt()) return badField("replays");
    r.replays = it->value.GetInt();
  }
  return r;
}

std::string toJson(const DecisionRecord& d) {
  JsonObjectWriter w;
  w.field("decision", toString(d.decision))
      .field("by", d.by)
      .field("at", d.at)
      .field("reason", d.reason)
      .field("policy_snapshot", d.policy_snapshot)
      .field("job_hash", d.job_hash)
      .optional("via", d.via)
      .optional("tag", d.tag);
  return w.finish();
}

Result<DecisionRecord> parseDecisionRecord(std::string_view json) {
  auto doc = parseObject(json, "decision");
  if (!doc) return std::unexpected(doc.error());
  DecisionRecord d;
  std::string decision;
  if (!readString(*doc, "decision", decision) || !readString(*doc, "by", d.by) ||
      !readString(*doc, "at", d.at) || !readString(*doc, "reason", d.reason) ||
      !readString(*doc, "policy_snapshot", d.policy_snapshot) ||
      !readString(*doc, "job_hash", d.job_hash) || !readString(*doc, "via", d.via) ||
      !readString(*doc, "tag", d.tag)) {
    return fail(Errc::parse_error, "decision: a field has the wrong type");
  }
  if (decision == "approved") {
    d.decision = FinalDecision::approved;
  } else if (decision == "rejected") {
    d.decision = FinalDecision::rejected;
  } else if (decision == "expired") {
    d.decision = FinalDecision::expired;
  } else {
    return fail(Errc::parse_error, "decision: unknown decision '" + decision + "'");
  }
  return d;
}

std::string toJson(const VoteRecord& v) {
  JsonObjectWriter w;
  w.field("approver", v.approver)
      .field("at", v.at)
      .field("via", v.via)
      .field("reason", v.reason)
      .field("job_hash", v.job_hash)
      .field("policy_snapshot", v.policy_snapshot)
      .field("key", v.key)
      .field("signature", v.signature)
      .optional("tag", v.tag);
  return w.finish();
}

Result<VoteRecord> parseVoteRecord(std::string_view json) {
  auto doc = parseObject(json, "vote");
  if (!doc) return std::unexpected(doc.error());
  VoteRecord v;
  if (!readString(*doc, "approver", v.approver) || !readString(*doc, "at", v.at) ||
      !readString(*doc, "via", v.via) || !readString(*doc, "reason", v.reason) ||
      !readString(*doc, "job_hash", v.job_hash) || !readString(*doc, "policy_snapshot", v.policy_snapshot) ||
      !readString(*doc, "key", v.key) || !readString(*doc, "signature", v.signature) ||
      !readString(*doc, "tag", v.tag) || v.approver.empty()) {
    return fail(Errc::parse_error, "vote: a field has the wrong type or is missing");
  }
  return v;
}

std::string toJson(const ReleasedRecord& r) {
  JsonObjectWriter w;
  w.field("at", r.at)
      .field("msg_id", r.msg_id)
      .field("stream", r.stream)
      .field("sequence", r.sequence)
      .field("by", r.by);
  return w.finish();
}

Result<ReleasedRecord> parseReleasedRecord(std::string_view json) {
  auto doc = parseObject(json, "released");
  if (!doc) return std::unexpected(doc.error());
  ReleasedRecord r;
  if (!readString(*doc, "at", r.at) || !readString(*doc, "msg_id", r.msg_id) ||
      !readString(*doc, "stream", r.stream) || !readString(*doc, "by", r.by)) {
    return fail(Errc::parse_error, "released: a field has the wrong type");
  }
  if (const auto it = doc->FindMember("sequence"); it != doc->MemberEnd() && it->value.IsUint64()) {
    r.sequence = it->value.GetUint64();
  }
  return r;
}

std::string decisionKey(std::string_view id) { return std::string(id) + "/decision"; }
std::string releasedKey(std::string_view id) { return std::string(id) + "/released"; }
std::string replayKey(std::string_view id, int attempt) {
  return std::string(id) + "/replay/" + std::to_string(attempt);
}
std::string voteKey(std::string_view id, int binding, std::string_view approver) {
  return std::string(id) + "/vote/" + std::to_string(binding) + "/" + std::string(approver);
}
std::string escalatedKey(std::string_view id, int binding, int step) {
  return std::string(id) + "/escalated/" + std::to_string(binding) + "/" + std::to_string(step);
}

}  // namespace countersign
