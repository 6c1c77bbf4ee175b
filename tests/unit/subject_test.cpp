#include "countersign/subject.hpp"

#include <gtest/gtest.h>

#include <string>
#include <vector>

namespace countersign::subject {
namespace {

TEST(Subject, Validity) {
  EXPECT_TRUE(isValid("a.b.c", false));
  EXPECT_TRUE(isValid("a.*.>", true));
  EXPECT_FALSE(isValid("a.*", false));
  EXPECT_FALSE(isValid("", true));
  EXPECT_FALSE(isValid("a..b", true));
  EXPECT_FALSE(isValid(".a", true));
  EXPECT_FALSE(isValid("a.", true));
  EXPECT_FALSE(isValid("a.>.b", true));
  EXPECT_FALSE(isValid("a b", true));
  EXPECT_FALSE(isValid("a.b*", true));
}

TEST(Subject, Matching) {
  EXPECT_TRUE(matches("a.b", "a.b"));
  EXPECT_FALSE(matches("a.b", "a.b.c"));
  EXPECT_FALSE(matches("a.b.c", "a.b"));
  EXPECT_TRUE(matches("a.*", "a.b"));
  EXPECT_FALSE(matches("a.*", "a.b.c"));
  EXPECT_TRUE(matches("a.>", "a.b.c"));
  EXPECT_FALSE(matches("a.>", "a"));
  EXPECT_TRUE(matches(">", "x"));
  EXPECT_TRUE(matches("*.b.>", "x.b.c.d"));
  EXPECT_FALSE(matches("*.b.>", "x.c.c.d"));
  EXPECT_TRUE(matches("_INBOX.>", "_INBOX.abc.def"));
}

TEST(Subject, Overlap) {
  EXPECT_TRUE(overlaps("jobs.>", "jobs.a"));
  EXPECT_TRUE(overlaps("jobs.*", "*.a"));
  EXPECT_TRUE(overlaps(">", "anything.at.all"));
  EXPECT_FALSE(overlaps("jobs.>", "agents.jobs.>"));
  EXPECT_FALSE(overlaps("a.*", "a.b.c"));
  EXPECT_FALSE(overlaps("a.>", "a"));
  EXPECT_TRUE(overlaps("a.*.c", "a.b.*"));
}

TEST(Subject, TopicAndTarget) {
  EXPECT_EQ(topicOf("agents.jobs.>", "agents.jobs.finance.payment.execute"), "finance.payment.execute");
  EXPECT_EQ(topicOf("agents.*.run", "agents.build.run"), "build");
  EXPECT_EQ(topicOf("a.*.b.>", "a.x.b.y.z"), "x.y.z");
  EXPECT_FALSE(topicOf("agents.jobs.>", "other.jobs.x"));
  EXPECT_EQ(targetFor("jobs.>", "finance.payment.execute"), "jobs.finance.payment.execute");
  EXPECT_EQ(targetFor("w.*.run", "build"), "w.build.run");
  EXPECT_EQ(targetFor("w.*.b.>", "x.y.z"), "w.x.b.y.z");
  EXPECT_FALSE(targetFor("w.*", "x.y"));
  EXPECT_FALSE(targetFor("w.*.*", "x"));
}

// "prefix.>" patterns take a shortcut over whole strings; it must agree with the token walk,
// which "*.>"-free patterns of the same shape with a leading '*' still take.
TEST(Subject, TailPatternShortcutAgreesWithTheTokenWalk) {
  const std::vector<std::string> subjects = {"agents.jobs.x", "agents.jobs.a.b.c", "agents.jobs",
                                             "agents.jobsx.y", "agents.jobs.", "agents.jobs.a..b",
                                             "other.jobs.x", "agents", "agents.jobs.>"};
  for (const auto& subject : subjects) {
    const auto fast = topicOf("agents.jobs.>", subject);
    // The same pattern with its first token as a wildcard walks the tokens; on subjects that
    // start with "agents." both must answer alike.
    const auto walked = topicOf("*.jobs.>", subject);
    if (subject.starts_with("agents.")) {
      ASSERT_EQ(fast.has_value(), walked.has_value()) << subject;
      if (fast) {
        // The walk also keeps the '*' token: drop it to compare.
        EXPECT_EQ("agents." + *fast, *walked) << subject;
      }
    } else {
      EXPECT_FALSE(fast) << subject;
    }
  }
  for (const std::string topic : {"x", "a.b.c", "a..b", ""}) {
    const auto fast = targetFor("jobs.>", topic);
    const auto walked = targetFor("*.>", "jobs." + topic);
    ASSERT_EQ(fast.has_value(), !topic.empty()) << topic;
    if (fast) {
      EXPECT_EQ(*fast, *walked) << topic;
    }
  }
}

}  // namespace
}  // namespace countersign::subject
