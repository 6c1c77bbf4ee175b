#include <gtest/gtest.h>

#include "bridge/core/bridge_event.hpp"
#include "bridge/core/interaction.hpp"
#include "bridge/core/slack_message.hpp"
#include "countersign/json.hpp"

namespace countersign::bridge {
namespace {

ApprovalView view() {
  ApprovalView v;
  v.id = "job-42";
  v.state = "pending";
  v.topic = "finance.payment.execute";
  v.rule = "require-approval-prod-finance";
  v.requester = "bob";
  v.expires_at = "2026-12-06T05:00:00Z";
  v.job_hash = "sha256:0123456789abcdef" + std::string(48, 'e');
  v.policy_snapshot = "v1:sha256:" + std::string(64, 'c');
  v.payload = R"({"amount":100,"to":"<!channel> & co"})";
  v.quorum = 2;
  return v;
}

rapidjson::Document parse(const std::string& text) {
  auto doc = json::parseStrict(text);
  EXPECT_TRUE(doc) << text;
  return std::move(*doc);
}

std::string fieldsText(const rapidjson::Value& blocks) {
  std::string all;
  for (const auto& field : blocks[1]["fields"].GetArray()) all += std::string(field["text"].GetString()) + "|";
  return all;
}

TEST(HeldMessage, HasTheEvidenceAndTheButtons) {
  const auto doc = parse(heldMessage(view(), "C0FINANCE", "https://cs.example/ui/"));
  EXPECT_STREQ(doc["channel"].GetString(), "C0FINANCE");
  EXPECT_NE(std::string(doc["text"].GetString()).find("finance.payment.execute"), std::string::npos);
  const auto& blocks = doc["blocks"];
  ASSERT_EQ(blocks.Size(), 4u);
  EXPECT_STREQ(blocks[0]["type"].GetString(), "header");
  EXPECT_EQ(fieldsText(blocks),
            "*Topic*\nfinance.payment.execute|*Rule*\nrequire-approval-prod-finance|*Requester*\nbob|"
            "*Expires*\n<!date^1796533200^{date_short_pretty} {time}|2026-12-06T05:00:00Z>|*Votes*\n0 of 2|"
            "*Job hash*\n`0123456789ab`|");
  // The payload cannot mention anyone: Slack's control characters are escaped.
  EXPECT_EQ(std::string(blocks[2]["text"]["text"].GetString()),
            "```\n{\"amount\":100,\"to\":\"&lt;!channel&gt; &amp; co\"}\n```");
  const auto& actions = blocks[3];
  EXPECT_STREQ(actions["type"].GetString(), "actions");
  EXPECT_STREQ(actions["block_id"].GetString(), "countersign:job-42");
  const auto& approve = actions["elements"][0];
  EXPECT_STREQ(approve["action_id"].GetString(), "countersign_approve");
  EXPECT_STREQ(approve["style"].GetString(), "primary");
  EXPECT_TRUE(approve.HasMember("confirm"));
  const auto value = decodeButtonValue(approve["value"].GetString());
  ASSERT_TRUE(value);
  EXPECT_EQ(value->id, "job-42");
  EXPECT_EQ(value->job_hash, view().job_hash);
  EXPECT_EQ(value->policy_snapshot, view().policy_snapshot);
  // Approve with a note: the same value, no style of its own, no confirm (its dialog is the
  // confirmation).
  const auto& note = actions["elements"][1];
  EXPECT_STREQ(note["action_id"].GetString(), "countersign_approve_note");
  EXPECT_STREQ(note["text"]["text"].GetString(), "Approve with note\u2026");
  EXPECT_FALSE(note.HasMember("style"));
  EXPECT_FALSE(note.HasMember("confirm"));
  EXPECT_STREQ(note["value"].GetString(), approve["value"].GetString());
  const auto& reject = actions["elements"][2];
  EXPECT_STREQ(reject["action_id"].GetString(), "countersign_reject");
  EXPECT_STREQ(reject["style"].GetString(), "danger");
  EXPECT_FALSE(reject.HasMember("confirm"));
  EXPECT_STREQ(actions["elements"][3]["url"].GetString(), "https://cs.example/ui/approvals/job-42");
}

TEST(HeldMessage, MissingRequesterAndExpiryShowADash) {
  ApprovalView v = view();
  v.requester.clear();
  v.expires_at.clear();
  v.quorum = 1;
  const auto doc = parse(heldMessage(v, "C1", ""));
  EXPECT_NE(fieldsText(doc["blocks"]).find("*Requester*\n-|*Expires*\n-|*Votes*\n0 of 1|"), std::string::npos);
  // No console: no Details button.
  EXPECT_EQ(doc["blocks"][3]["elements"].Size(), 3u);
}

TEST(PayloadExcerpt, CutsAt2500CharactersWithTheMarker) {
  EXPECT_EQ(payloadExcerpt("short"), "short");
  const std::string exact(2500, 'x');
  EXPECT_EQ(payloadExcerpt(exact), exact);
  const std::string cut = payloadExcerpt(std::string(10000, 'y'));
  EXPECT_EQ(cut.size(), 2500u);
  EXPECT_TRUE(cut.ends_with(kCutMarker));
  // Multi-byte characters are never split, and entities count as one character.
  std::string euros;
  for (int i = 0; i < 3000; ++i) euros += "\xE2\x82\xAC";
  const std::string euro_cut = payloadExcerpt(euros);
  EXPECT_EQ(euro_cut.size(), (2500 - kCutMarker.size()) * 3 + kCutMarker.size());
  EXPECT_TRUE(json::parseStrict("\"" + euro_cut.substr(0, euro_cut.size() - kCutMarker.size()) + "\""));
  const std::string amps = payloadExcerpt(std::string(3000, '&'));
  EXPECT_EQ(amps.size(), (2500 - kCutMarker.size()) * 5 + kCutMarker.size());
  // Three backticks would close the code block.
  EXPECT_EQ(payloadExcerpt("a```b").find("```"), std::string::npos);
}

TEST(OutcomeUpdate, ADecisionRemovesTheButtons) {
  Outcome outcome;
  outcome.kind = OutcomeKind::released;
  outcome.actors = {"alice"};
  outcome.actor_slack = {"U024BE7LH"};
  const auto doc = parse(outcomeUpdate(view(), "C0FINANCE", "1700000000.000100", outcome, ""));
  EXPECT_STREQ(doc["ts"].GetString(), "1700000000.000100");
  const auto& blocks = doc["blocks"];
  for (const auto& block : blocks.GetArray()) EXPECT_STRNE(block["type"].GetString(), "actions");
  EXPECT_EQ(std::string(blocks[blocks.Size() - 1]["elements"][0]["text"].GetString()),
            ":white_check_mark: Approved by <@U024BE7LH> (alice) · released");
}

TEST(OutcomeUpdate, AVoteKeepsTheButtonsAndCounts) {
  Outcome outcome;
  outcome.kind = OutcomeKind::vote;
  outcome.actors = {"alice"};
  outcome.votes = 1;
  outcome.quorum = 2;
  const auto doc = parse(outcomeUpdate(view(), "C0FINANCE", "1.2", outcome, ""));
  const auto& blocks = doc["blocks"];
  EXPECT_NE(fieldsText(blocks).find("*Votes*\n1 of 2"), std::string::npos);
  EXPECT_STREQ(blocks[3]["type"].GetString(), "actions");
  EXPECT_NE(std::string(blocks[4]["elements"][0]["text"].GetString()).find("Vote 1 of 2 recorded"), std::string::npos);
}

TEST(ReasonDialog, IsAModalWhoseSubmissionDecodesBackToTheJob) {
  const ButtonValue value{"job-<42>", "sha256:" + std::string(64, 'a'), "v1:sha256:" + std::string(64, 'b')};
  const auto body = parse(reasonDialog("trig-1", value, "C0FINANCE", "1700000000.000100"));
  EXPECT_STREQ(body["trigger_id"].GetString(), "trig-1");
  const auto& dialog = body["view"];
  EXPECT_STREQ(dialog["type"].GetString(), "modal");
  EXPECT_EQ(std::string(dialog["callback_id"].GetString()), kReasonCallbackId);
  EXPECT_STREQ(dialog["submit"]["text"].GetString(), "Reject");
  // The job id is escaped in the text; the input is optional and limited.
  EXPECT_NE(std::string(dialog["blocks"][0]["text"]["text"].GetString()).find("job-&lt;42&gt;"), std::string::npos);
  const auto& input = dialog["blocks"][1];
  EXPECT_STREQ(input["type"].GetString(), "input");
  EXPECT_EQ(std::string(input["block_id"].GetString()), kReasonBlockId);
  EXPECT_TRUE(input["optional"].GetBool());
  EXPECT_EQ(std::string(input["element"]["action_id"].GetString()), kReasonActionId);
  EXPECT_EQ(input["element"]["max_length"].GetUint(), kMaxReasonChars);
  // What Slack sends back on submit decodes to a reject of the same job, hash and snapshot.
  std::string metadata;
  json::appendJsonString(metadata, dialog["private_metadata"].GetString());
  const std::string submitted =
      R"({"type":"view_submission","user":{"id":"U1"},"view":{"callback_id":"countersign_reject_reason","private_metadata":)" +
      metadata + R"(,"state":{"values":{"countersign_reason":{"reason":{"value":"no"}}}}}})";
  auto click = decodeInteractionPayload(submitted);
  ASSERT_TRUE(click) << click.error().message;
  EXPECT_EQ(click->value.id, value.id);
  EXPECT_EQ(click->value.job_hash, value.job_hash);
  EXPECT_EQ(click->value.policy_snapshot, value.policy_snapshot);
  EXPECT_EQ(click->channel_id, "C0FINANCE");
  EXPECT_EQ(click->reason, "no");
}

TEST(NoteDialog, IsARequiredNoteWhoseSubmissionDecodesToAnApprove) {
  const ButtonValue value{"job-<42>", "sha256:" + std::string(64, 'a'), "v1:sha256:" + std::string(64, 'b')};
  const auto body = parse(noteDialog("trig-2", value, "C0FINANCE", "1700000000.000100"));
  EXPECT_STREQ(body["trigger_id"].GetString(), "trig-2");
  const auto& dialog = body["view"];
  EXPECT_EQ(std::string(dialog["callback_id"].GetString()), kNoteCallbackId);
  EXPECT_STREQ(dialog["title"]["text"].GetString(), "Approve this job");
  EXPECT_STREQ(dialog["submit"]["text"].GetString(), "Approve");
  const std::string question = dialog["blocks"][0]["text"]["text"].GetString();
  EXPECT_NE(question.find("job-&lt;42&gt;"), std::string::npos) << question;
  EXPECT_NE(question.find("released to its workers once"), std::string::npos) << question;
  const auto& input = dialog["blocks"][1];
  EXPECT_EQ(std::string(input["block_id"].GetString()), kReasonBlockId);
  EXPECT_FALSE(input["optional"].GetBool());  // the person chose to write one
  EXPECT_EQ(input["element"]["max_length"].GetUint(), kMaxReasonChars);
  std::string metadata;
  json::appendJsonString(metadata, dialog["private_metadata"].GetString());
  const std::string submitted =
      R"({"type":"view_submission","user":{"id":"U1"},"view":{"callback_id":"countersign_approve_note","private_metadata":)" +
      metadata + R"(,"state":{"values":{"countersign_reason":{"reason":{"value":"checked the invoice"}}}}}})";
  auto click = decodeInteractionPayload(submitted);
  ASSERT_TRUE(click) << click.error().message;
  EXPECT_EQ(click->action, ClickAction::approve);
  EXPECT_TRUE(click->from_dialog);
  EXPECT_FALSE(click->with_note);
  EXPECT_EQ(click->value.id, value.id);
  EXPECT_EQ(click->value.job_hash, value.job_hash);
  EXPECT_EQ(click->reason, "checked the invoice");
}

TEST(OutcomeLine, SaysWhatHappened) {
  Outcome rejected{OutcomeKind::rejected, {"carol"}, {""}, 0, 1, "too <big>"};
  EXPECT_EQ(outcomeLine(rejected), ":no_entry: Rejected by carol: too &lt;big&gt;");
  Outcome noted{OutcomeKind::released, {"alice"}, {"U024BE7LH"}, 0, 1, "checked <invoice>"};
  EXPECT_EQ(outcomeLine(noted), ":white_check_mark: Approved by <@U024BE7LH> (alice): checked &lt;invoice&gt; · released");
  noted.kind = OutcomeKind::approved;
  EXPECT_EQ(outcomeLine(noted), ":white_check_mark: Approved by <@U024BE7LH> (alice): checked &lt;invoice&gt;");
  EXPECT_NE(outcomeLine(Outcome{OutcomeKind::expired, {}, {}, 0, 1, ""}).find("Expired"), std::string::npos);
  EXPECT_NE(outcomeLine(Outcome{OutcomeKind::policy_changed, {}, {}, 0, 1, ""}).find("policy changed"),
            std::string::npos);
}

TEST(ApprovalView, ReadsTheGetAnswer) {
  const std::string answer =
      R"({"status":"ok","code":200,"record":{"id":"job-1","state":"pending","topic":"t.x","rule":"r","requester":"",)"
      R"("expires_at":"","job_hash":"sha256:ab","policy_snapshot":"v1:sha256:cd","payload":"{}","quorum":2,"binding":1,)"
      R"("votes":[{"approver":"alice","policy_snapshot":"v1:sha256:cd"},{"approver":"old","policy_snapshot":"v1:sha256:00"}]}})";
  auto v = parseApprovalView(answer);
  ASSERT_TRUE(v) << v.error().message;
  EXPECT_EQ(v->quorum, 2);
  EXPECT_EQ(v->binding, 1);
  ASSERT_EQ(v->voters.size(), 1u);
  EXPECT_EQ(v->voters[0], "alice");
  EXPECT_EQ(parseApprovalView(R"({"status":"not_found","code":404})").error().code, Errc::not_found);
  auto groups = parseApprovalView(
      R"({"id":"j","state":"pending","job_hash":"h","policy_snapshot":"s","quorum":{"finance-leads":1,"security":2}})");
  ASSERT_TRUE(groups);
  EXPECT_EQ(groups->quorum, 3);
  EXPECT_FALSE(parseApprovalView(R"({"record":{"id":"x"}})"));
  EXPECT_FALSE(parseApprovalView("nope"));
}

TEST(BridgeEvent, RoutesByTopicAndEvent) {
  const std::vector<SlackChannelRoute> routes{{{"finance.>"}, "C0FINANCE"}, {{">"}, "C0APPROVALS"}};
  EXPECT_EQ(channelFor(routes, "finance.payment.execute"), "C0FINANCE");
  EXPECT_EQ(channelFor(routes, "ops.restart"), "C0APPROVALS");
  EXPECT_EQ(channelFor({{{"finance.>"}, "C0FINANCE"}}, "ops.restart"), std::nullopt);
  WebhookConfig hook{"https://h.example", {"held", "expired"}, "S", 10};
  EXPECT_TRUE(webhookWants(hook, "held"));
  EXPECT_FALSE(webhookWants(hook, "approved"));
  auto event = parseBridgeEvent(R"({"event":"held","approval_id":"a","topic":"t","actor":"","at":"x"})");
  ASSERT_TRUE(event);
  EXPECT_EQ(event->approval_id, "a");
  EXPECT_FALSE(parseBridgeEvent(R"({"approval_id":"a"})"));
  EXPECT_TRUE(slackCares("held"));
  EXPECT_FALSE(slackCares("denied"));
}

}  // namespace
}  // namespace countersign::bridge
