#include <gtest/gtest.h>

#include "bridge/core/interaction.hpp"
#include "countersign/json.hpp"

namespace countersign::bridge {
namespace {

std::string percentEncode(std::string_view text) {
  static constexpr char kHex[] = "0123456789ABCDEF";
  std::string out;
  for (const char ch : text) {
    const auto c = static_cast<unsigned char>(ch);
    if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' || c == '_' ||
        c == '.') {
      out += ch;
    } else {
      out += '%';
      out += kHex[c >> 4];
      out += kHex[c & 15];
    }
  }
  return out;
}

std::string payload(std::string_view action_id, std::string_view block_id, const std::string& value,
                    std::string_view type = "block_actions") {
  std::string value_literal;
  json::appendJsonString(value_literal, value);
  return R"({"type":")" + std::string(type) +
         R"(","user":{"id":"U024BE7LH","username":"alice","team_id":"T1"},"container":{"type":"message","message_ts":"1700000000.000100","channel_id":"C0FINANCE"},"channel":{"id":"C0FINANCE"},"response_url":"https://hooks.slack.test/actions/1","actions":[{"type":"button","action_id":")" +
         std::string(action_id) + R"(","block_id":")" + std::string(block_id) + R"(","value":)" + value_literal +
         R"(,"action_ts":"1700000001.1"}]})";
}

const ButtonValue kValue{"job-1", "sha256:" + std::string(64, 'a'), "v1:sha256:" + std::string(64, 'b')};

TEST(ButtonValue, RoundTripsAsCompactJson) {
  const std::string text = encodeButtonValue(kValue);
  EXPECT_EQ(text.find(' '), std::string::npos);
  EXPECT_EQ(text.substr(0, 14), R"({"id":"job-1",)");
  auto decoded = decodeButtonValue(text);
  ASSERT_TRUE(decoded) << decoded.error().message;
  EXPECT_EQ(decoded->id, kValue.id);
  EXPECT_EQ(decoded->job_hash, kValue.job_hash);
  EXPECT_EQ(decoded->policy_snapshot, kValue.policy_snapshot);
  EXPECT_FALSE(decodeButtonValue(R"({"id":"x"})"));
  EXPECT_FALSE(decodeButtonValue("not json"));
}

TEST(FormField, DecodesPercentAndPlus) {
  EXPECT_EQ(formField("a=1&payload=%7B%22x%22%3A+1%7D&b=2", "payload").value(), R"({"x": 1})");
  EXPECT_EQ(formField("payload=", "payload").value(), "");
  EXPECT_EQ(formField("a=1", "payload").error().code, Errc::not_found);
  EXPECT_EQ(formField("payload=%7", "payload").error().code, Errc::invalid_argument);
  EXPECT_EQ(formField("payload=%zz", "payload").error().code, Errc::invalid_argument);
}

TEST(Interaction, DecodesAnApproveClickFromTheForm) {
  const std::string body =
      "payload=" + percentEncode(payload("countersign_approve", "countersign:job-1", encodeButtonValue(kValue)));
  auto click = decodeInteractionForm(body);
  ASSERT_TRUE(click) << click.error().message;
  EXPECT_EQ(click->action, ClickAction::approve);
  EXPECT_EQ(click->user_id, "U024BE7LH");
  EXPECT_EQ(click->user_name, "alice");
  EXPECT_EQ(click->channel_id, "C0FINANCE");
  EXPECT_EQ(click->message_ts, "1700000000.000100");
  EXPECT_EQ(click->response_url, "https://hooks.slack.test/actions/1");
  EXPECT_EQ(click->value.id, "job-1");
  EXPECT_EQ(click->value.job_hash, kValue.job_hash);
  EXPECT_EQ(click->value.policy_snapshot, kValue.policy_snapshot);
}

TEST(Interaction, DecodesARejectClickFromASocketPayload) {
  auto click = decodeInteractionPayload(payload("countersign_reject", "countersign:job-1", encodeButtonValue(kValue)));
  ASSERT_TRUE(click) << click.error().message;
  EXPECT_EQ(click->action, ClickAction::reject);
}

TEST(Interaction, RefusesWhatIsNotOurClick) {
  const std::string value = encodeButtonValue(kValue);
  EXPECT_EQ(decodeInteractionPayload(payload("countersign_details", "countersign:job-1", value)).error().message,
            "not_our_action");
  EXPECT_EQ(decodeInteractionPayload(payload("countersign_approve", "countersign:job-1", value, "message_action"))
                .error()
                .message,
            "not_block_actions");
  EXPECT_EQ(decodeInteractionPayload(payload("countersign_approve", "countersign:job-1", value, "view_submission"))
                .error()
                .message,
            "missing view");
  // A value edited by the client to name another job than its block.
  EXPECT_EQ(decodeInteractionPayload(payload("countersign_approve", "countersign:job-2", value)).error().message,
            "block_mismatch");
  EXPECT_EQ(decodeInteractionPayload(payload("countersign_approve", "other:job-1", value)).error().message,
            "block_mismatch");
  EXPECT_FALSE(decodeInteractionPayload(payload("countersign_approve", "countersign:job-1", "{}")));
  EXPECT_EQ(decodeInteractionPayload("{not json").error().code, Errc::parse_error);
  EXPECT_FALSE(decodeInteractionPayload("[]"));
  EXPECT_FALSE(decodeInteractionPayload(R"({"type":"block_actions","user":{},"actions":[]})"));
  EXPECT_FALSE(decodeInteractionPayload(R"({"type":"block_actions","user":{"id":"U1"},"actions":{}})"));
  EXPECT_EQ(decodeInteractionForm("token=abc").error().message, "missing payload");
  EXPECT_EQ(decodeInteractionForm("payload=%7Bnot").error().code, Errc::parse_error);
}

// A view_submission of the reason dialog, as Slack sends it: the metadata we set, the typed text.
std::string submission(const std::string& metadata, const std::string& reason_json,
                       std::string_view callback_id = kReasonCallbackId) {
  std::string metadata_literal;
  json::appendJsonString(metadata_literal, metadata);
  return R"({"type":"view_submission","team":{"id":"T1"},"user":{"id":"U024BE7LH","username":"alice"},"view":{"id":"V1","type":"modal","callback_id":")" +
         std::string(callback_id) + R"(","private_metadata":)" + metadata_literal +
         R"(,"state":{"values":{"countersign_reason":{"reason":{"type":"plain_text_input","value":)" + reason_json + "}}}}}}";
}

TEST(Interaction, DecodesTheReasonDialogsSubmissionIntoARejectWithItsReason) {
  const std::string metadata = encodeDialogMetadata(kValue, "C0FINANCE", "1700000000.000100");
  auto click = decodeInteractionPayload(submission(metadata, R"("Amount \"wrong\"")"));
  ASSERT_TRUE(click) << click.error().message;
  EXPECT_EQ(click->action, ClickAction::reject);
  EXPECT_TRUE(click->from_dialog);
  EXPECT_EQ(click->reason, "Amount \"wrong\"");
  EXPECT_EQ(click->user_id, "U024BE7LH");
  EXPECT_EQ(click->value.id, "job-1");
  EXPECT_EQ(click->value.job_hash, kValue.job_hash);
  EXPECT_EQ(click->value.policy_snapshot, kValue.policy_snapshot);
  EXPECT_EQ(click->channel_id, "C0FINANCE");
  EXPECT_EQ(click->message_ts, "1700000000.000100");
  // Nothing typed (the input is optional): null.
  auto empty = decodeInteractionPayload(submission(metadata, "null"));
  ASSERT_TRUE(empty) << empty.error().message;
  EXPECT_EQ(empty->reason, "");
  // 500 characters (multi-byte counted once) pass; 501 do not.
  std::string long_reason;
  for (int i = 0; i < 500; ++i) long_reason += "\xC3\xA9";
  EXPECT_TRUE(decodeInteractionPayload(submission(metadata, "\"" + long_reason + "\"")));
  EXPECT_EQ(decodeInteractionPayload(submission(metadata, "\"" + long_reason + "x\"")).error().message, "reason_too_long");
  // Someone else's dialog, metadata that is not ours, a block click carries the trigger_id.
  EXPECT_EQ(decodeInteractionPayload(submission(metadata, "null", "other_dialog")).error().message, "not_our_action");
  EXPECT_EQ(decodeInteractionPayload(submission("not json", "null")).error().message, "missing view.private_metadata");
  EXPECT_FALSE(decodeInteractionPayload(submission(R"({"id":"job-1"})", "null")));
  EXPECT_EQ(decodeInteractionPayload(submission(metadata, "42"))->reason, "");
}

TEST(Interaction, ApproveWithNoteIsAnApproveThatAsksForTheDialog) {
  auto click = decodeInteractionPayload(payload("countersign_approve_note", "countersign:job-1", encodeButtonValue(kValue)));
  ASSERT_TRUE(click) << click.error().message;
  EXPECT_EQ(click->action, ClickAction::approve);
  EXPECT_TRUE(click->with_note);
  EXPECT_FALSE(click->from_dialog);
  EXPECT_EQ(click->value.id, "job-1");
  // A plain Approve asks for no dialog; the note dialog's submission is an approve with its note.
  EXPECT_FALSE(decodeInteractionPayload(payload("countersign_approve", "countersign:job-1", encodeButtonValue(kValue)))->with_note);
  const std::string metadata = encodeDialogMetadata(kValue, "C0FINANCE", "1700000000.000100");
  auto noted = decodeInteractionPayload(submission(metadata, R"("looks right")", kNoteCallbackId));
  ASSERT_TRUE(noted) << noted.error().message;
  EXPECT_EQ(noted->action, ClickAction::approve);
  EXPECT_TRUE(noted->from_dialog);
  EXPECT_EQ(noted->reason, "looks right");
  // An edited value is refused as for the other buttons.
  EXPECT_EQ(decodeInteractionPayload(payload("countersign_approve_note", "countersign:job-2", encodeButtonValue(kValue)))
                .error()
                .message,
            "block_mismatch");
}

TEST(Interaction, ABlockClickCarriesItsTriggerId) {
  std::string text = payload("countersign_reject", "countersign:job-1", encodeButtonValue(kValue));
  text.insert(1, R"("trigger_id":"123.456.abc",)");
  auto click = decodeInteractionPayload(text);
  ASSERT_TRUE(click) << click.error().message;
  EXPECT_EQ(click->trigger_id, "123.456.abc");
  EXPECT_FALSE(click->from_dialog);
}

}  // namespace
}  // namespace countersign::bridge
