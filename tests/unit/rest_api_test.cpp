// The admin endpoints' routing, bearer-token rules and REST -> control mapping, without sockets.
#include "http/rest_api.hpp"

#include <gtest/gtest.h>

#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

#include "countersign/json.hpp"

namespace countersign::http {
namespace {

struct ControlCall {
  ControlOp op;
  std::string body;
};

// Records every control call and answers with `next`.
struct FakeControl {
  std::vector<ControlCall> calls;
  ControlReply next{"approved", 200, R"({"status":"approved","code":200})", ""};
};

class RestApiTest : public ::testing::Test {
 protected:
  RestApiTest() {
    config_.tokens = {
        ApiToken{"alice", "alice-secret", ApiToken::Scope::approve},
        ApiToken{"auditor", "read-secret", ApiToken::Scope::read},
    };
  }

  AdminHandlers handlers() {
    AdminHandlers h;
    h.readiness = [this] { return readiness_; };
    h.metrics = [] { return std::string("countersign_up 1\n"); };
    h.control = [this](ControlOp op, std::string body) {
      control_.calls.push_back({op, body});
      return control_.next;
    };
    return h;
  }

  HttpResponse call(std::string_view method, std::string_view target, std::string_view body = "",
                    std::optional<std::string> token = "alice-secret") {
    HttpHeaders headers{{"Host", "localhost"}};
    if (token) headers.emplace_back("Authorization", "Bearer " + *token);
    return AdminRouter(config_, handlers(), log_).route(method, target, headers, body);
  }

  // The one control request made so far, parsed.
  rapidjson::Document forwarded() {
    EXPECT_EQ(control_.calls.size(), 1u);
    if (control_.calls.empty()) return {};
    auto parsed = json::parseStrict(control_.calls.back().body);
    EXPECT_TRUE(parsed.has_value()) << control_.calls.back().body;
    return parsed ? std::move(*parsed) : rapidjson::Document();
  }

  static std::string str(const rapidjson::Value& doc, const char* name) {
    const auto it = doc.FindMember(name);
    if (it == doc.MemberEnd() || !it->value.IsString()) return "<missing>";
    return it->value.GetString();
  }

  static std::string field(const HttpResponse& r, const char* name) {
    auto parsed = json::parseStrict(r.body);
    if (!parsed || !parsed->IsObject()) return "<not json>";
    return str(*parsed, name);
  }

  AdminConfig config_;
  FakeControl control_;
  Readiness readiness_;
  NullLogger log_;
};

// --- health, readiness, metrics ---------------------------------------------------------------

TEST_F(RestApiTest, HealthzAnswersOkWithoutToken) {
  const auto r = call("GET", "/healthz", "", std::nullopt);
  EXPECT_EQ(r.status, 200);
  EXPECT_EQ(r.body, "ok");
  EXPECT_EQ(call("HEAD", "/healthz", "", std::nullopt).status, 200);
  EXPECT_EQ(call("GET", "/healthz?verbose=1", "", std::nullopt).status, 200);
}

TEST_F(RestApiTest, ReadyzReportsEachFailingCheckOnItsOwnLine) {
  readiness_ = Readiness{false, {"nats: disconnected", "store: bucket missing"}};
  auto r = call("GET", "/readyz", "", std::nullopt);
  EXPECT_EQ(r.status, 503);
  EXPECT_EQ(r.body, "nats: disconnected\nstore: bucket missing\n");

  readiness_ = Readiness{true, {}};
  r = call("GET", "/readyz", "", std::nullopt);
  EXPECT_EQ(r.status, 200);
  EXPECT_EQ(r.body, "ready");
}

TEST_F(RestApiTest, ReadyzNotReadyWithoutReasonsStillSaysSo) {
  readiness_ = Readiness{false, {}};
  const auto r = call("GET", "/readyz", "", std::nullopt);
  EXPECT_EQ(r.status, 503);
  EXPECT_EQ(r.body, "not ready\n");
}

TEST_F(RestApiTest, ReadyzCheckThatThrowsIsNotReady) {
  AdminHandlers h;
  h.readiness = []() -> Readiness { throw std::runtime_error("boom"); };
  const auto r = AdminRouter(config_, h, log_).route("GET", "/readyz", {}, "");
  EXPECT_EQ(r.status, 503);
  EXPECT_NE(r.body.find("boom"), std::string::npos);
}

TEST_F(RestApiTest, MissingHandlersMeanReadyAndEmptyMetricsAndUnavailableControl) {
  const AdminRouter router(config_, AdminHandlers{}, log_);
  EXPECT_EQ(router.route("GET", "/readyz", {}, "").status, 200);
  const auto metrics = router.route("GET", "/metrics", {}, "");
  EXPECT_EQ(metrics.status, 200);
  EXPECT_EQ(metrics.body, "");
  const auto api =
      router.route("GET", "/api/v1/approvals/a", {{"Authorization", "Bearer alice-secret"}}, "");
  EXPECT_EQ(api.status, 503);
  EXPECT_EQ(api.header("Countersign-Status"), "unavailable");
}

TEST_F(RestApiTest, MetricsUsesPrometheusContentType) {
  const auto r = call("GET", "/metrics", "", std::nullopt);
  EXPECT_EQ(r.status, 200);
  EXPECT_EQ(r.content_type, "text/plain; version=0.0.4; charset=utf-8");
  EXPECT_EQ(r.body, "countersign_up 1\n");
}

TEST_F(RestApiTest, MetricsThatThrowIsA500) {
  AdminHandlers h;
  h.metrics = []() -> std::string { throw std::runtime_error("boom"); };
  EXPECT_EQ(AdminRouter(config_, h, log_).route("GET", "/metrics", {}, "").status, 500);
}

// --- 404 / 405 ----------------------------------------------------------------------------------

TEST_F(RestApiTest, UnknownPathsAre404Json) {
  for (const char* target :
       {"/", "/nope", "/healthz/", "/api", "/api/v1", "/api/v2/approvals", "/api/v1/approval",
        "/api/v1/approvals/a/approve/extra", "/api/v1/approvals/a/delete",
        "/api/v1/approvals//approve", "/api/v1/approvals/a/", "http://host/healthz", "*"}) {
    const auto r = call("GET", target);
    EXPECT_EQ(r.status, 404) << target;
    EXPECT_EQ(r.content_type, "application/json") << target;
    EXPECT_EQ(r.header("Countersign-Status"), "not_found") << target;
    EXPECT_EQ(field(r, "reason"), "unknown_path") << target;
  }
  EXPECT_TRUE(control_.calls.empty());
}

TEST_F(RestApiTest, WrongMethodIs405WithAllow) {
  struct Case {
    const char* method;
    const char* target;
    const char* allow;
  };
  for (const Case& c :
       {Case{"POST", "/healthz", "GET, HEAD"}, Case{"DELETE", "/readyz", "GET, HEAD"},
        Case{"PUT", "/metrics", "GET, HEAD"}, Case{"POST", "/api/v1/approvals", "GET, HEAD"},
        Case{"DELETE", "/api/v1/approvals/a", "GET, HEAD"},
        Case{"GET", "/api/v1/approvals/a/approve", "POST"},
        Case{"PUT", "/api/v1/approvals/a/reject", "POST"}, Case{"get", "/healthz", "GET, HEAD"}}) {
    const auto r = call(c.method, c.target);
    EXPECT_EQ(r.status, 405) << c.method << " " << c.target;
    EXPECT_EQ(r.header("Allow"), c.allow) << c.method << " " << c.target;
    EXPECT_EQ(r.header("Countersign-Status"), "method_not_allowed");
  }
  EXPECT_TRUE(control_.calls.empty());
}

// --- authentication -----------------------------------------------------------------------------

TEST_F(RestApiTest, MissingTokenIs401WithBearerChallenge) {
  for (const auto& [method, target] :
       std::vector<std::pair<const char*, const char*>>{{"GET", "/api/v1/approvals"},
                                                        {"GET", "/api/v1/approvals/a"},
                                                        {"POST", "/api/v1/approvals/a/approve"},
                                                        {"POST", "/api/v1/approvals/a/reject"}}) {
    const auto r = call(method, target, "", std::nullopt);
    EXPECT_EQ(r.status, 401) << target;
    EXPECT_TRUE(r.header("WWW-Authenticate").starts_with("Bearer")) << target;
    EXPECT_EQ(r.header("Countersign-Status"), "unauthorized");
  }
  EXPECT_TRUE(control_.calls.empty());
}

TEST_F(RestApiTest, UnknownTokenIs401InvalidToken) {
  for (const char* token : {"wrong", "alice-secreT", "alice-secret-", "alice-secre", "x"}) {
    const auto r = call("POST", "/api/v1/approvals/a/approve", "", std::string(token));
    EXPECT_EQ(r.status, 401) << token;
    EXPECT_NE(r.header("WWW-Authenticate").find("invalid_token"), std::string_view::npos);
  }
  EXPECT_TRUE(control_.calls.empty());
}

TEST_F(RestApiTest, MalformedAuthorizationIs401) {
  const AdminRouter router(config_, handlers(), log_);
  for (const char* value : {"alice-secret", "Basic alice-secret", "Bearer", "Bearer ", "Bearer  ",
                            "Beareralice-secret", "Token alice-secret"}) {
    const auto r = router.route("GET", "/api/v1/approvals", {{"Authorization", value}}, "");
    EXPECT_EQ(r.status, 401) << value;
    EXPECT_TRUE(r.header("WWW-Authenticate").starts_with("Bearer")) << value;
  }
  // Two Authorization headers are ambiguous even when one of them is right.
  const auto twice = router.route(
      "GET", "/api/v1/approvals",
      {{"Authorization", "Bearer read-secret"}, {"authorization", "Bearer alice-secret"}}, "");
  EXPECT_EQ(twice.status, 401);
  EXPECT_TRUE(control_.calls.empty());
}

TEST_F(RestApiTest, SchemeAndHeaderNameAreCaseInsensitiveAndSpacesTrimmed) {
  const AdminRouter router(config_, handlers(), log_);
  EXPECT_EQ(router.route("GET", "/api/v1/approvals", {{"authorization", "bearer alice-secret"}}, "")
                .status,
            200);
  EXPECT_EQ(
      router.route("GET", "/api/v1/approvals", {{"AUTHORIZATION", "BEARER   alice-secret  "}}, "")
          .status,
      200);
  EXPECT_EQ(control_.calls.size(), 2u);
}

TEST_F(RestApiTest, NoTokensConfiguredRefusesEverything) {
  config_.tokens.clear();
  EXPECT_EQ(call("GET", "/api/v1/approvals").status, 401);
  EXPECT_EQ(call("POST", "/api/v1/approvals/a/approve").status, 401);
  // An empty configured token must not match an empty presented one.
  config_.tokens = {ApiToken{"nobody", "", ApiToken::Scope::approve}};
  const AdminRouter router(config_, handlers(), log_);
  EXPECT_FALSE(router.hasTokens());
  EXPECT_EQ(router.route("GET", "/api/v1/approvals", {{"Authorization", "Bearer "}}, "").status,
            401);
  EXPECT_EQ(router.route("GET", "/api/v1/approvals", {{"Authorization", "Bearer"}}, "").status,
            401);
  EXPECT_TRUE(control_.calls.empty());
  // The health endpoints do not need tokens at all.
  EXPECT_EQ(router.route("GET", "/healthz", {}, "").status, 200);
}

TEST_F(RestApiTest, ReadScopeMayGetAndListButNotDecide) {
  EXPECT_EQ(call("GET", "/api/v1/approvals", "", "read-secret").status, 200);
  EXPECT_EQ(call("GET", "/api/v1/approvals/a", "", "read-secret").status, 200);
  EXPECT_EQ(control_.calls.size(), 2u);
  for (const char* target : {"/api/v1/approvals/a/approve", "/api/v1/approvals/a/reject"}) {
    const auto r = call("POST", target, R"({"reason":"x"})", "read-secret");
    EXPECT_EQ(r.status, 403) << target;
    EXPECT_EQ(r.header("Countersign-Status"), "forbidden");
    EXPECT_NE(r.header("WWW-Authenticate").find("insufficient_scope"), std::string_view::npos);
  }
  EXPECT_EQ(control_.calls.size(), 2u);
}

TEST_F(RestApiTest, ConstantTimeEqualsComparesWholeStrings) {
  EXPECT_TRUE(constantTimeEquals("", ""));
  EXPECT_TRUE(constantTimeEquals("abc", "abc"));
  EXPECT_FALSE(constantTimeEquals("abc", "abd"));
  EXPECT_FALSE(constantTimeEquals("abc", "xbc"));
  EXPECT_FALSE(constantTimeEquals("abc", "abcd"));
  EXPECT_FALSE(constantTimeEquals("abc", ""));
}

// --- approve / reject -> control ----------------------------------------------------------------

TEST_F(RestApiTest, ApproveForwardsReasonWithTheTokensApproverAndThePathsId) {
  const auto r = call("POST", "/api/v1/approvals/job-42/approve",
                      R"({"reason":"validated invoice","approver":"mallory","id":"other"})");
  EXPECT_EQ(r.status, 200);
  ASSERT_EQ(control_.calls.size(), 1u);
  EXPECT_EQ(control_.calls[0].op, ControlOp::approve);
  const auto doc = forwarded();
  EXPECT_EQ(str(doc, "id"), "job-42");
  EXPECT_EQ(str(doc, "approver"), "alice");
  EXPECT_EQ(str(doc, "reason"), "validated invoice");
}

TEST_F(RestApiTest, RejectIsForwardedAsReject) {
  control_.next = ControlReply{"rejected", 200, R"({"status":"rejected","code":200})", ""};
  const auto r = call("POST", "/api/v1/approvals/job-42/reject", R"({"reason":"wrong amount"})");
  EXPECT_EQ(r.status, 200);
  EXPECT_EQ(r.header("Countersign-Status"), "rejected");
  ASSERT_EQ(control_.calls.size(), 1u);
  EXPECT_EQ(control_.calls[0].op, ControlOp::reject);
  const auto doc = forwarded();
  EXPECT_EQ(str(doc, "approver"), "alice");
  EXPECT_EQ(str(doc, "reason"), "wrong amount");
}

TEST_F(RestApiTest, JobHashAndSnapshotAreForwardedAndUnknownFieldsDropped) {
  call("POST", "/api/v1/approvals/j/approve",
       R"({"job_hash":"sha256:ab","policy_snapshot":"v1:sha256:cd","extra":{"x":1}})");
  const auto doc = forwarded();
  EXPECT_EQ(str(doc, "job_hash"), "sha256:ab");
  EXPECT_EQ(str(doc, "policy_snapshot"), "v1:sha256:cd");
  EXPECT_FALSE(doc.HasMember("extra"));
  EXPECT_FALSE(doc.HasMember("reason"));
}

TEST_F(RestApiTest, WronglyTypedFieldsReachControlUnchangedSoItNamesThem) {
  call("POST", "/api/v1/approvals/j/approve", R"({"reason":5,"job_hash":null})");
  const auto doc = forwarded();
  ASSERT_TRUE(doc.HasMember("reason"));
  EXPECT_TRUE(doc["reason"].IsInt());
  ASSERT_TRUE(doc.HasMember("job_hash"));
  EXPECT_TRUE(doc["job_hash"].IsNull());
}

TEST_F(RestApiTest, EmptyOrBlankBodyIsAllowed) {
  for (const char* body : {"", " \r\n\t"}) {
    control_.calls.clear();
    const auto r = call("POST", "/api/v1/approvals/j/approve", body);
    EXPECT_EQ(r.status, 200);
    const auto doc = forwarded();
    EXPECT_EQ(str(doc, "id"), "j");
    EXPECT_EQ(str(doc, "approver"), "alice");
    EXPECT_EQ(doc.MemberCount(), 2u);
  }
}

TEST_F(RestApiTest, NonJsonOrNonObjectBodyIs400Body) {
  for (const char* body : {"reason=validated", "{", R"(["reason"])", "\"text\"", "null", "1",
                           R"({"reason":"a","reason":"b"})", "\xEF\xBB\xBF{}"}) {
    const auto r = call("POST", "/api/v1/approvals/j/approve", body);
    EXPECT_EQ(r.status, 400) << body;
    EXPECT_EQ(r.header("Countersign-Status"), "bad_request");
    EXPECT_EQ(field(r, "field"), "body") << body;
  }
  EXPECT_TRUE(control_.calls.empty());
}

TEST_F(RestApiTest, BodyBeyond64KiBIs413) {
  const std::string big = R"({"reason":")" + std::string(kMaxRequestBody, 'x') + R"("})";
  const auto r = call("POST", "/api/v1/approvals/j/approve", big);
  EXPECT_EQ(r.status, 413);
  EXPECT_EQ(r.header("Countersign-Status"), "too_large");
  EXPECT_TRUE(control_.calls.empty());
  EXPECT_EQ(AdminRouter::tooLarge().status, 413);
}

TEST_F(RestApiTest, EveryControlStatusMapsToItsHttpStatus) {
  struct Case {
    const char* status;
    int code;
  };
  for (const Case& c :
       {Case{"approved", 200}, Case{"approved", 202}, Case{"already_approved", 200},
        Case{"rejected", 200}, Case{"already_rejected", 200}, Case{"bad_request", 400},
        Case{"not_found", 404}, Case{"conflict", 409}, Case{"expired", 410}}) {
    const std::string body =
        std::string(R"({"status":")") + c.status + R"(","code":)" + std::to_string(c.code) + "}";
    control_.next = ControlReply{c.status, c.code, body, ""};
    const auto r = call("POST", "/api/v1/approvals/j/approve");
    EXPECT_EQ(r.status, c.code) << c.status;
    EXPECT_EQ(r.body, body);
    EXPECT_EQ(r.content_type, "application/json");
    EXPECT_EQ(r.header("Countersign-Status"), c.status);
  }
}

TEST_F(RestApiTest, ControlFailuresAre500NotCrashes) {
  control_.next = ControlReply{"weird", 0, "{}", ""};
  EXPECT_EQ(call("GET", "/api/v1/approvals/j").status, 500);

  AdminHandlers h;
  h.control = [](ControlOp, std::string) -> ControlReply { throw std::runtime_error("boom"); };
  const auto r = AdminRouter(config_, h, log_)
                     .route("POST", "/api/v1/approvals/j/approve",
                            {{"Authorization", "Bearer alice-secret"}}, "");
  EXPECT_EQ(r.status, 500);
  EXPECT_EQ(r.header("Countersign-Status"), "internal");
}

// --- get / list and URL decoding ----------------------------------------------------------------

TEST_F(RestApiTest, GetForwardsTheDecodedId) {
  call("GET", "/api/v1/approvals/job%2F1%20x+y%25");
  ASSERT_EQ(control_.calls.size(), 1u);
  EXPECT_EQ(control_.calls[0].op, ControlOp::get);
  const auto doc = forwarded();
  EXPECT_EQ(str(doc, "id"), "job/1 x+y%");  // '+' is literal in a path
  EXPECT_EQ(doc.MemberCount(), 1u);
}

TEST_F(RestApiTest, ApproveDecodesTheIdToo) {
  call("POST", "/api/v1/approvals/%C3%A9t%C3%A9/approve");
  EXPECT_EQ(str(forwarded(), "id"), "\xC3\xA9t\xC3\xA9");
}

TEST_F(RestApiTest, BadPercentEncodingInIdIs400) {
  for (const auto& [method, target] :
       std::vector<std::pair<const char*, const char*>>{{"GET", "/api/v1/approvals/a%zz"},
                                                        {"GET", "/api/v1/approvals/a%2"},
                                                        {"POST", "/api/v1/approvals/%/approve"},
                                                        {"POST", "/api/v1/approvals/%g1/reject"}}) {
    const auto r = call(method, target);
    EXPECT_EQ(r.status, 400) << target;
    EXPECT_EQ(field(r, "field"), "id") << target;
  }
  EXPECT_TRUE(control_.calls.empty());
}

TEST_F(RestApiTest, ListForwardsDecodedQueryParameters) {
  call("GET", "/api/v1/approvals?state=pending&limit=5&after=a%2Bb+c&other=ignored");
  ASSERT_EQ(control_.calls.size(), 1u);
  EXPECT_EQ(control_.calls[0].op, ControlOp::list);
  const auto doc = forwarded();
  EXPECT_EQ(str(doc, "state"), "pending");
  ASSERT_TRUE(doc.HasMember("limit"));
  ASSERT_TRUE(doc["limit"].IsInt());
  EXPECT_EQ(doc["limit"].GetInt(), 5);
  EXPECT_EQ(str(doc, "after"), "a+b c");
  EXPECT_FALSE(doc.HasMember("other"));
}

TEST_F(RestApiTest, ListWithoutOrWithEmptyParametersSendsAnEmptyRequest) {
  for (const char* target :
       {"/api/v1/approvals", "/api/v1/approvals?", "/api/v1/approvals?state=&limit=&after=&"}) {
    control_.calls.clear();
    call("GET", target);
    EXPECT_EQ(forwarded().MemberCount(), 0u) << target;
  }
}

TEST_F(RestApiTest, ListBadParametersAre400WithTheField) {
  struct Case {
    const char* query;
    const char* field;
  };
  for (const Case& c :
       {Case{"limit=abc", "limit"}, Case{"limit=5x", "limit"}, Case{"limit=99999999999", "limit"},
        Case{"limit=-", "limit"}, Case{"state=pending&state=approved", "state"},
        Case{"after=%G0", "query"}}) {
    const auto r = call("GET", std::string("/api/v1/approvals?") + c.query);
    EXPECT_EQ(r.status, 400) << c.query;
    EXPECT_EQ(field(r, "field"), c.field) << c.query;
  }
  EXPECT_TRUE(control_.calls.empty());
}

TEST_F(RestApiTest, OutOfRangeButNumericLimitIsControlsToJudge) {
  call("GET", "/api/v1/approvals?limit=0");
  const auto doc = forwarded();
  ASSERT_TRUE(doc.HasMember("limit"));
  EXPECT_EQ(doc["limit"].GetInt(), 0);
}

TEST(PercentDecode, DecodesAndRefusesBrokenEscapes) {
  EXPECT_EQ(percentDecode("a%20b%2fc", false), "a b/c");
  EXPECT_EQ(percentDecode("a+b", false), "a+b");
  EXPECT_EQ(percentDecode("a+b", true), "a b");
  EXPECT_EQ(percentDecode("%00", false), std::string(1, '\0'));
  EXPECT_EQ(percentDecode("", false), "");
  EXPECT_EQ(percentDecode("%", false), std::nullopt);
  EXPECT_EQ(percentDecode("%4", false), std::nullopt);
  EXPECT_EQ(percentDecode("%4g", false), std::nullopt);
  EXPECT_EQ(percentDecode("ab%", false), std::nullopt);
}

TEST(ParseQuery, SplitsAndDecodes) {
  const auto q = parseQuery("a=1&b=x+y&&c&d=%3D");
  ASSERT_TRUE(q.has_value());
  ASSERT_EQ(q->size(), 4u);
  EXPECT_EQ((*q)[0], (std::pair<std::string, std::string>{"a", "1"}));
  EXPECT_EQ((*q)[1], (std::pair<std::string, std::string>{"b", "x y"}));
  EXPECT_EQ((*q)[2], (std::pair<std::string, std::string>{"c", ""}));
  EXPECT_EQ((*q)[3], (std::pair<std::string, std::string>{"d", "="}));
  EXPECT_FALSE(parseQuery("a=%").has_value());
  EXPECT_FALSE(parseQuery("%zz=1").has_value());
}

}  // namespace
}  // namespace countersign::http
