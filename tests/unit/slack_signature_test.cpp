#include <gtest/gtest.h>

#include "bridge/core/retry.hpp"
#include "bridge/core/signatures.hpp"

namespace countersign::bridge {
namespace {

// Slack's published example ("Verifying requests from Slack").
constexpr std::string_view kSecret = "8f742231b10e8888abcd99yyyzzz85a5";
constexpr std::string_view kTimestamp = "1531420618";
constexpr std::string_view kBody =
    "token=xyzz0WbapA4vBCDEFasx0q6G&team_id=T1DC2JH3J&team_domain=testteamnow&channel_id=G8PSS9T3V"
    "&channel_name=foobar&user_id=U2CERLKJA&user_name=roadrunner&command=%2Fwebhook-collect&text="
    "&response_url=https%3A%2F%2Fhooks.slack.com%2Fcommands%2FT1DC2JH3J%2F397700885554%2F96rGlfmibIGlgcZRskXaIFfN"
    "&trigger_id=398738663015.47445629121.803a0bc887a14d10d2c447fce8b6703c";
constexpr std::string_view kSignature = "v0=a2114d57b48eac39b9ad189dd8316235a7b4a8d21a10bd27519666489c69b503";
constexpr std::int64_t kNow = 1531420618;

TEST(SlackSignature, MatchesSlacksPublishedExample) {
  EXPECT_EQ(slackSignature(kSecret, kTimestamp, kBody), kSignature);
  EXPECT_EQ(verifySlackSignature(kSecret, kTimestamp, kSignature, kBody, kNow), SlackSignatureCheck::ok);
}

TEST(SlackSignature, WindowIs300SecondsEitherWay) {
  EXPECT_EQ(verifySlackSignature(kSecret, kTimestamp, kSignature, kBody, kNow + 300), SlackSignatureCheck::ok);
  EXPECT_EQ(verifySlackSignature(kSecret, kTimestamp, kSignature, kBody, kNow - 300), SlackSignatureCheck::ok);
  EXPECT_EQ(verifySlackSignature(kSecret, kTimestamp, kSignature, kBody, kNow + 301), SlackSignatureCheck::stale);
  EXPECT_EQ(verifySlackSignature(kSecret, kTimestamp, kSignature, kBody, kNow - 301), SlackSignatureCheck::stale);
}

TEST(SlackSignature, RefusesEveryChange) {
  std::string body(kBody);
  body.back() = 'd';
  EXPECT_EQ(verifySlackSignature(kSecret, kTimestamp, kSignature, body, kNow), SlackSignatureCheck::bad_signature);
  EXPECT_EQ(verifySlackSignature("another secret", kTimestamp, kSignature, kBody, kNow),
            SlackSignatureCheck::bad_signature);
  // The timestamp is signed: moving it (a replay made fresh) breaks the signature.
  EXPECT_EQ(verifySlackSignature(kSecret, "1531420619", kSignature, kBody, kNow), SlackSignatureCheck::bad_signature);
  std::string upper(kSignature);
  upper[5] = 'F';
  EXPECT_EQ(verifySlackSignature(kSecret, kTimestamp, upper, kBody, kNow), SlackSignatureCheck::bad_signature);
  EXPECT_EQ(verifySlackSignature(kSecret, kTimestamp, kSignature.substr(0, 60), kBody, kNow),
            SlackSignatureCheck::bad_signature);
  EXPECT_EQ(verifySlackSignature("", kTimestamp, slackSignature("", kTimestamp, kBody), kBody, kNow),
            SlackSignatureCheck::bad_signature);
}

TEST(SlackSignature, MissingOrMalformedHeaders) {
  EXPECT_EQ(verifySlackSignature(kSecret, "", kSignature, kBody, kNow), SlackSignatureCheck::missing);
  EXPECT_EQ(verifySlackSignature(kSecret, kTimestamp, "", kBody, kNow), SlackSignatureCheck::missing);
  EXPECT_EQ(verifySlackSignature(kSecret, "15314206l8", kSignature, kBody, kNow), SlackSignatureCheck::stale);
  EXPECT_EQ(verifySlackSignature(kSecret, "-1531420618", kSignature, kBody, kNow), SlackSignatureCheck::stale);
  EXPECT_EQ(verifySlackSignature(kSecret, "99999999999999999999", kSignature, kBody, kNow), SlackSignatureCheck::stale);
}

TEST(ConstantTimeEqual, ComparesLengthAndBytes) {
  EXPECT_TRUE(constantTimeEqual("abc", "abc"));
  EXPECT_FALSE(constantTimeEqual("abc", "abd"));
  EXPECT_FALSE(constantTimeEqual("abc", "abcd"));
  EXPECT_TRUE(constantTimeEqual("", ""));
}

TEST(WebhookSignature, IsHmacOfTimestampDotBody) {
  // Same construction as `printf '1700000000.{"a":1}' | openssl dgst -sha256 -hmac s3cret`.
  EXPECT_EQ(webhookSignature("s3cret", "1700000000", R"({"a":1})"),
            "v1=" + hmacSha256Hex("s3cret", R"(1700000000.{"a":1})"));
  EXPECT_EQ(hmacSha256Hex("key", "The quick brown fox jumps over the lazy dog"),
            "f7bc83f430538424b13298e6aa6fb143ef4d59a14946175997479dbc2d1a3cd8");  // openssl dgst -hmac key
  EXPECT_NE(webhookSignature("s3cret", "1700000000", "{}"), webhookSignature("s3cret", "1700000001", "{}"));
}

TEST(RetryPolicy, SlackDoublesFromOneSecondToThirty) {
  using std::chrono::milliseconds;
  EXPECT_EQ(retryDelay(kSlackRetry, 1), milliseconds(1000));
  EXPECT_EQ(retryDelay(kSlackRetry, 2), milliseconds(2000));
  EXPECT_EQ(retryDelay(kSlackRetry, 5), milliseconds(16000));
  EXPECT_EQ(retryDelay(kSlackRetry, 6), milliseconds(30000));
  EXPECT_EQ(retryDelay(kSlackRetry, 1000), milliseconds(30000));
}

TEST(RetryPolicy, RetryAfterWins) {
  EXPECT_EQ(retryDelay(kSlackRetry, 1, std::chrono::seconds(7)), std::chrono::milliseconds(7000));
  EXPECT_EQ(retryDelay(kSlackRetry, 1, std::chrono::seconds(0)), std::chrono::milliseconds(0));
  EXPECT_EQ(retryDelay(kSlackRetry, 1, std::chrono::seconds(99999)), std::chrono::milliseconds(3600000));
}

TEST(RetryPolicy, WebhooksGiveUpAfterMaxAttempts) {
  EXPECT_EQ(retryDelay(kWebhookRetry, 9), std::chrono::milliseconds(256000));
  EXPECT_EQ(retryDelay(kWebhookRetry, 10), std::nullopt);
  RetryPolicy three = kWebhookRetry;
  three.max_attempts = 3;
  EXPECT_TRUE(retryDelay(three, 2));
  EXPECT_FALSE(retryDelay(three, 3));
  EXPECT_EQ(retryDelay(kWebhookRetry, 8), std::chrono::milliseconds(128000));
  RetryPolicy many = kWebhookRetry;
  many.max_attempts = 100;
  EXPECT_EQ(retryDelay(many, 20), std::chrono::milliseconds(300000));
}

TEST(RetryPolicy, ParsesRetryAfterSecondsOnly) {
  EXPECT_EQ(parseRetryAfter("30"), std::chrono::seconds(30));
  EXPECT_EQ(parseRetryAfter(" 2 "), std::chrono::seconds(2));
  EXPECT_EQ(parseRetryAfter(""), std::nullopt);
  EXPECT_EQ(parseRetryAfter("-1"), std::nullopt);
  EXPECT_EQ(parseRetryAfter("Wed, 21 Oct 2015 07:28:00 GMT"), std::nullopt);
  EXPECT_EQ(parseRetryAfter("1.5"), std::nullopt);
  EXPECT_TRUE(isRetryableStatus(429));
  EXPECT_TRUE(isRetryableStatus(503));
  EXPECT_TRUE(isRetryableStatus(0));
  EXPECT_FALSE(isRetryableStatus(400));
  EXPECT_FALSE(isRetryableStatus(200));
}

}  // namespace
}  // namespace countersign::bridge
