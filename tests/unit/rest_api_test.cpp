// The admin endpoints' routing, bearer-token rules and REST -> control mapping, without sockets.
#include "http/rest_api.hpp"

#include <gtest/gtest.h>

#include <fstream>
#include <optional>
#include <regex>
#include <set>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

#include "countersign/json.hpp"
#include "countersign/record.hpp"
#include "http/evidence.hpp"
#include "unit/fakes.hpp"

namespace countersign::http {
namespace {

struct ControlCall {
  ControlOp op;
  std::string body;
};

// Records every control call and answers with `next`.
struct FakeControl {
  std::vector<ControlCall> calls;
  ControlReply next{Outcome::approved, 200, R"({"status":"approved","code":200})", ""};
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
       {"/nope", "/healthz/", "/api", "/api/v1", "/api/v2/approvals", "/api/v1/approval",
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
  control_.next = ControlReply{Outcome::rejected, 200, R"({"status":"rejected","code":200})", ""};
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
    Outcome status;
    int code;
  };
  for (const Case& c :
       {Case{Outcome::approved, 200}, Case{Outcome::approved, 202}, Case{Outcome::already_approved, 200},
        Case{Outcome::rejected, 200}, Case{Outcome::already_rejected, 200}, Case{Outcome::bad_request, 400},
        Case{Outcome::not_found, 404}, Case{Outcome::conflict, 409}, Case{Outcome::expired, 410}}) {
    const std::string body =
        std::string(R"({"status":")") + std::string(wireName(c.status)) + R"(","code":)" + std::to_string(c.code) + "}";
    control_.next = ControlReply{c.status, c.code, body, ""};
    const auto r = call("POST", "/api/v1/approvals/j/approve");
    EXPECT_EQ(r.status, c.code) << c.status;
    EXPECT_EQ(r.body, body);
    EXPECT_EQ(r.content_type, "application/json");
    EXPECT_EQ(r.header("Countersign-Status"), wireName(c.status));
  }
}

TEST_F(RestApiTest, ControlFailuresAre500NotCrashes) {
  control_.next = ControlReply{Outcome::ok, 0, "{}", ""};
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

// --- the reviewer console's routes --------------------------------------------------------------

TEST_F(RestApiTest, ConsolePagesAreServedWithASelfOnlyPolicyAndNoToken) {
  for (const char* path : {"/ui/", "/ui/approvals/pay-1", "/ui/approvals/a%3Cb"}) {
    const auto r = call("GET", path, "", std::nullopt);
    EXPECT_EQ(r.status, 200) << path;
    EXPECT_EQ(r.content_type, "text/html; charset=utf-8") << path;
    EXPECT_TRUE(r.header("Content-Security-Policy").starts_with("default-src 'self'")) << path;
    EXPECT_EQ(r.header("X-Frame-Options"), "DENY");
    EXPECT_NE(r.body.find("<script src=\"/ui/app.js\""), std::string::npos);
    // No inline script, no inline handler, nothing from another origin.
    EXPECT_EQ(std::regex_search(r.body, std::regex("<script(?![^>]*src=)", std::regex::ECMAScript)), false);
    EXPECT_EQ(r.body.find("http://"), std::string::npos);
    EXPECT_EQ(r.body.find("https://"), std::string::npos);
  }
  EXPECT_EQ(call("GET", "/ui/app.js", "", std::nullopt).content_type, "text/javascript; charset=utf-8");
  EXPECT_EQ(call("GET", "/ui/app.css", "", std::nullopt).content_type, "text/css; charset=utf-8");
  EXPECT_EQ(call("GET", "/ui/favicon.svg", "", std::nullopt).content_type, "image/svg+xml");
  EXPECT_EQ(call("GET", "/ui/missing.js", "", std::nullopt).status, 404);
  EXPECT_EQ(call("GET", "/ui/../rest_api.cpp", "", std::nullopt).status, 404);
  EXPECT_EQ(call("POST", "/ui/", "", std::nullopt).status, 405);
  const auto root = call("GET", "/", "", std::nullopt);
  EXPECT_EQ(root.status, 302);
  EXPECT_EQ(root.header("Location"), "/ui/");
  EXPECT_EQ(call("GET", "/ui", "", std::nullopt).header("Location"), "/ui/");
}

TEST_F(RestApiTest, ConsoleScriptBuildsTheDomFromTextOnly) {
  const std::string js = call("GET", "/ui/app.js", "", std::nullopt).body;
  ASSERT_FALSE(js.empty());
  for (const char* sink : {"innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval(",
                           "new Function", "localStorage", "document.cookie"}) {
    EXPECT_EQ(js.find(sink), std::string::npos) << sink;
  }
}

TEST_F(RestApiTest, WhoamiNamesTheTokensApproverAndScope) {
  auto r = call("GET", "/api/v1/whoami");
  EXPECT_EQ(r.status, 200);
  EXPECT_EQ(field(r, "approver"), "alice");
  EXPECT_EQ(field(r, "scope"), "approve");
  r = call("GET", "/api/v1/whoami", "", "read-secret");
  EXPECT_EQ(field(r, "scope"), "read");
  EXPECT_EQ(call("GET", "/api/v1/whoami", "", "wrong").status, 401);
  EXPECT_EQ(call("GET", "/api/v1/whoami", "", std::nullopt).status, 401);
}

TEST_F(RestApiTest, CookiesAreNotCredentials) {
  const AdminRouter router(config_, handlers(), log_);
  for (const char* target : {"/api/v1/approvals", "/api/v1/whoami", "/api/v1/events"}) {
    const auto r = router.route("GET", target, {{"Cookie", "token=alice-secret; Authorization=Bearer alice-secret"}}, "");
    EXPECT_EQ(r.status, 401) << target;
  }
  const auto post = router.route("POST", "/api/v1/approvals/a/approve", {{"Cookie", "token=alice-secret"}}, "{}");
  EXPECT_EQ(post.status, 401);
  EXPECT_TRUE(control_.calls.empty());
  // No preflight is answered, so a page of another origin cannot send the Authorization header.
  const auto preflight = router.route("OPTIONS", "/api/v1/approvals/a/approve", {{"Origin", "https://evil.example"}}, "");
  EXPECT_EQ(preflight.status, 405);
  EXPECT_EQ(preflight.header("Access-Control-Allow-Origin"), "");
}

TEST_F(RestApiTest, EvidenceIsReadableWithAReadTokenAndComesFromTheHandler) {
  std::vector<std::string> asked;
  AdminHandlers h = handlers();
  h.evidence = [&](const std::string& id) {
    asked.push_back(id);
    return ControlReply{Outcome::ok, 200, R"({"status":"ok","code":200})", "", {}};
  };
  const AdminRouter router(config_, h, log_);
  const auto r = router.route("GET", "/api/v1/approvals/a%2Fb/evidence", {{"Authorization", "Bearer read-secret"}}, "");
  EXPECT_EQ(r.status, 200);
  ASSERT_EQ(asked.size(), 1u);
  EXPECT_EQ(asked[0], "a/b");
  EXPECT_EQ(router.route("POST", "/api/v1/approvals/a/evidence", {{"Authorization", "Bearer read-secret"}}, "").status, 405);
  EXPECT_EQ(router.route("GET", "/api/v1/approvals/a/evidence", {}, "").status, 401);
  EXPECT_EQ(call("GET", "/api/v1/approvals/a/evidence").status, 503);  // not wired
}

TEST_F(RestApiTest, TicketsAreSingleUseAndExpireAfter60Seconds) {
  auto now = std::chrono::steady_clock::time_point{};
  AdminHandlers h = handlers();
  h.now = [&] { return now; };
  const AdminRouter router(config_, h, log_);
  auto issue = [&] {
    const auto r = router.route("POST", "/api/v1/tickets", {{"Authorization", "Bearer read-secret"}}, "");
    EXPECT_EQ(r.status, 201);
    return field(r, "ticket");
  };
  auto open = [&](const std::string& query, HttpHeaders headers = {}) {
    return router.eventStream("GET", "/api/v1/events" + query, headers);
  };
  EXPECT_EQ(router.route("GET", "/api/v1/tickets", {{"Authorization", "Bearer read-secret"}}, "").status, 405);
  EXPECT_EQ(router.route("POST", "/api/v1/tickets", {}, "").status, 401);

  const std::string ticket = issue();
  EXPECT_EQ(ticket.size(), 64u);
  auto first = open("?ticket=" + ticket);
  ASSERT_TRUE(std::holds_alternative<AdminRouter::EventStreamStart>(first));
  EXPECT_EQ(std::get<AdminRouter::EventStreamStart>(first).approver, "auditor");
  auto again = open("?ticket=" + ticket);  // used up
  ASSERT_TRUE(std::holds_alternative<HttpResponse>(again));
  EXPECT_EQ(std::get<HttpResponse>(again).status, 401);

  const std::string late = issue();
  now += std::chrono::seconds(61);
  auto expired = open("?ticket=" + late);
  ASSERT_TRUE(std::holds_alternative<HttpResponse>(expired));
  EXPECT_EQ(std::get<HttpResponse>(expired).status, 401);
  EXPECT_TRUE(std::holds_alternative<HttpResponse>(open("?ticket=")));
  EXPECT_TRUE(std::holds_alternative<HttpResponse>(open("?ticket=" + std::string(64, '0'))));
  EXPECT_TRUE(std::holds_alternative<HttpResponse>(open("")));  // no token, no ticket

  // A bearer token works too; Last-Event-ID (header or query) is passed on.
  auto bearer = open("", {{"Authorization", "Bearer alice-secret"}, {"Last-Event-ID", "e-7"}});
  ASSERT_TRUE(std::holds_alternative<AdminRouter::EventStreamStart>(bearer));
  EXPECT_EQ(std::get<AdminRouter::EventStreamStart>(bearer).approver, "alice");
  EXPECT_EQ(std::get<AdminRouter::EventStreamStart>(bearer).last_event_id, "e-7");
  auto post = router.eventStream("POST", "/api/v1/events", {{"Authorization", "Bearer alice-secret"}});
  ASSERT_TRUE(std::holds_alternative<HttpResponse>(post));
  EXPECT_EQ(std::get<HttpResponse>(post).status, 405);
}

// docs/openapi.yaml describes exactly the routes the router answers. The file keeps one layout:
// each path a key indented by two spaces under `paths:`, each method by four.
TEST_F(RestApiTest, OpenApiDocumentListsExactlyTheRoutesTheServerHas) {
  std::ifstream in(std::string(COUNTERSIGN_SOURCE_DIR) + "/docs/openapi.yaml");
  ASSERT_TRUE(in) << "docs/openapi.yaml missing";
  std::set<std::string> documented;
  std::string line;
  std::string path;
  bool in_paths = false;
  bool openapi3 = false;
  const std::regex path_key(R"(^  (/[^:]*):\s*$)");
  const std::regex method_key(R"(^    (get|post|put|patch|delete|head|options):\s*$)");
  while (std::getline(in, line)) {
    std::smatch m;
    if (line.starts_with("openapi: 3.")) openapi3 = true;
    if (!line.empty() && line[0] != ' ' && line[0] != '#') in_paths = line.starts_with("paths:");
    if (!in_paths) continue;
    if (std::regex_match(line, m, path_key)) path = m[1];
    if (std::regex_match(line, m, method_key)) {
      std::string method = m[1];
      for (auto& c : method) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
      documented.insert(method + " " + path);
    }
  }
  EXPECT_TRUE(openapi3) << "not an OpenAPI 3 document";
  const auto& table = AdminRouter::routeTable();
  const std::set<std::string> served(table.begin(), table.end());
  EXPECT_EQ(documented, served);

  // Every route of the table is really answered (not 404 unknown_path, not 405).
  AdminHandlers h = handlers();
  h.evidence = [](const std::string&) { return ControlReply{Outcome::ok, 200, "{}", "", {}}; };
  const AdminRouter router(config_, h, log_);
  for (const auto& route : table) {
    const auto space = route.find(' ');
    const std::string method = route.substr(0, space);
    const std::string target = std::regex_replace(route.substr(space + 1), std::regex(R"(\{id\})"), "pay-1");
    const auto r = router.route(method, target, {{"Authorization", "Bearer alice-secret"}}, "");
    EXPECT_NE(r.status, 404) << route;
    EXPECT_NE(r.status, 405) << route;
  }
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

// The evidence explains a job under the policy it was held under, and when the policy changed
// also under the one in force, saying which is which; a policy no longer known is said so.
TEST(EvidenceTest, ExplainsUnderTheHeldSnapshotAndSaysWhenThePolicyChanged) {
  auto policy = [](int threshold) {
    auto p = Policy::parse("version: v1\nrules:\n  - id: hold-large\n    when: { topic: \"finance.>\", payload.amount: { gt: " +
                           std::to_string(threshold) + " } }\n    decision: require_human\n");
    EXPECT_TRUE(p.has_value());
    return *p;
  };
  const auto v100 = policy(100);
  const auto v500 = policy(500);
  const auto v900 = policy(900);
  fakes::MemoryKv store;
  ApprovalRecord record;
  record.id = "pay-1";
  record.topic = "finance.payment.execute";
  record.subject = "agents.jobs.finance.payment.execute";
  record.target = "jobs.finance.payment.execute";
  record.payload = R"({"amount":700})";
  record.payload_is_json = true;
  record.rule = "hold-large";
  record.policy_snapshot = v100->snapshot();
  ASSERT_TRUE(store.create("pay-1", toJson(record)).has_value());
  Config config;
  PolicyHolder holder(v100);
  PolicyHistory earlier;
  const EvidenceSources sources{.store = store, .policy = holder, .config = config, .earlier = &earlier};
  auto conditionTest = [](const rapidjson::Value& explain) {
    for (const auto& c : explain["conditions"].GetArray()) {
      if (std::string(c["key"].GetString()) == "payload.amount") return std::string(c["test"].GetString());
    }
    return std::string("<none>");
  };

  // In force: explained under it, nothing else.
  auto same = json::parseStrict(evidenceReply(sources, "pay-1").body);
  ASSERT_TRUE(same.has_value());
  EXPECT_TRUE((*same)["snapshot_current"].GetBool());
  EXPECT_EQ(conditionTest((*same)["explain"]), "gt 100");
  EXPECT_FALSE(same->HasMember("explain_current"));

  // Reloaded to 500: why it was held (gt 100) and what the policy now does (gt 500).
  earlier.remember(holder.current());
  holder.replace(v500);
  auto changed = json::parseStrict(evidenceReply(sources, "pay-1").body);
  ASSERT_TRUE(changed.has_value());
  EXPECT_FALSE((*changed)["snapshot_current"].GetBool());
  EXPECT_EQ(std::string((*changed)["policy_snapshot_held"].GetString()), v100->snapshot());
  EXPECT_EQ(std::string((*changed)["policy_snapshot_current"].GetString()), v500->snapshot());
  EXPECT_EQ(conditionTest((*changed)["explain"]), "gt 100");
  EXPECT_EQ(conditionTest((*changed)["explain_current"]), "gt 500");
  EXPECT_EQ(std::string((*changed)["explain_current"]["decision"].GetString()), "require_human");

  // A policy this process never had: no explanation claimed, and why; the current one still.
  PolicyHolder fresh(v900);
  const EvidenceSources restarted{.store = store, .policy = fresh, .config = config};
  auto unknown = json::parseStrict(evidenceReply(restarted, "pay-1").body);
  ASSERT_TRUE(unknown.has_value());
  EXPECT_FALSE(unknown->HasMember("explain"));
  EXPECT_NE(std::string((*unknown)["explain_unavailable"].GetString()).find(v100->snapshot()), std::string::npos);
  EXPECT_EQ(std::string((*unknown)["explain_current"]["decision"].GetString()), "deny");  // 700 <= 900: default
}

}  // namespace
}  // namespace countersign::http
