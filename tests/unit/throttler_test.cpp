#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "countersign/policy.hpp"

namespace countersign {
namespace {

using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

std::shared_ptr<const Policy> throttlePolicy(std::string_view rate_lines) {
  const std::string yaml =
      "version: v1\nrules:\n  - id: slow\n    decision: throttle\n" + std::string(rate_lines);
  auto policy = Policy::parse(yaml, "test");
  EXPECT_TRUE(policy.has_value()) << (policy ? "" : policy.error().message);
  return policy ? *policy : nullptr;
}

struct Job {
  std::string payload = "{}";
  Headers headers;
  JobView view() const { return JobView("agents.jobs.t", "t", headers, payload); }
};

class ThrottlerTest : public ::testing::Test {
 protected:
  const Clock::time_point t0_ = Clock::time_point{} + 1h;
  Job job_;
};

TEST_F(ThrottlerTest, BurstThenRefusalWithRetryAfter) {
  const auto policy = throttlePolicy("    rate: 2/s\n");
  ASSERT_TRUE(policy);
  const Rule& rule = policy->rules()[0];
  Throttler throttler;
  EXPECT_TRUE(throttler.admit(rule, job_.view(), t0_).admitted);
  EXPECT_TRUE(throttler.admit(rule, job_.view(), t0_).admitted);
  const auto refused = throttler.admit(rule, job_.view(), t0_);
  EXPECT_FALSE(refused.admitted);
  EXPECT_EQ(refused.retry_after, 500ms);
  // Part of the way there: the wait shrinks.
  const auto later = throttler.admit(rule, job_.view(), t0_ + 200ms);
  EXPECT_FALSE(later.admitted);
  EXPECT_EQ(later.retry_after, 300ms);
}

TEST_F(ThrottlerTest, ExplicitBurst) {
  const auto policy = throttlePolicy("    rate: 1/m\n    burst: 3\n");
  ASSERT_TRUE(policy);
  const Rule& rule = policy->rules()[0];
  Throttler throttler;
  for (int i = 0; i < 3; ++i) EXPECT_TRUE(throttler.admit(rule, job_.view(), t0_).admitted) << i;
  const auto refused = throttler.admit(rule, job_.view(), t0_);
  EXPECT_FALSE(refused.admitted);
  EXPECT_EQ(refused.retry_after, 60s);
}

TEST_F(ThrottlerTest, RefillsOverTimeUpToTheBurst) {
  const auto policy = throttlePolicy("    rate: 10/s\n");
  ASSERT_TRUE(policy);
  const Rule& rule = policy->rules()[0];
  Throttler throttler;
  for (int i = 0; i < 10; ++i) ASSERT_TRUE(throttler.admit(rule, job_.view(), t0_).admitted);
  EXPECT_FALSE(throttler.admit(rule, job_.view(), t0_).admitted);
  // 100 ms later exactly one token is back.
  EXPECT_TRUE(throttler.admit(rule, job_.view(), t0_ + 100ms).admitted);
  EXPECT_FALSE(throttler.admit(rule, job_.view(), t0_ + 100ms).admitted);
  // A long pause refills to the burst, not beyond.
  const auto much_later = t0_ + 1h;
  int admitted = 0;
  while (throttler.admit(rule, job_.view(), much_later).admitted) ++admitted;
  EXPECT_EQ(admitted, 10);
}

TEST_F(ThrottlerTest, RetryAfterIsRoundedUpAndAtLeastOneMillisecond) {
  const auto thirds = throttlePolicy("    rate: 3/s\n    burst: 1\n");
  ASSERT_TRUE(thirds);
  Throttler throttler;
  EXPECT_TRUE(throttler.admit(thirds->rules()[0], job_.view(), t0_).admitted);
  EXPECT_EQ(throttler.admit(thirds->rules()[0], job_.view(), t0_).retry_after, 334ms);

  const auto fast = throttlePolicy("    rate: 100000/s\n    burst: 1\n");
  ASSERT_TRUE(fast);
  Throttler other;
  EXPECT_TRUE(other.admit(fast->rules()[0], job_.view(), t0_).admitted);
  const auto refused = other.admit(fast->rules()[0], job_.view(), t0_);
  EXPECT_FALSE(refused.admitted);
  EXPECT_EQ(refused.retry_after, 1ms);
}

TEST_F(ThrottlerTest, ClockGoingBackwardsDoesNotRefill) {
  const auto policy = throttlePolicy("    rate: 1/s\n    burst: 1\n");
  ASSERT_TRUE(policy);
  Throttler throttler;
  EXPECT_TRUE(throttler.admit(policy->rules()[0], job_.view(), t0_).admitted);
  EXPECT_FALSE(throttler.admit(policy->rules()[0], job_.view(), t0_ - 10s).admitted);
  EXPECT_FALSE(throttler.admit(policy->rules()[0], job_.view(), t0_ + 500ms).admitted);
  EXPECT_TRUE(throttler.admit(policy->rules()[0], job_.view(), t0_ + 1s).admitted);
}

TEST_F(ThrottlerTest, KeyedBucketsAreIndependent) {
  const auto policy = throttlePolicy("    rate: 1/h\n    key: tenant\n");
  ASSERT_TRUE(policy);
  const Rule& rule = policy->rules()[0];
  Throttler throttler;
  const Job a{R"({"tenant":"a"})"};
  const Job b{R"({"labels":{"tenant":"b"}})"};
  const Job a_number{R"({"tenant":1})"};
  EXPECT_TRUE(throttler.admit(rule, a.view(), t0_).admitted);
  EXPECT_FALSE(throttler.admit(rule, a.view(), t0_).admitted);
  EXPECT_TRUE(throttler.admit(rule, b.view(), t0_).admitted);
  EXPECT_FALSE(throttler.admit(rule, b.view(), t0_).admitted);
  EXPECT_TRUE(throttler.admit(rule, a_number.view(), t0_).admitted);
  // Jobs without the key share one "missing" bucket; a non-JSON payload has no key either.
  const Job none{R"({"other":1})"};
  const Job bytes{"not json"};
  EXPECT_TRUE(throttler.admit(rule, none.view(), t0_).admitted);
  EXPECT_FALSE(throttler.admit(rule, bytes.view(), t0_).admitted);
  // The empty string is a key value, not a missing key.
  const Job empty{R"({"tenant":""})"};
  EXPECT_TRUE(throttler.admit(rule, empty.view(), t0_).admitted);
}

TEST_F(ThrottlerTest, HeaderKeys) {
  const auto policy = throttlePolicy("    rate: 1/h\n    key: header.X-Tenant\n");
  ASSERT_TRUE(policy);
  const Rule& rule = policy->rules()[0];
  Throttler throttler;
  Job a;
  a.headers = {{"X-Tenant", "a"}};
  Job b;
  b.headers = {{"X-Tenant", "b"}};
  Job lower;  // byte-exact names: this one has no key
  lower.headers = {{"x-tenant", "a"}};
  EXPECT_TRUE(throttler.admit(rule, a.view(), t0_).admitted);
  EXPECT_FALSE(throttler.admit(rule, a.view(), t0_).admitted);
  EXPECT_TRUE(throttler.admit(rule, b.view(), t0_).admitted);
  EXPECT_TRUE(throttler.admit(rule, lower.view(), t0_).admitted);
  EXPECT_FALSE(throttler.admit(rule, Job{}.view(), t0_).admitted);
}

TEST_F(ThrottlerTest, KeyedBucketsAreCappedLeastRecentlyUsedFirst) {
  const auto policy = throttlePolicy("    rate: 1/h\n    key: tenant\n");
  ASSERT_TRUE(policy);
  const Rule& rule = policy->rules()[0];
  Throttler throttler(2);
  const Job a{R"({"tenant":"a"})"};
  const Job b{R"({"tenant":"b"})"};
  const Job c{R"({"tenant":"c"})"};
  EXPECT_TRUE(throttler.admit(rule, a.view(), t0_).admitted);
  EXPECT_TRUE(throttler.admit(rule, b.view(), t0_).admitted);
  EXPECT_FALSE(throttler.admit(rule, a.view(), t0_).admitted);  // a is now the most recent
  EXPECT_TRUE(throttler.admit(rule, c.view(), t0_).admitted);   // evicts b, not a
  EXPECT_FALSE(throttler.admit(rule, a.view(), t0_).admitted);  // a kept its empty bucket
  EXPECT_TRUE(throttler.admit(rule, b.view(), t0_).admitted);   // b starts again full
}

TEST_F(ThrottlerTest, BucketsSurviveAReloadOfTheSameRule) {
  const auto before = throttlePolicy("    rate: 1/h\n");
  const auto after = throttlePolicy("    rate: 1/h\n    when: {topic: t}\n");
  ASSERT_TRUE(before && after);
  ASSERT_NE(before->snapshot(), after->snapshot());
  Throttler throttler;
  EXPECT_TRUE(throttler.admit(before->rules()[0], job_.view(), t0_).admitted);
  EXPECT_FALSE(throttler.admit(after->rules()[0], job_.view(), t0_).admitted);
}

TEST_F(ThrottlerTest, ARateChangeResetsTheBucket) {
  const auto before = throttlePolicy("    rate: 1/h\n");
  const auto faster = throttlePolicy("    rate: 2/h\n");
  const auto keyed_before = throttlePolicy("    rate: 1/h\n    key: tenant\n");
  const auto keyed_after = throttlePolicy("    rate: 1/h\n    burst: 2\n    key: tenant\n");
  ASSERT_TRUE(before && faster && keyed_before && keyed_after);
  Throttler throttler;
  EXPECT_TRUE(throttler.admit(before->rules()[0], job_.view(), t0_).admitted);
  EXPECT_FALSE(throttler.admit(before->rules()[0], job_.view(), t0_).admitted);
  EXPECT_TRUE(throttler.admit(faster->rules()[0], job_.view(), t0_).admitted);

  const Job a{R"({"tenant":"a"})"};
  EXPECT_TRUE(throttler.admit(keyed_before->rules()[0], a.view(), t0_).admitted);
  EXPECT_FALSE(throttler.admit(keyed_before->rules()[0], a.view(), t0_).admitted);
  EXPECT_TRUE(throttler.admit(keyed_after->rules()[0], a.view(), t0_).admitted);
}

TEST_F(ThrottlerTest, RulesHaveTheirOwnBuckets) {
  auto policy = Policy::parse(R"(
version: v1
rules:
  - {id: one, decision: throttle, rate: 1/h}
  - {id: two, decision: throttle, rate: 1/h}
)",
                              "test");
  ASSERT_TRUE(policy) << policy.error().message;
  Throttler throttler;
  EXPECT_TRUE(throttler.admit((*policy)->rules()[0], job_.view(), t0_).admitted);
  EXPECT_TRUE(throttler.admit((*policy)->rules()[1], job_.view(), t0_).admitted);
  EXPECT_FALSE(throttler.admit((*policy)->rules()[0], job_.view(), t0_).admitted);
}

TEST_F(ThrottlerTest, ANonThrottleRuleIsAlwaysAdmitted) {
  auto policy = Policy::parse("version: v1\nrules:\n  - {id: a, decision: allow}\n", "test");
  ASSERT_TRUE(policy);
  Throttler throttler;
  for (int i = 0; i < 5; ++i) {
    EXPECT_TRUE(throttler.admit((*policy)->rules()[0], job_.view(), t0_).admitted);
  }
}

TEST_F(ThrottlerTest, ConcurrentAdmitsNeverExceedTheBurst) {
  const auto policy = throttlePolicy("    rate: 1/h\n    burst: 100\n    key: tenant\n");
  ASSERT_TRUE(policy);
  const Rule& rule = policy->rules()[0];
  Throttler throttler(8);
  std::atomic<int> admitted{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      const Job job{R"({"tenant":"shared"})"};
      const Job churn{R"({"tenant":"t)" + std::to_string(t) + R"("})"};
      for (int i = 0; i < 200; ++i) {
        if (throttler.admit(rule, job.view(), t0_).admitted) ++admitted;
        (void)throttler.admit(rule, churn.view(), t0_);
      }
    });
  }
  for (auto& thread : threads) thread.join();
  EXPECT_EQ(admitted.load(), 100);
}

}  // namespace
}  // namespace countersign
