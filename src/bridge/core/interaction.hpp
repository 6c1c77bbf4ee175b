// Decoding Slack interactivity: the form-encoded HTTP body (one field `payload`) or the payload
// of a Socket Mode envelope: a `block_actions` JSON object (a button click) or a
// `view_submission` of the reason dialog (a reject with its reason), into the one click the
// bridge acts on. Pure and total: any input gives a Click or an error saying what was wrong.
#pragma once

#include <string>
#include <string_view>

#include "countersign/result.hpp"

namespace countersign::bridge {

inline constexpr std::string_view kApproveAction = "countersign_approve";
// "Approve with note…": opens the note dialog instead of approving at once.
inline constexpr std::string_view kApproveNoteAction = "countersign_approve_note";
inline constexpr std::string_view kRejectAction = "countersign_reject";
inline constexpr std::string_view kDetailsAction = "countersign_details";
inline constexpr std::string_view kBlockIdPrefix = "countersign:";
// The dialogs (modals): the reason dialog opened by Reject, the note dialog opened by "Approve
// with note…". Their callback_ids, and the block and action ids of their text input (the same in
// both).
inline constexpr std::string_view kReasonCallbackId = "countersign_reject_reason";
inline constexpr std::string_view kNoteCallbackId = "countersign_approve_note";
inline constexpr std::string_view kReasonBlockId = "countersign_reason";
inline constexpr std::string_view kReasonActionId = "reason";
inline constexpr std::size_t kMaxReasonChars = 500;

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
  std::string trigger_id;    // block_actions: opens a dialog within 3 s (may be empty)
  bool with_note = false;    // "Approve with note…": open the note dialog, approve nothing yet
  bool from_dialog = false;  // a view_submission of the reason or the note dialog
  std::string reason;        // typed in the dialog (may be empty)
  ButtonValue value;
};

// The reason dialog's private_metadata: what the message showed, and where it is (for answers
// to the person). Compact JSON {id, job_hash, policy_snapshot, channel, ts}.
std::string encodeDialogMetadata(const ButtonValue& value, std::string_view channel, std::string_view message_ts);

// Decodes application/x-www-form-urlencoded text: the value of field `name`, percent- and
// '+'-decoded. not_found when absent, invalid_argument when badly encoded.
Result<std::string> formField(std::string_view body, std::string_view name);

// A block_actions payload into the click on one of countersign's buttons (approve, with_note or
// reject), or a view_submission of the reason dialog into a reject and of the note dialog into an
// approve (from_dialog, reason). Errors (Errc::invalid_argument
// unless said): parse_error (not strict JSON), "not_block_actions" (another payload type),
// "missing <field>", "not_our_action" (Details, someone else's button or dialog: nothing to do),
// "block_mismatch" (the button's value names another id than its block), "reason_too_long"
// (over kMaxReasonChars characters).
Result<Click> decodeInteractionPayload(std::string_view json);

// The HTTP body: formField("payload") then decodeInteractionPayload.
Result<Click> decodeInteractionForm(std::string_view body);

}  // namespace countersign::bridge
