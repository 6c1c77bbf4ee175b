// Fuzz target for the admin HTTP endpoints as the transport hands them over: the request line,
// header lines and body are split from the input
//   METHOD TARGET\nName: value\n...\n\nbody
// and routed with two tokens (alice may approve, auditor may read), with typed decisions for
// inputs of odd size and JSON control calls for even ones. Any input gives an HTTP
// status and, for JSON replies, valid JSON; approve and reject reach the control handler only with
// alice's token and always act as alice (the body cannot name another approver); a ticket lets one
// event stream start, once. The query string decoder gets every input as well.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <optional>
#include <string>
#include <string_view>
#include <variant>

#include "countersign/json.hpp"
#include "http/rest_api.hpp"

namespace {

using namespace countersign;
using namespace countersign::http;

void check(bool condition) {
  if (!condition) std::abort();
}

std::string_view nextLine(std::string_view& text) {
  const auto end = text.find('\n');
  const std::string_view line = text.substr(0, end);
  text.remove_prefix(end == std::string_view::npos ? text.size() : end + 1);
  return line;
}

bool carriesApproveToken(const HttpHeaders& headers) {
  for (const auto& [name, value] : headers) {
    if (value.find("alice-secret") != std::string::npos) return true;
  }
  return false;
}

std::string percentEncode(std::string_view bytes, bool plus_for_space) {
  static constexpr char kHex[] = "0123456789ABCDEF";
  std::string out;
  for (const char c : bytes) {
    const auto byte = static_cast<unsigned char>(c);
    if (plus_for_space && c == ' ') {
      out += '+';
    } else {
      out += '%';
      out += kHex[byte >> 4];
      out += kHex[byte & 15];
    }
  }
  return out;
}

void checkReply(const HttpResponse& r) {
  check(r.status >= 100 && r.status <= 599);
  if (r.content_type.starts_with("application/json")) check(json::parseStrict(r.body).has_value());
}

struct Calls {
  int decisions = 0;
  int controls = 0;
};

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  std::string_view input(reinterpret_cast<const char*>(data), size);

  // Query strings and percent-decoding on their own.
  (void)parseQuery(input);
  (void)percentDecode(input, true);
  check(percentDecode(percentEncode(input, false), false) == std::string(input));
  check(percentDecode(percentEncode(input, true), true) == std::string(input));

  const bool typed_decisions = (size & 1) != 0;  // odd sizes: approve/reject as typed requests
  std::string_view request_line = nextLine(input);
  const auto space = request_line.find(' ');
  const std::string_view method = request_line.substr(0, space);
  const std::string_view target =
      space == std::string_view::npos ? std::string_view() : request_line.substr(space + 1);
  HttpHeaders headers;
  while (!input.empty()) {
    const std::string_view line = nextLine(input);
    if (line.empty()) break;
    const auto colon = line.find(':');
    std::string_view value = colon == std::string_view::npos ? std::string_view() : line.substr(colon + 1);
    while (value.starts_with(' ')) value.remove_prefix(1);
    headers.emplace_back(std::string(line.substr(0, colon)), std::string(value));
  }
  const std::string_view body = input;

  AdminConfig config;
  config.tokens = {ApiToken{"alice", "alice-secret", ApiToken::Scope::approve},
                   ApiToken{"auditor", "auditor-secret", ApiToken::Scope::read}};
  Calls calls;
  const ControlReply canned{Outcome::ok, 200, R"({"status":"ok","code":200})", ""};
  AdminHandlers handlers;
  handlers.readiness = [] { return Readiness{false, {"nats: disconnected"}}; };
  handlers.metrics = [] { return std::string("countersign_up 1\n"); };
  handlers.control = [&](ControlOp op, std::string text) {
    ++calls.controls;
    auto request = parseControlRequest(op, text);
    if (op == ControlOp::approve || op == ControlOp::reject) {
      check(carriesApproveToken(headers));
      // A wrongly typed forwarded field is control's 400 to name; who acts is never the body's.
      if (request) check(request->approver == "alice");
    }
    return canned;
  };
  if (typed_decisions) {
    handlers.decide = [&](const ControlRequest& request) {
      ++calls.decisions;
      check(request.op == ControlOp::approve || request.op == ControlOp::reject);
      check(request.authenticated && request.approver == "alice" && !request.id.empty());
      check(carriesApproveToken(headers));
      return canned;
    };
  }
  handlers.evidence = [](const std::string& id) {
    check(!id.empty());
    return ControlReply{Outcome::ok, 200, R"({"status":"ok","code":200})", ""};
  };
  NullLogger log;
  const AdminRouter router(config, handlers, log);

  const HttpResponse response = router.route(method, target, headers, body);
  checkReply(response);
  (void)AdminRouter::callsControl(target);

  auto start = router.eventStream(method, target, headers);
  if (auto* refusal = std::get_if<HttpResponse>(&start)) checkReply(*refusal);

  // A ticket issued to this request's caller starts one event stream as that caller, once.
  if (response.status == 201) {
    auto issued = json::parseStrict(response.body);
    check(issued.has_value() && issued->IsObject() && issued->HasMember("ticket"));
    const std::string events = "/api/v1/events?ticket=" + std::string((*issued)["ticket"].GetString());
    auto first = router.eventStream("GET", events, {});
    check(std::holds_alternative<AdminRouter::EventStreamStart>(first));
    const auto& who = std::get<AdminRouter::EventStreamStart>(first).approver;
    check(who == "alice" || who == "auditor");
    check(std::holds_alternative<HttpResponse>(router.eventStream("GET", events, {})));
  }
  return 0;
}
