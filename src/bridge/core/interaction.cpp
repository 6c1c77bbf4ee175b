#include "interaction.hpp"

#include "countersign/json.hpp"
#include "json_fields.hpp"
#include "core/json_writer.hpp"

namespace countersign::bridge {
namespace {

using bridge::detail::member;
using bridge::detail::stringAt;

int hexValue(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

Result<std::string> percentDecode(std::string_view text) {
  std::string out;
  out.reserve(text.size());
  for (std::size_t i = 0; i < text.size(); ++i) {
    const char c = text[i];
    if (c == '+') {
      out += ' ';
    } else if (c == '%') {
      const int hi = i + 1 < text.size() ? hexValue(text[i + 1]) : -1;
      const int lo = i + 2 < text.size() ? hexValue(text[i + 2]) : -1;
      if (hi < 0 || lo < 0) return fail(Errc::invalid_argument, "bad percent escape");
      out += static_cast<char>(hi * 16 + lo);
      i += 2;
    } else {
      out += c;
    }
  }
  return out;
}

}  // namespace

std::string encodeButtonValue(const ButtonValue& value) {
  countersign::detail::JsonObjectWriter out;
  out.field("id", value.id).field("job_hash", value.job_hash).field("policy_snapshot",
                                                                    value.policy_snapshot);
  return out.finish();
}

Result<ButtonValue> decodeButtonValue(std::string_view text) {
  auto doc = json::parseStrict(text);
  if (!doc) return fail(Errc::invalid_argument, "button value is not JSON");
  if (!doc->IsObject()) return fail(Errc::invalid_argument, "button value is not an object");
  ButtonValue value{stringAt(*doc, "id"), stringAt(*doc, "job_hash"), stringAt(*doc, "policy_snapshot")};
  if (value.id.empty() || value.job_hash.empty() || value.policy_snapshot.empty()) {
    return fail(Errc::invalid_argument, "missing value.id, value.job_hash or value.policy_snapshot");
  }
  return value;
}

Result<std::string> formField(std::string_view body, std::string_view name) {
  std::size_t start = 0;
  while (start <= body.size()) {
    std::size_t end = body.find('&', start);
    if (end == std::string_view::npos) end = body.size();
    const std::string_view pair = body.substr(start, end - start);
    const std::size_t eq = pair.find('=');
    auto key = percentDecode(pair.substr(0, eq));
    if (!key) return std::unexpected(key.error());
    if (*key == name) {
      if (eq == std::string_view::npos) return std::string();
      return percentDecode(pair.substr(eq + 1));
    }
    start = end + 1;
  }
  return fail(Errc::not_found, "no field " + std::string(name));
}

std::string encodeDialogMetadata(const ButtonValue& value, std::string_view channel, std::string_view message_ts) {
  countersign::detail::JsonObjectWriter out;
  out.field("id", value.id)
      .field("job_hash", value.job_hash)
      .field("policy_snapshot", value.policy_snapshot)
      .field("channel", channel)
      .field("ts", message_ts);
  return out.finish();
}

namespace {

std::size_t utf8Chars(std::string_view text) {
  std::size_t n = 0;
  for (const char c : text) n += (static_cast<unsigned char>(c) & 0xC0) != 0x80 ? 1 : 0;
  return n;
}

Result<Click> decodeViewSubmission(const rapidjson::Value& doc) {
  const auto* user = member(doc, "user");
  const auto* view = member(doc, "view");
  if (user == nullptr || !user->IsObject()) return fail(Errc::invalid_argument, "missing user");
  if (view == nullptr || !view->IsObject()) return fail(Errc::invalid_argument, "missing view");
  const std::string callback = stringAt(*view, "callback_id");
  if (callback != kReasonCallbackId && callback != kNoteCallbackId) return fail(Errc::invalid_argument, "not_our_action");
  Click click;
  click.action = callback == kNoteCallbackId ? ClickAction::approve : ClickAction::reject;
  click.from_dialog = true;
  click.user_id = stringAt(*user, "id");
  if (click.user_id.empty()) return fail(Errc::invalid_argument, "missing user.id");
  click.user_name = stringAt(*user, "username");
  click.team_id = stringAt(*user, "team_id");
  auto metadata = json::parseStrict(stringAt(*view, "private_metadata"));
  if (!metadata || !metadata->IsObject()) return fail(Errc::invalid_argument, "missing view.private_metadata");
  auto value = decodeButtonValue(json::toString(*metadata));
  if (!value) return std::unexpected(value.error());
  click.value = std::move(*value);
  click.channel_id = stringAt(*metadata, "channel");
  click.message_ts = stringAt(*metadata, "ts");
  // view.state.values.<block>.<action>.value; absent or null: no reason typed.
  if (const auto* state = member(*view, "state")) {
    if (const auto* values = member(*state, "values")) {
      if (const auto* block = member(*values, kReasonBlockId)) {
        if (const auto* input = member(*block, kReasonActionId)) click.reason = stringAt(*input, "value");
      }
    }
  }
  if (utf8Chars(click.reason) > kMaxReasonChars) return fail(Errc::invalid_argument, "reason_too_long");
  return click;
}

}  // namespace

Result<Click> decodeInteractionPayload(std::string_view text) {
  auto doc = json::parseStrict(text);
  if (!doc) return fail(Errc::parse_error, "payload is not JSON: " + doc.error().message);
  if (!doc->IsObject()) return fail(Errc::invalid_argument, "payload is not an object");
  const std::string type = stringAt(*doc, "type");
  if (type == "view_submission") return decodeViewSubmission(*doc);
  if (type != "block_actions") return fail(Errc::invalid_argument, "not_block_actions");
  const auto* user = member(*doc, "user");
  const auto* actions = member(*doc, "actions");
  if (user == nullptr || !user->IsObject()) return fail(Errc::invalid_argument, "missing user");
  if (actions == nullptr || !actions->IsArray() || actions->Empty()) {
    return fail(Errc::invalid_argument, "missing actions");
  }
  Click click;
  click.user_id = stringAt(*user, "id");
  if (click.user_id.empty()) return fail(Errc::invalid_argument, "missing user.id");
  click.user_name = stringAt(*user, "username");
  click.team_id = stringAt(*user, "team_id");
  click.response_url = stringAt(*doc, "response_url");
  click.trigger_id = stringAt(*doc, "trigger_id");
  if (const auto* container = member(*doc, "container")) {
    click.channel_id = stringAt(*container, "channel_id");
    click.message_ts = stringAt(*container, "message_ts");
  }
  if (click.channel_id.empty()) {
    if (const auto* channel = member(*doc, "channel")) click.channel_id = stringAt(*channel, "id");
  }
  // Slack sends one action per block_actions payload; take the first that is one of ours.
  for (const auto& action : actions->GetArray()) {
    const std::string action_id = stringAt(action, "action_id");
    if (action_id != kApproveAction && action_id != kApproveNoteAction && action_id != kRejectAction) continue;
    click.action = action_id == kRejectAction ? ClickAction::reject : ClickAction::approve;
    click.with_note = action_id == kApproveNoteAction;
    auto value = decodeButtonValue(stringAt(action, "value"));
    if (!value) return std::unexpected(value.error());
    const std::string block_id = stringAt(action, "block_id");
    if (block_id.substr(0, kBlockIdPrefix.size()) != kBlockIdPrefix ||
        std::string_view(block_id).substr(kBlockIdPrefix.size()) != value->id) {
      return fail(Errc::invalid_argument, "block_mismatch");
    }
    click.value = std::move(*value);
    return click;
  }
  return fail(Errc::invalid_argument, "not_our_action");
}

Result<Click> decodeInteractionForm(std::string_view body) {
  auto payload = formField(body, "payload");
  if (!payload) {
    if (payload.error().code == Errc::not_found) return fail(Errc::invalid_argument, "missing payload");
    return std::unexpected(payload.error());
  }
  return decodeInteractionPayload(*payload);
}

}  // namespace countersign::bridge
