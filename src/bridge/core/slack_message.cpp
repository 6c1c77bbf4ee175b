#include "slack_message.hpp"

#include <rapidjson/stringbuffer.h>
#include <rapidjson/writer.h>

#include <chrono>

#include "countersign/clock.hpp"
#include "countersign/json.hpp"
#include "json_fields.hpp"
#include "interaction.hpp"

namespace countersign::bridge {
namespace {

using bridge::detail::member;
using bridge::detail::stringAt;

using Writer = rapidjson::Writer<rapidjson::StringBuffer>;

void str(Writer& w, std::string_view text) {
  w.String(text.data(), static_cast<rapidjson::SizeType>(text.size()));
}
void key(Writer& w, std::string_view k) { w.Key(k.data(), static_cast<rapidjson::SizeType>(k.size())); }
void kv(Writer& w, std::string_view k, std::string_view v) {
  key(w, k);
  str(w, v);
}

void textObject(Writer& w, std::string_view type, std::string_view text) {
  w.StartObject();
  kv(w, "type", type);
  kv(w, "text", text);
  if (type == "plain_text") {
    key(w, "emoji");
    w.Bool(true);
  }
  w.EndObject();
}

// A section block with one mrkdwn text.
void textSection(Writer& w, std::string_view mrkdwn) {
  w.StartObject();
  kv(w, "type", "section");
  key(w, "text");
  textObject(w, "mrkdwn", mrkdwn);
  w.EndObject();
}

int intAt(const rapidjson::Value& object, std::string_view name, int fallback) {
  const auto* value = member(object, name);
  if (value == nullptr || !value->IsInt()) return fallback;
  return value->GetInt();
}

// Bytes of the UTF-8 character starting with `lead`.
std::size_t utf8Length(unsigned char lead) {
  if (lead < 0x80) return 1;
  if ((lead >> 5) == 0x6) return 2;
  if ((lead >> 4) == 0xe) return 3;
  if ((lead >> 3) == 0x1e) return 4;
  return 1;
}

// Slack's plain_text header holds at most 150 characters.
std::string clip(std::string_view text, std::size_t max_chars) {
  std::string out;
  std::size_t chars = 0;
  for (std::size_t i = 0; i < text.size();) {
    const std::size_t n = std::min(utf8Length(static_cast<unsigned char>(text[i])), text.size() - i);
    if (++chars > max_chars) {
      out += "...";
      break;
    }
    out.append(text.substr(i, n));
    i += n;
  }
  return out;
}

std::string orDash(std::string_view text) { return text.empty() ? std::string("-") : escapeMrkdwn(text); }

// "sha256:0123456789abcdef..." -> "0123456789ab".
std::string shortHash(std::string_view hash) {
  const std::size_t colon = hash.find(':');
  const std::string_view hex = colon == std::string_view::npos ? hash : hash.substr(colon + 1);
  return std::string(hex.substr(0, 12));
}

std::string votesText(int votes, int quorum) {
  return std::to_string(votes) + " of " + std::to_string(quorum);
}

std::string fallbackText(const ApprovalView& view) {
  return "Approval needed: " + view.topic + " (" + view.id + ")";
}

// Header, fields and payload: the part of the message that every version of it shows.
void evidenceBlocks(Writer& w, const ApprovalView& view, int votes) {
  w.StartObject();
  kv(w, "type", "header");
  key(w, "text");
  textObject(w, "plain_text", clip("Approval needed: " + view.topic, 150));
  w.EndObject();

  w.StartObject();
  kv(w, "type", "section");
  key(w, "fields");
  w.StartArray();
  textObject(w, "mrkdwn", "*Topic*\n" + orDash(view.topic));
  textObject(w, "mrkdwn", "*Rule*\n" + orDash(view.rule));
  textObject(w, "mrkdwn", "*Requester*\n" + orDash(view.requester));
  textObject(w, "mrkdwn", "*Expires*\n" + slackDate(view.expires_at));
  textObject(w, "mrkdwn", "*Votes*\n" + votesText(votes, view.quorum));
  textObject(w, "mrkdwn", "*Job hash*\n`" + escapeMrkdwn(shortHash(view.job_hash)) + "`");
  w.EndArray();
  w.EndObject();

  textSection(w, "```\n" + payloadExcerpt(view.payload) + "\n```");
}

void button(Writer& w, std::string_view action_id, std::string_view label, std::string_view style,
            const std::string& value) {
  w.StartObject();
  kv(w, "type", "button");
  kv(w, "action_id", action_id);
  key(w, "text");
  textObject(w, "plain_text", label);
  if (!style.empty()) kv(w, "style", style);  // Slack knows primary and danger; none is the default look
  kv(w, "value", value);
}

void actionsBlock(Writer& w, const ApprovalView& view, std::string_view console_url) {
  const std::string value =
      encodeButtonValue(ButtonValue{view.id, view.job_hash, view.policy_snapshot});
  w.StartObject();
  kv(w, "type", "actions");
  kv(w, "block_id", std::string(kBlockIdPrefix) + view.id);
  key(w, "elements");
  w.StartArray();
  button(w, kApproveAction, "Approve", "primary", value);
  key(w, "confirm");
  w.StartObject();
  key(w, "title");
  textObject(w, "plain_text", "Approve this job?");
  key(w, "text");
  textObject(w, "mrkdwn", "It will be released to its workers once: *" + escapeMrkdwn(view.topic) +
                              "* (job hash `" + escapeMrkdwn(shortHash(view.job_hash)) + "`).");
  key(w, "confirm");
  textObject(w, "plain_text", "Approve");
  key(w, "deny");
  textObject(w, "plain_text", "Cancel");
  w.EndObject();
  w.EndObject();
  button(w, kApproveNoteAction, "Approve with note\u2026", "", value);
  w.EndObject();
  button(w, kRejectAction, "Reject", "danger", value);
  w.EndObject();
  if (!console_url.empty()) {
    w.StartObject();
    kv(w, "type", "button");
    kv(w, "action_id", kDetailsAction);
    key(w, "text");
    textObject(w, "plain_text", "Details");
    kv(w, "url", std::string(console_url) + "approvals/" + view.id);
    w.EndObject();
  }
  w.EndArray();
  w.EndObject();
}

void contextBlock(Writer& w, std::string_view line) {
  w.StartObject();
  kv(w, "type", "context");
  key(w, "elements");
  w.StartArray();
  textObject(w, "mrkdwn", line);
  w.EndArray();
  w.EndObject();
}

std::string who(const Outcome& outcome) {
  if (outcome.actors.empty()) return "someone";
  std::string out;
  for (std::size_t i = 0; i < outcome.actors.size(); ++i) {
    if (i > 0) out += ", ";
    const std::string slack = i < outcome.actor_slack.size() ? outcome.actor_slack[i] : "";
    if (!slack.empty()) out += "<@" + escapeMrkdwn(slack) + "> (";
    out += escapeMrkdwn(outcome.actors[i]);
    if (!slack.empty()) out += ")";
  }
  return out;
}

std::string finish(rapidjson::StringBuffer& buffer) { return std::string(buffer.GetString(), buffer.GetSize()); }

}  // namespace

Result<ApprovalView> parseApprovalView(std::string_view text) {
  auto doc = json::parseStrict(text);
  if (!doc || !doc->IsObject()) return fail(Errc::invalid_argument, "not a JSON object");
  const rapidjson::Value* record = &*doc;
  if (const auto* inner = member(*doc, "record")) {
    record = inner;
  } else if (const auto status = stringAt(*doc, "status"); !status.empty()) {
    if (status == "not_found") return fail(Errc::not_found, "no such approval");
    return fail(Errc::invalid_argument, "answer " + status + " carries no record");
  }
  if (!record->IsObject()) return fail(Errc::invalid_argument, "record is not an object");
  ApprovalView view;
  view.id = stringAt(*record, "id");
  view.state = stringAt(*record, "state");
  view.topic = stringAt(*record, "topic");
  view.rule = stringAt(*record, "rule");
  view.requester = stringAt(*record, "requester");
  view.expires_at = stringAt(*record, "expires_at");
  view.job_hash = stringAt(*record, "job_hash");
  view.policy_snapshot = stringAt(*record, "policy_snapshot");
  view.payload = stringAt(*record, "payload");
  view.reason = stringAt(*record, "reason");
  // A quorum per group ({finance-leads: 1, security: 1}) needs the sum of its counts.
  if (const auto* quorum = member(*record, "quorum"); quorum != nullptr && quorum->IsObject()) {
    int total = 0;
    for (const auto& group : quorum->GetObject()) total += group.value.IsInt() ? group.value.GetInt() : 0;
    view.quorum = std::max(1, total);
  } else {
    view.quorum = std::max(1, intAt(*record, "quorum", 1));
  }
  view.binding = std::max(0, intAt(*record, "binding", 0));
  if (const auto* votes = member(*record, "votes"); votes != nullptr && votes->IsArray()) {
    for (const auto& vote : votes->GetArray()) {
      const std::string snapshot = stringAt(vote, "policy_snapshot");
      if (!snapshot.empty() && snapshot != view.policy_snapshot) continue;
      if (auto name = stringAt(vote, "approver"); !name.empty()) view.voters.push_back(std::move(name));
    }
  }
  if (view.id.empty() || view.job_hash.empty() || view.policy_snapshot.empty() || view.state.empty()) {
    return fail(Errc::invalid_argument, "record lacks id, state, job_hash or policy_snapshot");
  }
  return view;
}

std::string escapeMrkdwn(std::string_view text) {
  std::string out;
  out.reserve(text.size());
  for (const char c : text) {
    switch (c) {
      case '&': out += "&amp;"; break;
      case '<': out += "&lt;"; break;
      case '>': out += "&gt;"; break;
      default: out += c;
    }
  }
  return out;
}

std::string payloadExcerpt(std::string_view payload) {
  // Three backticks would close the code block early: break them with a zero-width space.
  std::string escaped;
  escaped.reserve(payload.size());
  std::size_t chars = 0;
  std::vector<std::size_t> boundaries;  // byte offset after each whole character or entity
  for (std::size_t i = 0; i < payload.size();) {
    const auto lead = static_cast<unsigned char>(payload[i]);
    const std::size_t n = std::min(utf8Length(lead), payload.size() - i);
    const std::string_view ch = payload.substr(i, n);
    if (ch == "&") {
      escaped += "&amp;";
    } else if (ch == "<") {
      escaped += "&lt;";
    } else if (ch == ">") {
      escaped += "&gt;";
    } else if (ch == "`" && escaped.size() >= 2 && escaped.ends_with("``")) {
      escaped += "\xE2\x80\x8B`";
    } else {
      escaped.append(ch);
    }
    ++chars;
    boundaries.push_back(escaped.size());
    i += n;
  }
  // Entities count as the characters Slack shows: one each. Cut so that what remains plus the
  // marker holds at most kPayloadExcerptMax characters.
  if (chars <= kPayloadExcerptMax) return escaped;
  const std::size_t keep = kPayloadExcerptMax - kCutMarker.size();
  // `boundaries` has one entry per source character; the zero-width spaces are few enough to
  // ignore for a limit Slack enforces at 3,000.
  std::string out = escaped.substr(0, boundaries[keep - 1]);
  out += kCutMarker;
  return out;
}

std::string slackDate(std::string_view rfc3339) {
  std::chrono::system_clock::time_point at;
  if (rfc3339.empty() || !parseRfc3339(rfc3339, at)) return "-";
  const auto seconds = std::chrono::duration_cast<std::chrono::seconds>(at.time_since_epoch()).count();
  return "<!date^" + std::to_string(seconds) + "^{date_short_pretty} {time}|" + escapeMrkdwn(rfc3339) + ">";
}

std::string heldMessage(const ApprovalView& view, std::string_view channel, std::string_view console_url) {
  rapidjson::StringBuffer buffer;
  Writer w(buffer);
  w.StartObject();
  kv(w, "channel", channel);
  kv(w, "text", fallbackText(view));
  key(w, "blocks");
  w.StartArray();
  evidenceBlocks(w, view, static_cast<int>(view.voters.size()));
  actionsBlock(w, view, console_url);
  w.EndArray();
  w.EndObject();
  return finish(buffer);
}

std::string outcomeLine(const Outcome& outcome) {
  const std::string note = outcome.reason.empty() ? "" : ": " + escapeMrkdwn(outcome.reason);
  switch (outcome.kind) {
    case OutcomeKind::vote:
      return ":ballot_box_with_ballot: Vote " + votesText(outcome.votes, outcome.quorum) +
             " recorded: " + who(outcome);
    case OutcomeKind::approved:
      return ":white_check_mark: Approved by " + who(outcome) + note;
    case OutcomeKind::released:
      return ":white_check_mark: Approved by " + who(outcome) + note + " · released";
    case OutcomeKind::rejected:
      return ":no_entry: Rejected by " + who(outcome) + note;
    case OutcomeKind::expired:
      return ":hourglass: Expired without a decision";
    case OutcomeKind::policy_changed:
      return ":arrows_counterclockwise: The policy changed: this request is closed; review the new one";
  }
  return {};
}

std::string outcomeUpdate(const ApprovalView& view, std::string_view channel, std::string_view ts,
                          const Outcome& outcome, std::string_view console_url) {
  rapidjson::StringBuffer buffer;
  Writer w(buffer);
  w.StartObject();
  kv(w, "channel", channel);
  kv(w, "ts", ts);
  const std::string line = outcomeLine(outcome);
  kv(w, "text", fallbackText(view) + ": " + line);
  key(w, "blocks");
  w.StartArray();
  const int votes = outcome.kind == OutcomeKind::vote ? outcome.votes : static_cast<int>(view.voters.size());
  evidenceBlocks(w, view, votes);
  if (outcome.kind == OutcomeKind::vote) actionsBlock(w, view, console_url);
  contextBlock(w, line);
  w.EndArray();
  w.EndObject();
  return finish(buffer);
}

namespace {

struct DialogText {
  std::string_view callback_id;
  std::string_view title;   // at most 24 characters (Slack's limit)
  std::string_view submit;
  std::string question;     // mrkdwn
  std::string_view label;
  bool optional;
};

std::string dialog(std::string_view trigger_id, const ButtonValue& value, std::string_view channel,
                   std::string_view message_ts, const DialogText& text) {
  rapidjson::StringBuffer buffer;
  Writer w(buffer);
  w.StartObject();
  kv(w, "trigger_id", trigger_id);
  key(w, "view");
  w.StartObject();
  kv(w, "type", "modal");
  kv(w, "callback_id", text.callback_id);
  kv(w, "private_metadata", encodeDialogMetadata(value, channel, message_ts));
  key(w, "title");
  textObject(w, "plain_text", text.title);
  key(w, "submit");
  textObject(w, "plain_text", text.submit);
  key(w, "close");
  textObject(w, "plain_text", "Cancel");
  key(w, "blocks");
  w.StartArray();
  textSection(w, text.question);
  w.StartObject();
  kv(w, "type", "input");
  kv(w, "block_id", kReasonBlockId);
  key(w, "optional");
  w.Bool(text.optional);
  key(w, "label");
  textObject(w, "plain_text", text.label);
  key(w, "element");
  w.StartObject();
  kv(w, "type", "plain_text_input");
  kv(w, "action_id", kReasonActionId);
  key(w, "multiline");
  w.Bool(true);
  key(w, "max_length");
  w.Uint(static_cast<unsigned>(kMaxReasonChars));
  w.EndObject();
  w.EndObject();
  w.EndArray();
  w.EndObject();
  w.EndObject();
  return finish(buffer);
}

}  // namespace

std::string reasonDialog(std::string_view trigger_id, const ButtonValue& value, std::string_view channel,
                         std::string_view message_ts) {
  return dialog(trigger_id, value, channel, message_ts,
                DialogText{kReasonCallbackId, "Reject this job", "Reject",
                           "Reject `" + escapeMrkdwn(value.id) + "`? It will not be released.",
                           "Reason (recorded with the decision)", true});
}

std::string noteDialog(std::string_view trigger_id, const ButtonValue& value, std::string_view channel,
                       std::string_view message_ts) {
  return dialog(trigger_id, value, channel, message_ts,
                DialogText{kNoteCallbackId, "Approve this job", "Approve",
                           "Approve `" + escapeMrkdwn(value.id) + "`? It will be released to its workers once (job hash `" +
                               escapeMrkdwn(shortHash(value.job_hash)) + "`).",
                           "Note (recorded with the approval)", false});
}

}  // namespace countersign::bridge
