// The Slack messages of the bridge, as Web API request bodies (compact JSON): the held job's
// Block Kit message for chat.postMessage, and the outcome for chat.update. Pure.
//
// Everything that came from a job (topic, rule, requester, payload) is escaped for Slack's
// mrkdwn (&, <, >), so a payload cannot mention @channel or forge a link.
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "countersign/result.hpp"
#include "interaction.hpp"

namespace countersign::bridge {

// At most this many characters of payload in the code block, the cut marker included.
inline constexpr std::size_t kPayloadExcerptMax = 2500;
inline constexpr std::string_view kCutMarker = "\n... (cut)";

// What the bridge knows of an approval, read from the gateway's `get` answer.
struct ApprovalView {
  std::string id;
  std::string state;  // pending, approved, released, rejected, expired, release_unknown
  std::string topic;
  std::string rule;
  std::string requester;
  std::string expires_at;  // RFC 3339, empty: none
  std::string job_hash;
  std::string policy_snapshot;
  std::string payload;  // as the gateway showed it (redacted); base64 text when not JSON
  std::string reason;   // the decision's reason (an approver's note), once decided
  int quorum = 1;
  int binding = 0;  // 0 at the hold, +1 at each re-bind
  std::vector<std::string> voters;  // votes under the current snapshot
};

// Accepts the whole `get` answer ({"status":"ok","record":{...}}) or the record alone.
// not_found for a not_found answer; invalid_argument for anything else that is not a record.
Result<ApprovalView> parseApprovalView(std::string_view json);

// The mrkdwn escaping Slack asks for: & -> &amp;, < -> &lt;, > -> &gt;.
std::string escapeMrkdwn(std::string_view text);

// The payload excerpt: escaped, cut at a character boundary with kCutMarker so that the
// result holds at most kPayloadExcerptMax characters.
std::string payloadExcerpt(std::string_view payload);

// "<!date^1531420618^{date_short_pretty} {time}|2018-07-12T18:36:58Z>", or "-" when empty or
// not RFC 3339.
std::string slackDate(std::string_view rfc3339);

// chat.postMessage body: {channel, text, blocks}.
std::string heldMessage(const ApprovalView& view, std::string_view channel, std::string_view console_url);

enum class OutcomeKind { vote, approved, released, rejected, expired, policy_changed };

struct Outcome {
  OutcomeKind kind = OutcomeKind::approved;
  std::vector<std::string> actors;        // names of who decided (approvers, voters)
  std::vector<std::string> actor_slack;   // their Slack ids where known (same order; may be "")
  int votes = 0;                          // vote: k of quorum
  int quorum = 1;
  std::string reason;                     // a rejection's reason, an approval's note (may be "")
};

// The context line of an outcome, e.g. "Approved by <@U024BE7LH> (alice) · released".
std::string outcomeLine(const Outcome& outcome);

// chat.update body: {channel, ts, text, blocks}. A vote keeps the buttons (others still vote);
// every other outcome replaces them with the context line.
std::string outcomeUpdate(const ApprovalView& view, std::string_view channel, std::string_view ts,
                          const Outcome& outcome, std::string_view console_url);

// views.open body: the reason dialog a Reject opens (callback_id kReasonCallbackId, one optional
// multi-line input of at most kMaxReasonChars characters), carrying what the message showed and
// where it is in private_metadata (encodeDialogMetadata).
std::string reasonDialog(std::string_view trigger_id, const ButtonValue& value, std::string_view channel,
                         std::string_view message_ts);

// views.open body: the note dialog "Approve with note…" opens (callback_id kNoteCallbackId, the
// same input as the reason dialog, here required: Slack's own confirmation of the approval).
std::string noteDialog(std::string_view trigger_id, const ButtonValue& value, std::string_view channel,
                       std::string_view message_ts);

}  // namespace countersign::bridge
