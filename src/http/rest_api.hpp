// The admin HTTP endpoints as a pure function of a request: routing, bearer-token
// authorisation and the REST -> control mapping. No sockets and no Boost here, so every rule is
// unit-tested without a listener; src/http/admin_server.cpp is only the transport around it.
#pragma once

#include <chrono>
#include <cstddef>
#include <functional>
#include <mutex>
#include <unordered_map>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <variant>
#include <vector>

#include "countersign/config.hpp"
#include "countersign/control.hpp"
#include "countersign/log.hpp"

namespace countersign::http {

// /readyz: ready, or the failing checks, one line each ("nats: disconnected").
struct Readiness {
  bool ready = true;
  std::vector<std::string> failing;
};

// One decision event for /api/v1/events: its NATS subject and its JSON body.
using EventSink = std::function<void(std::string subject, std::string body)>;
// Starts calling `sink` (from any thread) for every event on <prefix>.events.>; the returned
// function stops it (after it returns, `sink` is not called again).
using EventFeed = std::function<std::function<void()>(EventSink sink)>;

// What the admin endpoints serve. Each callback may be empty: no readiness check means ready,
// no metrics means an empty exposition, no control means 503 on the REST API, no evidence
// means 503 on .../evidence, no events means an event stream that stays silent.
// Threading: `readiness` and `metrics` run on the server's I/O thread and must not block;
// `control` and `evidence` run on a worker thread (they wait for NATS) and must be thread-safe.
// An exception thrown by a callback becomes a 500 reply; it never reaches the server loop.
struct AdminHandlers {
  std::function<Readiness()> readiness;
  std::function<std::string()> metrics;  // Prometheus text exposition 0.0.4
  std::function<ControlReply(ControlOp, std::string body)> control;
  // Approve and reject as typed requests: the token has proved who acts (ControlRequest::
  // authenticated), so no signature is asked for. Empty: they go through `control` as JSON.
  std::function<ControlReply(const ControlRequest&)> decide;
  // Why the policy held approval `id` and its audit timeline (reply shape: docs/rest.md).
  std::function<ControlReply(const std::string& id)> evidence;
  EventFeed events;
  // The clock of event-stream tickets (tests); empty: std::chrono::steady_clock.
  std::function<std::chrono::steady_clock::time_point()> now;
};

using HttpHeaders = std::vector<std::pair<std::string, std::string>>;

struct HttpResponse {
  int status = 200;
  std::string content_type;
  std::string body;
  HttpHeaders headers;  // beyond Content-Type/Length: Countersign-Status, Allow, WWW-Authenticate

  // The first value of a header (ASCII case-insensitive name); empty when absent.
  std::string_view header(std::string_view name) const;
};

// Largest request body accepted (413 beyond it).
inline constexpr std::size_t kMaxRequestBody = 64 * 1024;

inline constexpr std::string_view kPrometheusContentType =
    "text/plain; version=0.0.4; charset=utf-8";

// Routes admin requests. Immutable after construction, so route() may run on any number of
// threads at once; the handlers run on the calling thread.
//
//   GET  /healthz                          200 "ok"                          (no token)
//   GET  /readyz                           200 "ready" | 503 failing checks  (no token)
//   GET  /metrics                          200 Prometheus text               (no token)
//   GET  /api/v1/approvals?state=&topic=&limit=&after=  control list (read or approve token)
//   GET  /api/v1/approvals/{id}                    control get    (read or approve token)
//   POST /api/v1/approvals/{id}/approve            control approve (approve token)
//   POST /api/v1/approvals/{id}/reject             control reject  (approve token)
//   GET  /api/v1/approvals/{id}/evidence           why it was held, its timeline (read)
//   GET  /api/v1/whoami                            the token's approver and scope (read)
//   POST /api/v1/tickets                           a single-use event-stream ticket (read)
//   GET  /api/v1/events[?ticket=]                  Server-Sent Events (read; the transport
//                                                  streams it, see eventStream())
//   GET  /ui/...                                   the reviewer console (static, no token)
//
// HEAD is accepted wherever GET is (the transport drops the body). The REST replies are the
// control replies: HTTP status = ControlReply::code, body = its JSON, header Countersign-Status.
// The approver of approve/reject is the token's approver; `id` and `approver` in a request body
// are ignored (the path names the approval, the token names who acts).
class AdminRouter {
 public:
  AdminRouter(const AdminConfig& config, AdminHandlers handlers, Logger& log);

  HttpResponse route(std::string_view method, std::string_view target, const HttpHeaders& headers,
                     std::string_view body) const;

  // True when the request may call the control handler, which can block on NATS: the server
  // runs those off its I/O thread so /healthz and /metrics stay responsive.
  static bool callsControl(std::string_view target);

  bool hasTokens() const { return !tokens_.empty(); }

  // The routes this router answers, as "METHOD /path/{param}" (HEAD implied by GET): what
  // docs/openapi.yaml must describe.
  static const std::vector<std::string>& routeTable();

  // GET /api/v1/events: the caller (bearer token or `?ticket=`, a ticket is used up) and the
  // Last-Event-ID it resumes after, or the refusal to answer instead of a stream.
  struct EventStreamStart {
    std::string approver;
    std::string last_event_id;
  };
  static bool isEventStream(std::string_view target);
  std::variant<EventStreamStart, HttpResponse> eventStream(std::string_view method,
                                                           std::string_view target,
                                                           const HttpHeaders& headers) const;

  // Replies the transport gives before a request reaches route().
  static HttpResponse tooLarge();
  static HttpResponse malformed(std::string_view reason);  // 400: unparsable HTTP
  static HttpResponse headersTooLarge();                   // 431

 private:
  struct Token {
    std::string digest;  // sha256 hex of the token: fixed length, compared in constant time
    std::string approver;
    ApiToken::Scope scope;
  };
  HttpResponse readyz() const;
  HttpResponse metrics() const;
  HttpResponse api(std::string_view method, const std::vector<std::string_view>& segments,
                   std::string_view query, const HttpHeaders& headers, std::string_view body) const;
  // Returns the token, or the 401 to answer.
  std::variant<const Token*, HttpResponse> authenticate(const HttpHeaders& headers) const;
  HttpResponse callControl(ControlOp op, const std::string& body) const;
  HttpResponse decide(ControlOp op, std::string_view id, const Token& token,
                      std::string_view body) const;
  HttpResponse list(std::string_view query) const;
  HttpResponse evidence(const std::string& id) const;
  // A handler's ControlReply as the HTTP reply; exceptions and status-less replies become 500.
  HttpResponse answer(std::string_view op, const std::function<ControlReply()>& call) const;
  HttpResponse issueTicket(const Token& token) const;
  // The token of a valid, unused ticket (the ticket is used up); nullptr otherwise.
  const Token* redeemTicket(std::string_view ticket) const;
  std::chrono::steady_clock::time_point now() const;

  std::vector<Token> tokens_;
  AdminHandlers handlers_;
  Logger& log_;
  mutable std::mutex tickets_mutex_;
  // sha256 hex of the ticket -> (token, expiry). Bounded: the oldest are dropped beyond a cap.
  mutable std::unordered_map<std::string, std::pair<const Token*, std::chrono::steady_clock::time_point>>
      tickets_;
};

// Security headers of every admin reply (nosniff, no caching of API answers is per reply), and
// those of the console's pages (a Content-Security-Policy that allows only the admin origin).
inline constexpr std::string_view kConsoleCsp =
    "default-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

// The reply for a /ui/ path (or "/"): a static file of the console, or 404.
HttpResponse uiAsset(std::string_view path);

// RFC 3986 percent-decoding; `plus_is_space` for query strings (form encoding). nullopt when a
// '%' is not followed by two hex digits.
std::optional<std::string> percentDecode(std::string_view text, bool plus_is_space);

// `a=1&b=2` -> decoded pairs in order; nullopt when any part is badly encoded.
std::optional<std::vector<std::pair<std::string, std::string>>> parseQuery(std::string_view query);

// Equality of two strings that takes the same time for every pair of a given length.
bool constantTimeEquals(std::string_view a, std::string_view b);

}  // namespace countersign::http
