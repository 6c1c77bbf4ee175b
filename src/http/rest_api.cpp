#include "http/rest_api.hpp"

#include <algorithm>
#include <charconv>
#include <cstdio>
#include <exception>
#include <random>

#include "core/json_writer.hpp"
#include "countersign/json.hpp"
#include "http/ui_assets.hpp"

namespace countersign::http {

using detail::JsonObjectWriter;

namespace {

constexpr std::string_view kJson = "application/json";
constexpr std::string_view kText = "text/plain; charset=utf-8";
constexpr std::string_view kAllowGet = "GET, HEAD";
constexpr std::string_view kAllowPost = "POST";
// Event-stream tickets: valid this long, at most this many outstanding (the oldest go first).
constexpr std::chrono::seconds kTicketLifetime{60};
constexpr std::size_t kMaxTickets = 4096;

char lower(char c) {
  return (c >= 'A' && c <= 'Z') ? static_cast<char>(c - 'A' + 'a') : c;
}

bool iequals(std::string_view a, std::string_view b) {
  return a.size() == b.size() && std::equal(a.begin(), a.end(), b.begin(),
                                            [](char x, char y) { return lower(x) == lower(y); });
}

HttpResponse text(int status, std::string body) {
  return HttpResponse{status, std::string(kText), std::move(body), {{"Cache-Control", "no-store"}}};
}

// A JSON reply built here (not by control): same shape as control's, with Countersign-Status.
HttpResponse jsonReply(std::string_view status, int code, JsonObjectWriter& w) {
  return HttpResponse{code,
                      std::string(kJson),
                      w.finish(),
                      {{"Countersign-Status", std::string(status)}, {"Cache-Control", "no-store"}}};
}

HttpResponse badRequest(std::string_view field, std::string_view reason) {
  JsonObjectWriter w("bad_request", 400);
  w.field("field", field).field("reason", reason);
  return jsonReply("bad_request", 400, w);
}

HttpResponse unknownPath() {
  JsonObjectWriter w("not_found", 404);
  w.field("reason", "unknown_path");
  return jsonReply("not_found", 404, w);
}

HttpResponse methodNotAllowed(std::string_view allow) {
  JsonObjectWriter w("method_not_allowed", 405);
  w.field("allow", allow);
  HttpResponse r = jsonReply("method_not_allowed", 405, w);
  r.headers.emplace_back("Allow", std::string(allow));
  return r;
}

// RFC 6750 section 3: no credentials -> no error code; bad credentials -> invalid_token.
HttpResponse unauthorized(std::string_view reason, std::string_view bearer_error) {
  JsonObjectWriter w("unauthorized", 401);
  w.field("reason", reason);
  HttpResponse r = jsonReply("unauthorized", 401, w);
  std::string challenge = "Bearer realm=\"countersign\"";
  if (!bearer_error.empty()) challenge += ", error=\"" + std::string(bearer_error) + "\"";
  r.headers.emplace_back("WWW-Authenticate", std::move(challenge));
  return r;
}

HttpResponse forbidden(std::string_view reason) {
  JsonObjectWriter w("forbidden", 403);
  w.field("reason", reason);
  HttpResponse r = jsonReply("forbidden", 403, w);
  r.headers.emplace_back("WWW-Authenticate",
                         "Bearer realm=\"countersign\", error=\"insufficient_scope\"");
  return r;
}

HttpResponse internalError(std::string_view reason) {
  JsonObjectWriter w("internal", 500);
  w.field("reason", reason);
  return jsonReply("internal", 500, w);
}

HttpResponse unavailable(std::string_view reason) {
  JsonObjectWriter w("unavailable", 503);
  w.field("reason", reason).field("retryable", true);
  return jsonReply("unavailable", 503, w);
}

std::vector<std::string_view> splitPath(std::string_view path) {
  std::vector<std::string_view> segments;
  if (path.empty() || path.front() != '/') return segments;
  path.remove_prefix(1);
  while (true) {
    const auto slash = path.find('/');
    segments.push_back(path.substr(0, slash));
    if (slash == std::string_view::npos) break;
    path.remove_prefix(slash + 1);
  }
  return segments;
}

bool isBlank(std::string_view body) {
  return std::all_of(body.begin(), body.end(),
                     [](char c) { return c == ' ' || c == '\t' || c == '\r' || c == '\n'; });
}

int hexValue(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

}  // namespace

std::string_view HttpResponse::header(std::string_view name) const {
  for (const auto& [key, value] : headers) {
    if (iequals(key, name)) return value;
  }
  return {};
}

std::optional<std::string> percentDecode(std::string_view text, bool plus_is_space) {
  std::string out;
  out.reserve(text.size());
  for (std::size_t i = 0; i < text.size(); ++i) {
    const char c = text[i];
    if (c == '%') {
      if (i + 2 >= text.size()) return std::nullopt;
      const int high = hexValue(text[i + 1]);
      const int low = hexValue(text[i + 2]);
      if (high < 0 || low < 0) return std::nullopt;
      out.push_back(static_cast<char>(high * 16 + low));
      i += 2;
    } else if (c == '+' && plus_is_space) {
      out.push_back(' ');
    } else {
      out.push_back(c);
    }
  }
  return out;
}

std::optional<std::vector<std::pair<std::string, std::string>>> parseQuery(std::string_view query) {
  std::vector<std::pair<std::string, std::string>> pairs;
  while (!query.empty()) {
    const auto amp = query.find('&');
    const std::string_view part = query.substr(0, amp);
    query = amp == std::string_view::npos ? std::string_view() : query.substr(amp + 1);
    if (part.empty()) continue;
    const auto eq = part.find('=');
    auto name = percentDecode(part.substr(0, eq), true);
    auto value = percentDecode(
        eq == std::string_view::npos ? std::string_view() : part.substr(eq + 1), true);
    if (!name || !value) return std::nullopt;
    pairs.emplace_back(std::move(*name), std::move(*value));
  }
  return pairs;
}

bool constantTimeEquals(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) return false;
  unsigned char diff = 0;
  for (std::size_t i = 0; i < a.size(); ++i) {
    diff = static_cast<unsigned char>(
        diff | (static_cast<unsigned char>(a[i]) ^ static_cast<unsigned char>(b[i])));
  }
  return diff == 0;
}

AdminRouter::AdminRouter(const AdminConfig& config, AdminHandlers handlers, Logger& log)
    : handlers_(std::move(handlers)), log_(log) {
  for (const ApiToken& token : config.tokens) {
    if (token.token.empty()) continue;  // an empty token would let an empty header in
    tokens_.push_back(Token{json::sha256Hex(token.token), token.approver, token.scope});
  }
}

HttpResponse AdminRouter::tooLarge() {
  JsonObjectWriter w("too_large", 413);
  w.field("max_body", static_cast<std::uint64_t>(kMaxRequestBody));
  return jsonReply("too_large", 413, w);
}

HttpResponse AdminRouter::malformed(std::string_view reason) {
  return badRequest("request", reason);
}

HttpResponse AdminRouter::headersTooLarge() {
  JsonObjectWriter w("headers_too_large", 431);
  return jsonReply("headers_too_large", 431, w);
}

bool AdminRouter::callsControl(std::string_view target) {
  return target.starts_with("/api/");
}

HttpResponse AdminRouter::route(std::string_view method, std::string_view target,
                                const HttpHeaders& headers, std::string_view body) const {
  const auto question = target.find('?');
  const std::string_view path = target.substr(0, question);
  const std::string_view query =
      question == std::string_view::npos ? std::string_view() : target.substr(question + 1);
  const bool get = method == "GET" || method == "HEAD";

  if (path == "/healthz" || path == "/readyz" || path == "/metrics") {
    if (!get) return methodNotAllowed(kAllowGet);
    if (path == "/healthz") return text(200, "ok");
    return path == "/readyz" ? readyz() : metrics();
  }
  if (path == "/" || path == "/ui" || path.starts_with("/ui/")) {
    if (!get) return methodNotAllowed(kAllowGet);
    return uiAsset(path);
  }
  if (path == "/api/v1/events") {
    // Without a streaming transport (tests of the router alone): the checks, then an empty stream.
    auto start = eventStream(method, target, headers);
    if (auto* refusal = std::get_if<HttpResponse>(&start)) return std::move(*refusal);
    return HttpResponse{200, "text/event-stream", "", {{"Cache-Control", "no-store"}}};
  }
  if (path == "/api/v1/whoami" || path == "/api/v1/tickets") {
    const bool tickets = path == "/api/v1/tickets";
    if (tickets ? method != "POST" : !get) return methodNotAllowed(tickets ? kAllowPost : kAllowGet);
    auto caller = authenticate(headers);
    if (auto* refusal = std::get_if<HttpResponse>(&caller)) return std::move(*refusal);
    const Token& token = *std::get<const Token*>(caller);
    if (tickets) return issueTicket(token);
    JsonObjectWriter w("ok", 200);
    w.field("approver", token.approver)
        .field("scope", token.scope == ApiToken::Scope::approve ? "approve" : "read");
    return jsonReply("ok", 200, w);
  }
  const auto segments = splitPath(path);
  if (segments.size() >= 3 && segments[0] == "api" && segments[1] == "v1" &&
      segments[2] == "approvals") {
    return api(method, segments, query, headers, body);
  }
  return unknownPath();
}

const std::vector<std::string>& AdminRouter::routeTable() {
  static const std::vector<std::string> table{
      "GET /healthz",
      "GET /readyz",
      "GET /metrics",
      "GET /api/v1/approvals",
      "GET /api/v1/approvals/{id}",
      "POST /api/v1/approvals/{id}/approve",
      "POST /api/v1/approvals/{id}/reject",
      "GET /api/v1/approvals/{id}/evidence",
      "GET /api/v1/whoami",
      "POST /api/v1/tickets",
      "GET /api/v1/events",
      "GET /ui/",
      "GET /ui/approvals/{id}",
  };
  return table;
}

bool AdminRouter::isEventStream(std::string_view target) {
  return target.substr(0, target.find('?')) == "/api/v1/events";
}

std::variant<AdminRouter::EventStreamStart, HttpResponse> AdminRouter::eventStream(
    std::string_view method, std::string_view target, const HttpHeaders& headers) const {
  if (method != "GET") return methodNotAllowed("GET");
  const auto question = target.find('?');
  const auto params = parseQuery(question == std::string_view::npos ? std::string_view()
                                                                    : target.substr(question + 1));
  if (!params) return badRequest("query", "bad percent-encoding in the query string");
  EventStreamStart start;
  for (const auto& [name, value] : *params) {
    if (name == "last_event_id") start.last_event_id = value;  // EventSource cannot set headers
  }
  for (const auto& [name, value] : headers) {
    if (iequals(name, "Last-Event-ID")) start.last_event_id = value;
  }
  const auto ticket = std::find_if(params->begin(), params->end(),
                                   [](const auto& p) { return p.first == "ticket"; });
  if (ticket != params->end()) {
    const Token* token = redeemTicket(ticket->second);
    if (token == nullptr) return unauthorized("unknown, used or expired ticket", "invalid_token");
    start.approver = token->approver;
    return start;
  }
  auto caller = authenticate(headers);
  if (auto* refusal = std::get_if<HttpResponse>(&caller)) return std::move(*refusal);
  start.approver = std::get<const Token*>(caller)->approver;
  return start;
}

std::chrono::steady_clock::time_point AdminRouter::now() const {
  return handlers_.now ? handlers_.now() : std::chrono::steady_clock::now();
}

HttpResponse AdminRouter::issueTicket(const Token& token) const {
  static thread_local std::random_device device;  // the kernel's CSPRNG on Linux
  std::string ticket;
  for (int i = 0; i < 8; ++i) {
    char part[9];
    std::snprintf(part, sizeof part, "%08x", static_cast<unsigned>(device()));
    ticket += part;
  }
  const auto at = now();
  {
    const std::lock_guard lock(tickets_mutex_);
    std::erase_if(tickets_, [&](const auto& entry) { return entry.second.second <= at; });
    while (tickets_.size() >= kMaxTickets) {
      auto oldest = std::min_element(tickets_.begin(), tickets_.end(), [](const auto& a, const auto& b) {
        return a.second.second < b.second.second;
      });
      tickets_.erase(oldest);
    }
    tickets_[json::sha256Hex(ticket)] = {&token, at + kTicketLifetime};
  }
  JsonObjectWriter w("created", 201);
  w.field("ticket", ticket).field("expires_in", static_cast<int>(kTicketLifetime.count()));
  return jsonReply("created", 201, w);
}

const AdminRouter::Token* AdminRouter::redeemTicket(std::string_view ticket) const {
  if (ticket.empty()) return nullptr;
  const std::string digest = json::sha256Hex(ticket);
  const std::lock_guard lock(tickets_mutex_);
  const auto it = tickets_.find(digest);
  if (it == tickets_.end()) return nullptr;
  const auto [token, expires] = it->second;
  tickets_.erase(it);  // single use, expired or not
  return expires > now() ? token : nullptr;
}

HttpResponse uiAsset(std::string_view path) {
  if (path == "/" || path == "/ui") {
    HttpResponse r = text(path == "/" ? 302 : 301, "see /ui/\n");
    r.headers.emplace_back("Location", "/ui/");
    return r;
  }
  std::string_view name = path.substr(4);  // after "/ui/"
  // The console's own routes are pages of the one HTML document.
  if (name.empty() || name.starts_with("approvals/")) name = "index.html";
  for (const UiFile& file : uiFiles()) {
    if (file.name != name) continue;
    std::string_view type = "application/octet-stream";
    if (name.ends_with(".html")) type = "text/html; charset=utf-8";
    if (name.ends_with(".js")) type = "text/javascript; charset=utf-8";
    if (name.ends_with(".css")) type = "text/css; charset=utf-8";
    if (name.ends_with(".svg")) type = "image/svg+xml";
    return HttpResponse{200,
                        std::string(type),
                        std::string(file.bytes),
                        {{"Content-Security-Policy", std::string(kConsoleCsp)},
                         {"Referrer-Policy", "no-referrer"},
                         {"X-Frame-Options", "DENY"},
                         {"Cache-Control", "no-cache"}}};
  }
  return text(404, "not found\n");
}

HttpResponse AdminRouter::readyz() const {
  Readiness readiness;
  try {
    if (handlers_.readiness) readiness = handlers_.readiness();
  } catch (const std::exception& e) {
    readiness = Readiness{false, {std::string("readiness check failed: ") + e.what()}};
  } catch (...) {
    readiness = Readiness{false, {"readiness check failed"}};
  }
  if (readiness.ready) return text(200, "ready");
  std::string body;
  for (const auto& line : readiness.failing) body += line + "\n";
  if (body.empty()) body = "not ready\n";
  return text(503, std::move(body));
}

HttpResponse AdminRouter::metrics() const {
  try {
    std::string body = handlers_.metrics ? handlers_.metrics() : std::string();
    HttpResponse r = text(200, std::move(body));
    r.content_type = std::string(kPrometheusContentType);
    return r;
  } catch (const std::exception& e) {
    log_.error("admin: metrics rendering failed", {{"error", e.what()}});
  } catch (...) {
    log_.error("admin: metrics rendering failed");
  }
  return text(500, "metrics unavailable\n");
}

HttpResponse AdminRouter::api(std::string_view method,
                              const std::vector<std::string_view>& segments, std::string_view query,
                              const HttpHeaders& headers, std::string_view body) const {
  // Resolve the route (404 / 405) before asking for credentials, like any static router.
  enum class Kind { list, get, approve, reject, evidence } kind;
  std::string_view raw_id;
  if (segments.size() == 3) {
    kind = Kind::list;
  } else if (segments.size() == 4 && !segments[3].empty()) {
    kind = Kind::get;
    raw_id = segments[3];
  } else if (segments.size() == 5 && !segments[3].empty() &&
             (segments[4] == "approve" || segments[4] == "reject")) {
    kind = segments[4] == "approve" ? Kind::approve : Kind::reject;
    raw_id = segments[3];
  } else if (segments.size() == 5 && !segments[3].empty() && segments[4] == "evidence") {
    kind = Kind::evidence;
    raw_id = segments[3];
  } else {
    return unknownPath();
  }
  const bool post = kind == Kind::approve || kind == Kind::reject;
  if (post ? method != "POST" : (method != "GET" && method != "HEAD")) {
    return methodNotAllowed(post ? kAllowPost : kAllowGet);
  }

  auto caller = authenticate(headers);
  if (auto* refusal = std::get_if<HttpResponse>(&caller)) return std::move(*refusal);
  const Token& token = *std::get<const Token*>(caller);

  if (body.size() > kMaxRequestBody) return tooLarge();
  if (kind == Kind::list) return list(query);

  const auto id = percentDecode(raw_id, false);
  if (!id) return badRequest("id", "bad percent-encoding in the path");
  if (kind == Kind::get) {
    JsonObjectWriter w;
    w.field("id", *id);
    return callControl(ControlOp::get, w.finish());
  }
  if (kind == Kind::evidence) return evidence(*id);
  if (token.scope != ApiToken::Scope::approve) {
    return forbidden("this token has scope read: it cannot approve or reject");
  }
  return decide(kind == Kind::approve ? ControlOp::approve : ControlOp::reject, *id, token, body);
}

std::variant<const AdminRouter::Token*, HttpResponse> AdminRouter::authenticate(
    const HttpHeaders& headers) const {
  if (tokens_.empty()) return unauthorized("no API tokens are configured (admin.tokens)", "");
  const std::pair<std::string, std::string>* found = nullptr;
  for (const auto& header : headers) {
    if (!iequals(header.first, "Authorization")) continue;
    if (found != nullptr)
      return unauthorized("more than one Authorization header", "invalid_request");
    found = &header;
  }
  if (found == nullptr) return unauthorized("missing bearer token", "");

  std::string_view value = found->second;
  constexpr std::string_view kScheme = "bearer";
  if (value.size() <= kScheme.size() || !iequals(value.substr(0, kScheme.size()), kScheme) ||
      (value[kScheme.size()] != ' ' && value[kScheme.size()] != '\t')) {
    return unauthorized("expected Authorization: Bearer <token>", "invalid_request");
  }
  value.remove_prefix(kScheme.size());
  while (!value.empty() && (value.front() == ' ' || value.front() == '\t')) value.remove_prefix(1);
  while (!value.empty() && (value.back() == ' ' || value.back() == '\t')) value.remove_suffix(1);
  if (value.empty()) return unauthorized("empty bearer token", "invalid_request");

  // Hashing first makes every comparison the same length; every token is compared, so the
  // time does not depend on which one matched or how much of it.
  const std::string digest = json::sha256Hex(value);
  const Token* match = nullptr;
  for (const Token& token : tokens_) {
    const bool equal = constantTimeEquals(digest, token.digest);
    if (equal && match == nullptr) match = &token;
  }
  if (match == nullptr) {
    log_.warn("admin API: unknown bearer token refused");
    return unauthorized("unknown bearer token", "invalid_token");
  }
  return match;
}

HttpResponse AdminRouter::callControl(ControlOp op, const std::string& body) const {
  if (!handlers_.control) return unavailable("control is not wired");
  return answer(toString(op), [&] { return handlers_.control(op, body); });
}

HttpResponse AdminRouter::evidence(const std::string& id) const {
  if (!handlers_.evidence) return unavailable("evidence is not wired");
  return answer("evidence", [&] { return handlers_.evidence(id); });
}

HttpResponse AdminRouter::answer(std::string_view op, const std::function<ControlReply()>& call) const {
  ControlReply reply;
  try {
    reply = call();
  } catch (const std::exception& e) {
    log_.error("admin API: control handler failed", {{"op", op}, {"error", e.what()}});
    return internalError("control handler failed");
  } catch (...) {
    log_.error("admin API: control handler failed", {{"op", op}});
    return internalError("control handler failed");
  }
  if (reply.code < 100 || reply.code > 599) {
    log_.error("admin API: control reply has no HTTP status", {{"op", op}});
    return internalError("control reply without a status code");
  }
  return HttpResponse{
      reply.code,
      std::string(kJson),
      std::move(reply.body),
      {{"Countersign-Status", std::string(wireName(reply.status))}, {"Cache-Control", "no-store"}}};
}

HttpResponse AdminRouter::decide(ControlOp op, std::string_view id, const Token& token,
                                 std::string_view body) const {
  JsonObjectWriter w;
  w.field("id", id).field("approver", token.approver);
  if (!isBlank(body)) {
    auto parsed = json::parseStrict(body);
    if (!parsed) return badRequest("body", "not JSON: " + parsed.error().message);
    if (!parsed->IsObject()) return badRequest("body", "expected a JSON object");
    // Only the fields a reviewer may send are forwarded, with their JSON types intact so that
    // control names a wrongly typed field itself.
    for (const char* name : {"reason", "job_hash", "policy_snapshot"}) {
      const auto it = parsed->FindMember(name);
      if (it != parsed->MemberEnd()) w.raw(name, json::toString(it->value));
    }
  }
  HttpResponse response;
  if (handlers_.decide) {
    // Parsed once, here, into the typed request; the token has proved who acts.
    auto request = parseControlRequest(op, w.finish());
    if (!request) {
      ControlReply& bad = request.error();
      return HttpResponse{bad.code, std::string(kJson), std::move(bad.body),
                          {{"Countersign-Status", std::string(wireName(bad.status))}, {"Cache-Control", "no-store"}}};
    }
    request->authenticated = true;
    response = answer(toString(op), [&] { return handlers_.decide(*request); });
  } else {
    response = callControl(op, w.finish());
  }
  log_.info("admin API decision", {{"op", toString(op)},
                                   {"approval_id", id},
                                   {"approver", token.approver},
                                   {"status", response.header("Countersign-Status")}});
  return response;
}

HttpResponse AdminRouter::list(std::string_view query) const {
  const auto params = parseQuery(query);
  if (!params) return badRequest("query", "bad percent-encoding in the query string");
  JsonObjectWriter w;
  std::vector<std::string_view> seen;
  for (const auto& [name, value] : *params) {
    // Other parameters are ignored, like unknown fields of a control request.
    if (name != "state" && name != "topic" && name != "after" && name != "limit") continue;
    if (value.empty()) continue;  // `limit=` is the same as no limit
    if (std::find(seen.begin(), seen.end(), name) != seen.end()) {
      return badRequest(name, "given more than once");
    }
    seen.push_back(name);
    if (name != "limit") {
      w.field(name, value);
      continue;
    }
    int limit = 0;
    const auto [end, ec] = std::from_chars(value.data(), value.data() + value.size(), limit);
    if (ec != std::errc() || end != value.data() + value.size()) {
      return badRequest("limit", "expected an integer");
    }
    w.field("limit", limit);
  }
  return callControl(ControlOp::list, w.finish());
}

}  // namespace countersign::http
