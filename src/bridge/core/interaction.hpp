// Decoding Slack interactivity: the form-encoded HTTP body (one field `payload`) or the payload
// of a Socket Mode envelope, a `block_actions` JSON object, into the one click the bridge acts
// on. Pure and total: any input gives a Click or an error saying what was wrong.
#pragma once

#include <string>
#include <string_view>

#include "countersign/result.hpp"

namespace countersign::bridge {

inline constexpr std::string_view kApproveAction = "countersign_approve";
inline constexpr std::string_view kRejectAction = "countersign_reject";
inline constexpr std::string_view kDetailsAction = "countersign_details";
inline constexpr std::string_view kBlockIdPrefix = "countersign:";

// What the message showed: the button's `value`, compact JSON {id, job_hash, policy_snapshot}.
struct ButtonValue {
  std::string id;
  std::string job_hash;
  std::string policy_snapshot;
};
std::string encodeButtonValue(const ButtonValue& value);
Result<ButtonValue> decodeButtonValue(std::string_view json);

enum class ClickAction { approve, reject };

struct Click {
  ClickAction action = ClickAction::approve;
  std::string user_id;       // Slack user id (U..., W...)
  std::string user_name;     // Slack's username, for logs only
  std::string team_id;
  std::string channel_id;    // where the message is
  std::string message_ts;    // the message's ts
  std::string response_url;  // may be empty
  ButtonValue value;
};

// Decodes application/x-www-form-urlencoded text: the value of field `name`, percent- and
// '+'-decoded. not_found when absent, invalid_argument when badly encoded.
Result<std::string> formField(std::string_view body, std::string_view name);

// A block_actions payload into the click on one of countersign's buttons. Errors
// (Errc::invalid_argument unless said): parse_error (not strict JSON), "not_block_actions",
// "missing <field>", "not_our_action" (Details or someone else's button: nothing to do),
// "block_mismatch" (the button's value names another id than its block).
Result<Click> decodeInteractionPayload(std::string_view json);

// The HTTP body: formField("payload") then decodeInteractionPayload.
Result<Click> decodeInteractionForm(std::string_view body);

}  // namespace countersign::bridge
