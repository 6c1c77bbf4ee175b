// The list index's table: summaries from records, state from the decisive keys, paging by
// cursor with state and topic filters, older revisions ignored.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdio>

#include <string>
#include <vector>

#include "countersign/approval_index.hpp"
#include "countersign/record.hpp"

namespace countersign {
namespace {

std::string record(const std::string& id, const std::string& topic, ApprovalState state = ApprovalState::pending,
                   int votes = 0) {
  ApprovalRecord r;
  r.id = id;
  r.state = state;
  r.topic = topic;
  r.subject = "agents.jobs." + topic;
  r.target = "jobs." + topic;
  r.rule = "hold-" + topic;
  r.payload = R"({"amount":250,"memo":"a long payload the index does not keep"})";
  r.payload_is_json = true;
  r.job_id = "job-" + id;
  r.created_at = "2026-12-06T07:00:00Z";
  r.expires_at = "2026-12-06T07:30:00Z";
  r.requester = "agent-7";
  r.approvers = {"alice", "bob"};
  r.quorum.count = 2;
  for (int i = 0; i < votes; ++i) r.votes.push_back(ApprovalVote{.approver = "v" + std::to_string(i), .at = "x"});
  return toJson(r);
}

std::string decision(FinalDecision outcome) {
  return toJson(DecisionRecord{.decision = outcome, .by = "alice", .at = "2026-12-06T07:01:00Z"});
}

std::vector<std::string> ids(const std::optional<ApprovalPage>& page) {
  std::vector<std::string> out;
  EXPECT_TRUE(page.has_value()) << "the table did not answer";
  if (!page) return out;
  for (const auto& item : page->items) out.push_back(item.id);
  return out;
}

TEST(ApprovalSummaryTest, ReadsTheListedFieldsOfARecord) {
  const auto s = summarizeRecord(record("pay-1", "finance.payment.execute", ApprovalState::pending, 1));
  ASSERT_TRUE(s.has_value());
  EXPECT_EQ(s->id, "pay-1");
  EXPECT_EQ(s->job_id, "job-pay-1");
  EXPECT_EQ(s->topic, "finance.payment.execute");
  EXPECT_EQ(s->rule, "hold-finance.payment.execute");
  EXPECT_EQ(s->requester, "agent-7");
  EXPECT_EQ(s->expires_at, "2026-12-06T07:30:00Z");
  EXPECT_EQ(s->votes, 1);
  EXPECT_EQ(s->quorum, 2);
  EXPECT_EQ(s->approvers, (std::vector<std::string>{"alice", "bob"}));
  EXPECT_EQ(s->state(), ApprovalState::pending);
  EXPECT_FALSE(summarizeRecord("not json").has_value());
  EXPECT_FALSE(summarizeRecord(R"({"id":"x","state":"weird"})").has_value());
  EXPECT_FALSE(summarizeRecord(R"({"state":"pending"})").has_value());
}

TEST(ApprovalTableTest, StateComesFromTheDecisiveKeys) {
  ApprovalTable table;
  table.put("a", record("a", "finance.pay"), 1);
  table.put("b", record("b", "finance.pay"), 2);
  table.put("c", record("c", "finance.pay"), 3);
  table.put("d", record("d", "finance.pay"), 4);
  table.put("a/decision", decision(FinalDecision::approved), 5);
  table.put("a/released", R"({"at":"x"})", 6);
  table.put("b/decision", decision(FinalDecision::rejected), 7);
  table.put("c/decision", decision(FinalDecision::approved), 8);
  table.put("c/vote/0/alice", R"({"approver":"alice"})", 9);  // ignored
  auto in = [&](ApprovalState state) { return ids(table.page({.state = state, .limit = 100})); };
  EXPECT_EQ(in(ApprovalState::released), (std::vector<std::string>{"a"}));
  EXPECT_EQ(in(ApprovalState::rejected), (std::vector<std::string>{"b"}));
  EXPECT_EQ(in(ApprovalState::approved), (std::vector<std::string>{"c"}));
  EXPECT_EQ(in(ApprovalState::pending), (std::vector<std::string>{"d"}));
  EXPECT_EQ(table.size(), 4u);

  // A record whose view says release_unknown keeps that state under its decision.
  table.put("c", record("c", "finance.pay", ApprovalState::release_unknown), 10);
  EXPECT_EQ(in(ApprovalState::release_unknown), (std::vector<std::string>{"c"}));
  EXPECT_TRUE(in(ApprovalState::approved).empty());
}

TEST(ApprovalTableTest, DecisionBeforeItsRecordAndOlderRevisionsAreHandled) {
  ApprovalTable table;
  // Replayed out of order (another replica's decision seen before the record's write).
  table.put("x/decision", decision(FinalDecision::rejected), 5);
  EXPECT_TRUE(table.page({.limit = 10})->items.empty()) << "no record yet: not listed";
  table.put("x", record("x", "t.one", ApprovalState::pending, 0), 3);
  ASSERT_EQ(table.page({.limit = 10})->items.size(), 1u);
  EXPECT_EQ(table.page({.limit = 10})->items[0].state(), ApprovalState::rejected);
  // A newer write of the record replaces the summary; an older one does not.
  table.put("x", record("x", "t.one", ApprovalState::rejected, 1), 9);
  table.put("x", record("x", "t.one", ApprovalState::pending, 0), 4);
  EXPECT_EQ(table.page({.limit = 10})->items[0].votes, 1);
  EXPECT_EQ(table.page({.limit = 10})->items[0].state(), ApprovalState::rejected);
  // Values that are not ours are ignored.
  table.put("junk", "{not json", 11);
  table.put("", record("y", "t"), 12);
  EXPECT_EQ(table.size(), 1u);
}

TEST(ApprovalTableTest, PagesByCursorWithStateAndTopicFilters) {
  ApprovalTable table;
  std::uint64_t revision = 0;
  for (int i = 0; i < 25; ++i) {
    char id[16];
    std::snprintf(id, sizeof id, "p-%03d", i);
    table.put(id, record(id, i % 2 == 0 ? "finance.payment.execute" : "finance.refund.execute"), ++revision);
    if (i % 5 == 0) table.put(std::string(id) + "/decision", decision(FinalDecision::rejected), ++revision);
  }
  // Pending, 4 per page, by cursor: every pending id once, in order.
  std::vector<std::string> seen;
  std::string after;
  int pages = 0;
  do {
    const auto answered = table.page({.state = ApprovalState::pending, .after = after, .limit = 4});
    ASSERT_TRUE(answered.has_value());
    const ApprovalPage& page = *answered;
    for (const auto& item : page.items) {
      EXPECT_EQ(item.state(), ApprovalState::pending);
      seen.push_back(item.id);
    }
    after = page.next_after;
    ++pages;
    if (!after.empty()) {
      EXPECT_EQ(page.items.size(), 4u);
      EXPECT_EQ(after, page.items.back().id);
    }
  } while (!after.empty() && pages < 100);
  EXPECT_EQ(seen.size(), 20u);
  EXPECT_TRUE(std::is_sorted(seen.begin(), seen.end()));
  EXPECT_EQ(pages, 5);

  // Topic patterns: exact, `*` and `>`.
  const auto refunds = table.page({.state = ApprovalState::pending, .topic = "finance.refund.execute", .limit = 100});
  ASSERT_TRUE(refunds.has_value());
  EXPECT_EQ(refunds->items.size(), 10u);  // 12 odd ids, minus p-005 and p-015 (rejected)
  for (const auto& item : refunds->items) EXPECT_EQ(item.topic, "finance.refund.execute");
  EXPECT_EQ(table.page({.topic = "finance.*.execute", .limit = 100})->items.size(), 25u);
  EXPECT_EQ(table.page({.topic = "finance.>", .limit = 100})->items.size(), 25u);
  EXPECT_TRUE(table.page({.topic = "hr.>", .limit = 100})->items.empty());
  // A cursor past the end, and the all-states walk.
  EXPECT_TRUE(table.page({.after = "p-999", .limit = 10})->items.empty());
  const auto first = table.page({.limit = 3});
  EXPECT_EQ(ids(first), (std::vector<std::string>{"p-000", "p-001", "p-002"}));
  EXPECT_EQ(first->next_after, "p-002");
}

TEST(ApprovalTableTest, RecordsPastTheBucketsMaxAgeAreNotListed) {
  using namespace std::chrono_literals;
  ApprovalTable table(1h);
  const auto t0 = ApprovalTable::Clock::now();
  table.put("old", record("old", "t"), 1, t0 - 2h);
  table.put("new", record("new", "t"), 2, t0 - 10min);
  EXPECT_EQ(ids(table.page({.limit = 10}, t0)), (std::vector<std::string>{"new"}));
  // A later write of a record restarts its age.
  table.put("old", record("old", "t", ApprovalState::pending, 1), 3, t0);
  EXPECT_EQ(ids(table.page({.limit = 10}, t0)), (std::vector<std::string>{"new", "old"}));
  ApprovalTable forever;
  forever.put("old", record("old", "t"), 1, t0 - 24h * 365);
  EXPECT_EQ(forever.page({.limit = 10}, t0)->items.size(), 1u);
}


// Memory follows the open approvals: of the finished ones only the last `finished_kept` stay.
// Open ones are all listed, whatever was let go; a page that may show finished ones is then left
// to the store (nullopt), and approvals that finish later still count toward the bound.
TEST(ApprovalTableTest, FinishedApprovalsBeyondTheKeptWindowAreLetGoOpenOnesStay) {
  ApprovalTable table(std::chrono::seconds(0), 3);
  std::uint64_t revision = 0;
  char id[16];
  for (int i = 0; i < 10; ++i) {
    std::snprintf(id, sizeof id, "a-%02d", i);
    table.put(id, record(id, "finance.payment.execute"), ++revision);
  }
  // Finish a-00..a-04 in that order: rejected, released, expired, rejected, released.
  const FinalDecision outcomes[] = {FinalDecision::rejected, FinalDecision::approved, FinalDecision::expired,
                                    FinalDecision::rejected, FinalDecision::approved};
  for (int i = 0; i < 5; ++i) {
    std::snprintf(id, sizeof id, "a-%02d", i);
    table.put(std::string(id) + "/decision", decision(outcomes[i]), ++revision);
    if (outcomes[i] == FinalDecision::approved) table.put(std::string(id) + "/released", "x", ++revision);
  }
  // a-06 approved, not released yet: open, kept.
  table.put("a-06/decision", decision(FinalDecision::approved), ++revision);
  EXPECT_TRUE(table.forgotFinished());
  EXPECT_EQ(table.size(), 8u);  // 10 records, the 2 that finished first let go
  const auto pending = table.page({.state = ApprovalState::pending, .limit = 100});
  EXPECT_EQ(ids(pending), (std::vector<std::string>{"a-05", "a-07", "a-08", "a-09"}));
  EXPECT_EQ(ids(table.page({.state = ApprovalState::approved, .limit = 100})), std::vector<std::string>{"a-06"});
  // Pages that may show finished approvals: the store answers them.
  EXPECT_FALSE(table.page({.state = ApprovalState::released, .limit = 100}).has_value());
  EXPECT_FALSE(table.page({.state = ApprovalState::rejected, .limit = 100}).has_value());
  EXPECT_FALSE(table.page({.state = ApprovalState::expired, .limit = 100}).has_value());
  EXPECT_FALSE(table.page({.limit = 100}).has_value());
  // Finishing more keeps the bound; topic filters on open states still page.
  table.put("a-06/released", "x", ++revision);
  table.put("a-07/decision", decision(FinalDecision::rejected), ++revision);
  EXPECT_EQ(table.size(), 6u);
  EXPECT_EQ(ids(table.page({.state = ApprovalState::pending, .topic = "finance.>", .after = "a-05", .limit = 1})),
            std::vector<std::string>{"a-08"});
  // Under the bound nothing is let go and every page is answered.
  ApprovalTable roomy(std::chrono::seconds(0), 100);
  roomy.put("b-1", record("b-1", "t"), 1);
  roomy.put("b-1/decision", decision(FinalDecision::rejected), 2);
  EXPECT_FALSE(roomy.forgotFinished());
  EXPECT_EQ(ids(roomy.page({.state = ApprovalState::rejected, .limit = 10})), std::vector<std::string>{"b-1"});
}


// Tens of thousands of approvals in any order, a share of them finished and let go: every page
// of pending ones by cursor gives each pending id once, in order (the table's order is merged
// from batches of additions and drops let-go entries in batches), and a pending approval costs
// the table about its id's size plus a hundred bytes, not a node per field.
TEST(ApprovalTableTest, ManyApprovalsInAnyOrderPageCompletelyAndStaySmall) {
  ApprovalTable table(std::chrono::seconds(0), 1000);
  constexpr int kCount = 30000;
  std::vector<int> order(kCount);
  for (int i = 0; i < kCount; ++i) order[static_cast<std::size_t>(i)] = (i * 7919) % kCount;  // a permutation
  std::uint64_t revision = 0;
  std::vector<std::string> pending;
  char id[40];
  for (const int i : order) {
    std::snprintf(id, sizeof id, "%032x", i);
    // As countersign holds: the job's id is the approval's, times as countersign writes them.
    ApprovalRecord r;
    r.id = id;
    r.job_id = id;
    r.topic = "finance.payment.execute";
    r.rule = "payments";
    r.created_at = "2026-12-06T07:00:00.000Z";
    r.expires_at = "2026-12-06T07:30:00.000Z";
    r.approvers = {"alice", "bob"};
    r.payload = R"({"amount":250})";
    table.put(id, toJson(r), ++revision);
    if (i % 6 == 0) {
      table.put(std::string(id) + "/decision", decision(FinalDecision::rejected), ++revision);
    } else {
      pending.emplace_back(id);
    }
  }
  std::sort(pending.begin(), pending.end());
  EXPECT_EQ(table.size(), pending.size() + 1000);
  std::vector<std::string> seen;
  std::string after;
  for (int pages = 0; pages < 1000; ++pages) {
    const auto page = table.page({.state = ApprovalState::pending, .after = after, .limit = 500});
    ASSERT_TRUE(page.has_value());
    for (const auto& item : page->items) {
      EXPECT_EQ(item.topic, "finance.payment.execute");
      EXPECT_EQ(item.created_at, "2026-12-06T07:00:00.000Z");
      EXPECT_EQ(item.job_id, item.id);
      EXPECT_EQ(item.approvers, (std::vector<std::string>{"alice", "bob"}));
      seen.push_back(item.id);
    }
    after = page->next_after;
    if (after.empty()) break;
  }
  EXPECT_EQ(seen, pending);
  const double per_record = static_cast<double>(table.bytes()) / static_cast<double>(table.size());
  EXPECT_LT(per_record, 200) << per_record;
  // Text that is not kept compactly (a job id of its own, times written otherwise, a long id)
  // comes back as it was written.
  const std::string long_id = "zz-" + std::string(100, 'q');
  table.put(long_id, record(long_id, "hr.leave"), ++revision);
  const auto last = table.page({.state = ApprovalState::pending, .after = "zz", .limit = 5});
  ASSERT_TRUE(last.has_value());
  ASSERT_EQ(last->items.size(), 1u);
  EXPECT_EQ(last->items[0].id, long_id);
  EXPECT_EQ(last->items[0].job_id, "job-" + long_id);
  EXPECT_EQ(last->items[0].created_at, "2026-12-06T07:00:00Z");
  EXPECT_EQ(last->items[0].expires_at, "2026-12-06T07:30:00Z");
  EXPECT_EQ(last->items[0].requester, "agent-7");
  EXPECT_EQ(last->items[0].quorum, 2);
}

}  // namespace
}  // namespace countersign
