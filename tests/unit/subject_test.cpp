#include "countersign/subject.hpp"

#include <gtest/gtest.h>

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

}  // namespace
}  // namespace countersign::subject
