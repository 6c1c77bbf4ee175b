// The admin HTTP listener in-process on 127.0.0.1:0 with fake handlers, driven by the real
// `curl` binary (the article's flow) and by raw sockets (keep-alive, pipelining, limits, bad
// requests, HEAD, shutdown).
#include <arpa/inet.h>
#include <fcntl.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstring>
#include <map>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "countersign/json.hpp"
#include "http/admin_server.hpp"
#include "integration/harness/harness.hpp"
#include "integration/harness/wire.hpp"

namespace countersign::testing {
namespace {

using http::AdminHandlers;
using http::AdminServer;
using http::Readiness;

constexpr const char* kAliceToken = "alice-7f3a-token";
constexpr const char* kReaderToken = "reader-19c2-token";

// --- a parsed HTTP response ---------------------------------------------------------------------

using Response = HttpResponse;

// Parses one response head ("HTTP/1.1 200 OK\r\nName: value\r\n..."), without the blank line.
Response parseHead(const std::string& head) {
  Response r;
  std::size_t pos = head.find("\r\n");
  const std::string status_line = head.substr(0, pos);
  const auto space = status_line.find(' ');
  if (space != std::string::npos) r.status = std::atoi(status_line.c_str() + space + 1);
  while (pos != std::string::npos && pos + 2 < head.size()) {
    const std::size_t start = pos + 2;
    pos = head.find("\r\n", start);
    const std::string line =
        head.substr(start, pos == std::string::npos ? std::string::npos : pos - start);
    const auto colon = line.find(':');
    if (colon == std::string::npos) continue;
    std::string value = line.substr(colon + 1);
    while (!value.empty() && value.front() == ' ') value.erase(0, 1);
    r.headers[lower(line.substr(0, colon))] = value;
  }
  return r;
}

// `curl -i` output: interim 1xx heads, then the final head and the body.
Response parseCurlOutput(const std::string& out) {
  std::size_t offset = 0;
  while (true) {
    const auto end = out.find("\r\n\r\n", offset);
    if (end == std::string::npos) {
      ADD_FAILURE() << "no HTTP head in curl output: " << out;
      return {};
    }
    Response r = parseHead(out.substr(offset, end - offset));
    offset = end + 4;
    if (r.status >= 200 || r.status == 0) {
      r.body = out.substr(offset);
      return r;
    }
  }
}

// --- curl ---------------------------------------------------------------------------------------

// Runs curl and parses its `-i` output.
Response curl(const std::vector<std::string>& args) {
  const auto run = runCurl(args);
  if (!run) return {};
  if (run->exit_code != 0) {
    ADD_FAILURE() << "curl failed (exit code " << run->exit_code << "): " << run->out;
    return {};
  }
  return parseCurlOutput(run->out);
}

// --- raw sockets --------------------------------------------------------------------------------

class RawConnection {
 public:
  explicit RawConnection(int port) {
    fd_ = ::socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_port = htons(static_cast<std::uint16_t>(port));
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    connected_ = ::connect(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0;
  }
  ~RawConnection() {
    if (fd_ >= 0) ::close(fd_);
  }
  RawConnection(const RawConnection&) = delete;
  RawConnection& operator=(const RawConnection&) = delete;

  bool connected() const { return connected_; }

  bool send(const std::string& bytes) {
    std::size_t sent = 0;
    while (sent < bytes.size()) {
      const ssize_t n = ::send(fd_, bytes.data() + sent, bytes.size() - sent, MSG_NOSIGNAL);
      if (n <= 0) return false;
      sent += static_cast<std::size_t>(n);
    }
    return true;
  }

  // Reads one response (Content-Length framed; `head_request`: no body follows).
  std::optional<Response> read(bool head_request = false,
                               std::chrono::milliseconds timeout = std::chrono::seconds(10)) {
    std::size_t end;
    while ((end = buffer_.find("\r\n\r\n")) == std::string::npos) {
      if (!fill(timeout)) return std::nullopt;
    }
    Response r = parseHead(buffer_.substr(0, end));
    buffer_.erase(0, end + 4);
    const std::size_t length =
        head_request ? 0 : static_cast<std::size_t>(std::atoll(r.header("content-length").c_str()));
    while (buffer_.size() < length) {
      if (!fill(timeout)) return std::nullopt;
    }
    r.body = buffer_.substr(0, length);
    buffer_.erase(0, length);
    return r;
  }

  // True when the server closed the connection (EOF or reset) within the timeout.
  bool closedByPeer(std::chrono::milliseconds timeout = std::chrono::seconds(10)) {
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    while (true) {
      const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
      pollfd p{fd_, POLLIN, 0};
      if (::poll(&p, 1, static_cast<int>(std::max<std::int64_t>(0, left.count()))) <= 0) return false;
      char c[4096];
      const ssize_t n = ::recv(fd_, c, sizeof c, 0);
      if (n <= 0) return true;
      buffer_.append(c, static_cast<std::size_t>(n));
    }
  }

  const std::string& unread() const { return buffer_; }

  // Reads until `needle` has arrived (kept in unread()); false on timeout or close.
  bool readUntil(std::string_view needle, std::chrono::milliseconds timeout = std::chrono::seconds(5)) {
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    while (buffer_.find(needle) == std::string::npos) {
      const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
      if (left.count() <= 0 || !fill(left)) return false;
    }
    return true;
  }

  // Forgets what was read so far (long streams).
  void forget() { buffer_.clear(); }

  // True when the peer has closed (checked without waiting).
  bool closedNow() { return closedByPeer(std::chrono::milliseconds(0)); }

 private:
  bool fill(std::chrono::milliseconds timeout) {
    pollfd p{fd_, POLLIN, 0};
    if (::poll(&p, 1, static_cast<int>(timeout.count())) <= 0) return false;
    char c[4096];
    const ssize_t n = ::recv(fd_, c, sizeof c, 0);
    if (n <= 0) return false;
    buffer_.append(c, static_cast<std::size_t>(n));
    return true;
  }

  int fd_ = -1;
  bool connected_ = false;
  std::string buffer_;
};

// --- fake control: a tiny approve/reject state machine ------------------------------------------

struct SeenRequest {
  ControlOp op;
  std::string id;
  std::string approver;
  std::string reason;
};

class FakeControl {
 public:
  ControlReply handle(ControlOp op, const std::string& body) {
    std::unique_lock lock(mutex_);
    cv_.wait(lock, [&] { return !blocked_; });
    auto parsed = json::parseStrict(body.empty() ? "{}" : body);
    if (!parsed || !parsed->IsObject())
      return {Outcome::bad_request, 400, R"({"status":"bad_request","code":400})", ""};
    auto text = [&](const char* name) {
      const auto it = parsed->FindMember(name);
      return it != parsed->MemberEnd() && it->value.IsString() ? std::string(it->value.GetString())
                                                               : std::string();
    };
    seen_.push_back({op, text("id"), text("approver"), text("reason")});
    const std::string id = text("id");
    if (op == ControlOp::list) return {Outcome::ok, 200, R"({"status":"ok","code":200,"items":[]})", ""};
    if (!known_.contains(id)) return {Outcome::not_found, 404, R"({"status":"not_found","code":404})", ""};
    if (op == ControlOp::get) return {Outcome::ok, 200, R"({"status":"ok","code":200,"record":{}})", ""};
    std::string& state = decided_[id];
    const std::string want = op == ControlOp::approve ? "approved" : "rejected";
    if (state.empty()) {
      state = want;
      return {op == ControlOp::approve ? Outcome::approved : Outcome::rejected, 200, R"({"status":")" + want + R"(","code":200,"approval_id":")" + id + "\"}",
              ""};
    }
    if (state == want) {
      return {op == ControlOp::approve ? Outcome::already_approved : Outcome::already_rejected, 200, R"({"status":"already_)" + want + R"(","code":200})", ""};
    }
    return {Outcome::conflict, 409,
            R"({"status":"conflict","code":409,"reason":"already_)" + state + "\"}",
            "already_" + state};
  }

  void hold(const std::string& id) {
    const std::lock_guard lock(mutex_);
    known_.insert(id);
  }
  std::vector<SeenRequest> seen() {
    const std::lock_guard lock(mutex_);
    return seen_;
  }
  void block(bool on) {
    {
      const std::lock_guard lock(mutex_);
      blocked_ = on;
    }
    cv_.notify_all();
  }

 private:
  std::mutex mutex_;
  std::condition_variable cv_;
  bool blocked_ = false;
  std::set<std::string> known_;
  std::map<std::string, std::string> decided_;
  std::vector<SeenRequest> seen_;
};

class AdminHttpTest : public ::testing::Test {
 protected:
  void SetUp() override {
    config_.listen = "127.0.0.1:0";
    config_.tokens = {ApiToken{"alice", kAliceToken, ApiToken::Scope::approve},
                      ApiToken{"reader", kReaderToken, ApiToken::Scope::read}};
    start();
  }

  void start() {
    AdminHandlers handlers;
    handlers.readiness = [this] {
      if (nats_up_.load()) return Readiness{true, {}};
      return Readiness{false, {"nats: disconnected", "policy: not loaded"}};
    };
    handlers.metrics = [] {
      return std::string("# TYPE countersign_up gauge\ncountersign_up 1\n");
    };
    handlers.control = [this](ControlOp op, std::string body) {
      control_calls_.fetch_add(1);
      return control_.handle(op, body);
    };
    auto started = AdminServer::start(config_, std::move(handlers), log_);
    ASSERT_TRUE(started.has_value()) << started.error().message;
    server_ = std::move(*started);
    ASSERT_GT(server_->port(), 0);
    api_ = "http://127.0.0.1:" + std::to_string(server_->port());
  }

  void TearDown() override {
    control_.block(false);
    server_.reset();
  }

  AdminConfig config_;
  NullLogger log_;
  FakeControl control_;
  std::atomic<bool> nats_up_{false};
  std::atomic<int> control_calls_{0};
  std::unique_ptr<AdminServer> server_;
  std::string api_;
};

// --- curl ---------------------------------------------------------------------------------------

TEST_F(AdminHttpTest, HealthzWithCurl) {
  const auto r = curl({api_ + "/healthz"});
  EXPECT_EQ(r.status, 200);
  EXPECT_EQ(r.body, "ok");
}

TEST_F(AdminHttpTest, ReadyzIs503ThenReadyWithCurl) {
  auto r = curl({api_ + "/readyz"});
  EXPECT_EQ(r.status, 503);
  EXPECT_EQ(r.body, "nats: disconnected\npolicy: not loaded\n");
  nats_up_ = true;
  r = curl({api_ + "/readyz"});
  EXPECT_EQ(r.status, 200);
  EXPECT_EQ(r.body, "ready");
}

TEST_F(AdminHttpTest, MetricsContentTypeWithCurl) {
  const auto r = curl({api_ + "/metrics"});
  EXPECT_EQ(r.status, 200);
  EXPECT_EQ(r.header("content-type"), "text/plain; version=0.0.4; charset=utf-8");
  EXPECT_EQ(r.body, "# TYPE countersign_up gauge\ncountersign_up 1\n");
}

// The article's flow: approve with a reason, then the same approve again with no body at all.
TEST_F(AdminHttpTest, ArticleApproveFlowWithCurl) {
  const std::string job_id = "inv-2024-0042";
  control_.hold(job_id);
  const std::string auth = std::string("Authorization: Bearer ") + kAliceToken;

  auto r = curl({"-X", "POST", api_ + "/api/v1/approvals/" + job_id + "/approve", "-H",
                 "Content-Type: application/json", "-H", auth, "-d",
                 R"({"reason":"validated invoice"})"});
  EXPECT_EQ(r.status, 200);
  EXPECT_EQ(r.header("content-type"), "application/json");
  EXPECT_EQ(r.header("countersign-status"), "approved");
  EXPECT_EQ(jsonFields(r.body)["status"], "approved");

  r = curl({"-X", "POST", api_ + "/api/v1/approvals/" + job_id + "/approve", "-H", auth});
  EXPECT_EQ(r.status, 200);
  EXPECT_EQ(r.header("countersign-status"), "already_approved");
  EXPECT_EQ(jsonFields(r.body)["status"], "already_approved");

  r = curl({"-X", "POST", api_ + "/api/v1/approvals/" + job_id + "/reject", "-H", auth});
  EXPECT_EQ(r.status, 409);
  EXPECT_EQ(r.header("countersign-status"), "conflict");

  const auto seen = control_.seen();
  ASSERT_EQ(seen.size(), 3u);
  EXPECT_EQ(seen[0].op, ControlOp::approve);
  EXPECT_EQ(seen[0].id, job_id);
  EXPECT_EQ(seen[0].approver, "alice");
  EXPECT_EQ(seen[0].reason, "validated invoice");
  EXPECT_EQ(seen[1].approver, "alice");
  EXPECT_EQ(seen[1].reason, "");
  EXPECT_EQ(seen[2].op, ControlOp::reject);
}

TEST_F(AdminHttpTest, GetAndListWithCurl) {
  control_.hold("job-1");
  const std::string auth = std::string("Authorization: Bearer ") + kReaderToken;
  auto r = curl({api_ + "/api/v1/approvals/job-1", "-H", auth});
  EXPECT_EQ(r.status, 200);
  r = curl({api_ + "/api/v1/approvals/missing", "-H", auth});
  EXPECT_EQ(r.status, 404);
  EXPECT_EQ(r.header("countersign-status"), "not_found");
  r = curl({api_ + "/api/v1/approvals?state=pending&limit=10", "-H", auth});
  EXPECT_EQ(r.status, 200);
  EXPECT_EQ(control_.seen().size(), 3u);
  // A read token cannot decide.
  r = curl({"-X", "POST", api_ + "/api/v1/approvals/job-1/approve", "-H", auth});
  EXPECT_EQ(r.status, 403);
  EXPECT_EQ(control_.seen().size(), 3u);
}

TEST_F(AdminHttpTest, NoTokenIs401WithCurl) {
  control_.hold("job-1");
  auto r =
      curl({"-X", "POST", api_ + "/api/v1/approvals/job-1/approve", "-d", R"({"reason":"x"})"});
  EXPECT_EQ(r.status, 401);
  EXPECT_EQ(r.header("www-authenticate").rfind("Bearer", 0), 0u);
  r = curl(
      {"-X", "POST", api_ + "/api/v1/approvals/job-1/approve", "-H", "Authorization: Bearer nope"});
  EXPECT_EQ(r.status, 401);
  EXPECT_EQ(control_calls_.load(), 0);
}

TEST_F(AdminHttpTest, NonJsonBodyIs400WithCurl) {
  control_.hold("job-1");
  const auto r =
      curl({"-X", "POST", api_ + "/api/v1/approvals/job-1/approve", "-H",
            std::string("Authorization: Bearer ") + kAliceToken, "-d", "reason=validated"});
  EXPECT_EQ(r.status, 400);
  EXPECT_EQ(jsonFields(r.body)["field"], "body");
  EXPECT_EQ(control_calls_.load(), 0);
}

TEST_F(AdminHttpTest, ExpectContinueIsHonoured) {
  control_.hold("job-1");
  const auto r =
      curl({"-X", "POST", api_ + "/api/v1/approvals/job-1/approve", "-H",
            std::string("Authorization: Bearer ") + kAliceToken, "-H", "Expect: 100-continue",
            "--expect100-timeout", "10", "-d", R"({"reason":"ok"})"});
  EXPECT_EQ(r.status, 200);
  ASSERT_EQ(control_.seen().size(), 1u);
  EXPECT_EQ(control_.seen()[0].reason, "ok");
}

TEST_F(AdminHttpTest, LargeBodyIs413WithCurl) {
  TempDir dir;
  const auto file = dir.write("big.json", R"({"reason":")" + std::string(70 * 1024, 'x') + R"("})");
  const auto r = curl({"-X", "POST", api_ + "/api/v1/approvals/job-1/approve", "-H",
                       std::string("Authorization: Bearer ") + kAliceToken, "--data-binary",
                       "@" + file.string()});
  EXPECT_EQ(r.status, 413);
  EXPECT_EQ(r.header("countersign-status"), "too_large");
  EXPECT_EQ(control_calls_.load(), 0);
}

// --- raw sockets --------------------------------------------------------------------------------

TEST_F(AdminHttpTest, KeepAliveAndPipeliningOnOneConnection) {
  RawConnection c(server_->port());
  ASSERT_TRUE(c.connected());
  ASSERT_TRUE(c.send("GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"));
  auto r = c.read();
  ASSERT_TRUE(r.has_value());
  EXPECT_EQ(r->status, 200);
  EXPECT_EQ(r->body, "ok");

  // Two requests in one write; the REST one goes through the worker pool and must still be
  // answered in order.
  control_.hold("job-9");
  ASSERT_TRUE(c.send(
      std::string("GET /api/v1/approvals/job-9 HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ") +
      kAliceToken + "\r\n\r\nGET /metrics HTTP/1.1\r\nHost: x\r\n\r\n"));
  r = c.read();
  ASSERT_TRUE(r.has_value());
  EXPECT_EQ(r->status, 200);
  EXPECT_EQ(r->header("countersign-status"), "ok");
  r = c.read();
  ASSERT_TRUE(r.has_value());
  EXPECT_EQ(r->status, 200);
  EXPECT_EQ(r->header("content-type"), "text/plain; version=0.0.4; charset=utf-8");

  // A POST with a body, then the connection is still usable.
  const std::string body = R"({"reason":"raw"})";
  ASSERT_TRUE(c.send(
      std::string(
          "POST /api/v1/approvals/job-9/approve HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ") +
      kAliceToken + "\r\nContent-Type: application/json\r\nContent-Length: " +
      std::to_string(body.size()) + "\r\n\r\n" + body));
  r = c.read();
  ASSERT_TRUE(r.has_value());
  EXPECT_EQ(r->status, 200);
  EXPECT_EQ(r->header("countersign-status"), "approved");
  ASSERT_TRUE(c.send("GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"));
  r = c.read();
  ASSERT_TRUE(r.has_value());
  EXPECT_EQ(r->status, 200);
}

TEST_F(AdminHttpTest, ConnectionCloseIsHonoured) {
  RawConnection c(server_->port());
  ASSERT_TRUE(c.send("GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"));
  const auto r = c.read();
  ASSERT_TRUE(r.has_value());
  EXPECT_EQ(r->status, 200);
  EXPECT_EQ(lower(r->header("connection")), "close");
  EXPECT_TRUE(c.closedByPeer());

  RawConnection old(server_->port());
  ASSERT_TRUE(old.send("GET /healthz HTTP/1.0\r\n\r\n"));
  const auto r10 = old.read();
  ASSERT_TRUE(r10.has_value());
  EXPECT_EQ(r10->status, 200);
  EXPECT_TRUE(old.closedByPeer());
}

TEST_F(AdminHttpTest, HeadHasLengthButNoBody) {
  RawConnection c(server_->port());
  ASSERT_TRUE(
      c.send("HEAD /healthz HTTP/1.1\r\nHost: x\r\n\r\nGET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"));
  const auto head = c.read(true);
  ASSERT_TRUE(head.has_value());
  EXPECT_EQ(head->status, 200);
  EXPECT_EQ(head->header("content-length"), "2");
  // The next response starts right after the HEAD's head: no body bytes in between.
  const auto get = c.read();
  ASSERT_TRUE(get.has_value());
  EXPECT_EQ(get->status, 200);
  EXPECT_EQ(get->body, "ok");
}

TEST_F(AdminHttpTest, DeclaredBodyBeyondLimitIs413AndClosed) {
  RawConnection c(server_->port());
  ASSERT_TRUE(
      c.send(std::string(
                 "POST /api/v1/approvals/j/approve HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ") +
             kAliceToken + "\r\nContent-Length: 70000\r\n\r\n" + std::string(70000, 'x')));
  const auto r = c.read();
  ASSERT_TRUE(r.has_value());
  EXPECT_EQ(r->status, 413);
  EXPECT_TRUE(c.closedByPeer());
  EXPECT_EQ(control_calls_.load(), 0);
}

TEST_F(AdminHttpTest, ChunkedBodyBeyondLimitIs413) {
  RawConnection c(server_->port());
  std::string request =
      std::string(
          "POST /api/v1/approvals/j/approve HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ") +
      kAliceToken + "\r\nTransfer-Encoding: chunked\r\n\r\n";
  for (int i = 0; i < 20; ++i) request += "1000\r\n" + std::string(0x1000, 'x') + "\r\n";  // 80 KiB
  request += "0\r\n\r\n";
  c.send(request);  // the server may stop reading half way
  const auto r = c.read();
  ASSERT_TRUE(r.has_value());
  EXPECT_EQ(r->status, 413);
  EXPECT_EQ(control_calls_.load(), 0);
}

TEST_F(AdminHttpTest, GarbageIs400AndClosed) {
  RawConnection c(server_->port());
  ASSERT_TRUE(c.send("THIS IS NOT HTTP\r\n\r\n"));
  const auto r = c.read();
  ASSERT_TRUE(r.has_value());
  EXPECT_EQ(r->status, 400);
  EXPECT_TRUE(c.closedByPeer());
}

TEST_F(AdminHttpTest, HugeHeadersAre431) {
  RawConnection c(server_->port());
  ASSERT_TRUE(
      c.send("GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + std::string(20000, 'a') + "\r\n\r\n"));
  const auto r = c.read();
  ASSERT_TRUE(r.has_value());
  EXPECT_EQ(r->status, 431);
}

TEST_F(AdminHttpTest, SlowControlDoesNotBlockHealthz) {
  control_.hold("job-1");
  control_.block(true);
  RawConnection slow(server_->port());
  ASSERT_TRUE(slow.send(
      std::string(
          "POST /api/v1/approvals/job-1/approve HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ") +
      kAliceToken + "\r\nContent-Length: 0\r\n\r\n"));
  // Wait until the request is inside control, then check that the I/O thread still answers.
  for (int i = 0; i < 500 && control_calls_.load() == 0; ++i)
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  ASSERT_EQ(control_calls_.load(), 1);
  const auto health = curl({api_ + "/healthz"});
  EXPECT_EQ(health.status, 200);
  EXPECT_FALSE(slow.read(false, std::chrono::milliseconds(100)).has_value());
  control_.block(false);
  const auto r = slow.read();
  ASSERT_TRUE(r.has_value());
  EXPECT_EQ(r->status, 200);
  EXPECT_EQ(r->header("countersign-status"), "approved");
}

TEST_F(AdminHttpTest, StopClosesConnectionsAndFreesThePort) {
  const int port = server_->port();
  RawConnection idle(port);
  ASSERT_TRUE(idle.connected());
  ASSERT_TRUE(idle.send("GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"));
  ASSERT_TRUE(idle.read().has_value());
  const auto before = std::chrono::steady_clock::now();
  server_->stop();
  server_->stop();  // idempotent
  EXPECT_LT(std::chrono::steady_clock::now() - before, std::chrono::seconds(5));
  EXPECT_TRUE(idle.closedByPeer(std::chrono::seconds(2)));
  RawConnection after(port);
  EXPECT_FALSE(after.connected());

  // The port can be bound again right away.
  config_.listen = "127.0.0.1:" + std::to_string(port);
  server_.reset();
  start();
  EXPECT_EQ(server_->port(), port);
}

TEST_F(AdminHttpTest, SlowAndIdleClientsAreDisconnected) {
  NullLogger log;
  AdminConfig config;
  config.listen = "127.0.0.1:0";
  http::AdminServerOptions options;
  options.io_timeout = std::chrono::milliseconds(300);
  auto started = AdminServer::start(config, {}, log, options);
  ASSERT_TRUE(started.has_value()) << started.error().message;
  const int port = (*started)->port();

  // Half a request head, then silence.
  RawConnection slow(port);
  ASSERT_TRUE(slow.send("GET /healthz HTTP/1.1\r\nHost: x\r\n"));
  // Half a body.
  RawConnection stalled(port);
  ASSERT_TRUE(stalled.send(
      "POST /api/v1/approvals/a/approve HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nabc"));
  // A finished request, then an idle keep-alive connection.
  RawConnection idle(port);
  ASSERT_TRUE(idle.send("GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"));
  const auto r = idle.read();
  ASSERT_TRUE(r.has_value());
  EXPECT_EQ(r->status, 200);

  const auto before = std::chrono::steady_clock::now();
  EXPECT_TRUE(slow.closedByPeer(std::chrono::seconds(5)));
  EXPECT_TRUE(stalled.closedByPeer(std::chrono::seconds(5)));
  EXPECT_TRUE(idle.closedByPeer(std::chrono::seconds(5)));
  EXPECT_LT(std::chrono::steady_clock::now() - before, std::chrono::seconds(3));
  EXPECT_TRUE(slow.unread().empty());  // dropped without an answer: nobody is waiting for one

  // The default keeps a connection open much longer than that.
  RawConnection patient(server_->port());
  ASSERT_TRUE(patient.send("GET /healthz HTTP/1.1\r\nHost: x\r\n"));
  EXPECT_FALSE(patient.closedByPeer(std::chrono::milliseconds(800)));
}

TEST_F(AdminHttpTest, StartFailsOnBadOrBusyAddress) {
  NullLogger log;
  for (const char* listen :
       {"nonsense", "127.0.0.1:", "127.0.0.1:http", "127.0.0.1:70000", "::1:80", ""}) {
    AdminConfig bad;
    bad.listen = listen;
    auto started = AdminServer::start(bad, {}, log);
    ASSERT_FALSE(started.has_value()) << listen;
    EXPECT_EQ(started.error().code, Errc::invalid_argument)
        << listen << ": " << started.error().message;
  }
  AdminConfig busy;
  busy.listen = "127.0.0.1:" + std::to_string(server_->port());
  auto started = AdminServer::start(busy, {}, log);
  ASSERT_FALSE(started.has_value());
  EXPECT_EQ(started.error().code, Errc::unavailable);
}

// --- connection limit ---------------------------------------------------------------------------

// Idle sockets cannot lock out the health probe: beyond admin.max_connections the longest-idle
// connection is closed for the newcomer. Without the cap all of them stay open (and at ~20k the
// process runs out of descriptors and /healthz stops answering).
TEST_F(AdminHttpTest, IdleConnectionsBeyondTheCapDoNotLockOutHealthz) {
  NullLogger log;
  AdminConfig config;
  config.listen = "127.0.0.1:0";
  config.max_connections = 40;
  auto started = AdminServer::start(config, {}, log);
  ASSERT_TRUE(started.has_value()) << started.error().message;
  const int port = (*started)->port();

  std::vector<std::unique_ptr<RawConnection>> idle;
  for (int i = 0; i < 1500; ++i) {
    idle.push_back(std::make_unique<RawConnection>(port));
    ASSERT_TRUE(idle.back()->connected()) << i;
  }
  // /healthz answers at once, again and again, while the idle ones pile up.
  for (int round = 0; round < 5; ++round) {
    RawConnection probe(port);
    ASSERT_TRUE(probe.send("GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"));
    const auto r = probe.read(false, std::chrono::seconds(3));
    ASSERT_TRUE(r.has_value()) << "round " << round;
    EXPECT_EQ(r->status, 200);
  }
  // The server keeps at most the cap open: the rest were closed.
  std::size_t open = idle.size();
  for (int i = 0; i < 50 && open > 40; ++i) {
    open = 0;
    for (auto& c : idle) open += c->closedNow() ? 0 : 1;
    if (open > 40) std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  EXPECT_LE(open, 40u);
  // The newest idle connections are the ones kept: they can still be served.
  ASSERT_TRUE(idle.back()->send("GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"));
  const auto last = idle.back()->read();
  ASSERT_TRUE(last.has_value());
  EXPECT_EQ(last->status, 200);
}

TEST(AdminConfigLimits, MaxConnectionsIsReadAndChecked) {
  const std::string base = "policy: { file: p.yaml }\nroutes: [{ name: jobs, from: \"a.>\", to: \"b.>\" }]\n";
  auto config = parseConfig(base + "admin: { max_connections: 40 }\n", "t.yaml", "/tmp");
  ASSERT_TRUE(config.has_value()) << config.error().message;
  EXPECT_EQ(config->admin.max_connections, 40);
  EXPECT_EQ(parseConfig(base, "t.yaml", "/tmp")->admin.max_connections, 1024);
  for (const char* bad : {"1", "0", "-5", "100001", "many"}) {
    auto refused = parseConfig(base + "admin: { max_connections: " + bad + " }\n", "t.yaml", "/tmp");
    ASSERT_FALSE(refused.has_value()) << bad;
    EXPECT_NE(refused.error().message.find("admin.max_connections"), std::string::npos) << refused.error().message;
  }
}

// --- the event stream (/api/v1/events) ----------------------------------------------------------

class EventStreamTest : public AdminHttpTest {
 protected:
  void SetUp() override {
    config_.listen = "127.0.0.1:0";
    config_.tokens = {ApiToken{"alice", kAliceToken, ApiToken::Scope::approve},
                      ApiToken{"reader", kReaderToken, ApiToken::Scope::read}};
  }

  void startWith(http::AdminServerOptions options) {
    AdminHandlers handlers;
    handlers.events = [this](http::EventSink sink) {
      const std::lock_guard lock(sink_mutex_);
      sink_ = std::move(sink);
      return [this] {
        const std::lock_guard stop_lock(sink_mutex_);
        sink_ = nullptr;
      };
    };
    auto started = AdminServer::start(config_, std::move(handlers), log_, options);
    ASSERT_TRUE(started.has_value()) << started.error().message;
    server_ = std::move(*started);
  }

  void emit(const std::string& event, const std::string& body) {
    const std::lock_guard lock(sink_mutex_);
    ASSERT_TRUE(sink_) << "the server did not subscribe to the feed";
    sink_("countersign.events." + event + ".finance.pay", body);
  }

  std::unique_ptr<RawConnection> open(const std::string& target, const std::string& extra = "") {
    auto c = std::make_unique<RawConnection>(server_->port());
    EXPECT_TRUE(c->send("GET " + target + " HTTP/1.1\r\nHost: x\r\n" + extra + "\r\n"));
    return c;
  }

  std::mutex sink_mutex_;
  http::EventSink sink_;
};

TEST_F(EventStreamTest, DeliversEventsAndResumesAfterLastEventId) {
  startWith({});
  auto first = open("/api/v1/events", std::string("Authorization: Bearer ") + kReaderToken + "\r\n");
  ASSERT_TRUE(first->readUntil("event: ready\ndata: {}\n\n"));
  EXPECT_NE(first->unread().find("Content-Type: text/event-stream"), std::string::npos);
  EXPECT_NE(first->unread().find("X-Content-Type-Options: nosniff"), std::string::npos);
  emit("held", R"({"event":"held","approval_id":"a1"})");
  emit("approved", R"({"event":"approved","approval_id":"a1"})");
  emit("released", R"({"event":"released","approval_id":"a1"})");
  ASSERT_TRUE(first->readUntil(R"(data: {"event":"released","approval_id":"a1"})"));
  const std::string& text = first->unread();
  const auto id_at = text.find("id: ");
  ASSERT_NE(id_at, std::string::npos);
  const std::string first_id = text.substr(id_at + 4, text.find('\n', id_at) - id_at - 4);
  EXPECT_NE(text.find("event: held\ndata: {\"event\":\"held\""), std::string::npos);

  // Reconnecting after the first event replays the other two, then `ready`.
  auto resumed = open("/api/v1/events", std::string("Authorization: Bearer ") + kReaderToken +
                                            "\r\nLast-Event-ID: " + first_id + "\r\n");
  ASSERT_TRUE(resumed->readUntil("event: ready"));
  const std::string& replay = resumed->unread();
  EXPECT_EQ(replay.find("\"held\""), std::string::npos);
  EXPECT_NE(replay.find("\"approved\""), std::string::npos);
  EXPECT_LT(replay.find("\"released\""), replay.find("event: ready"));

  // An id from another process (or too old) asks the client to resync.
  auto stranger = open("/api/v1/events", std::string("Authorization: Bearer ") + kReaderToken +
                                             "\r\nLast-Event-ID: 0123456789abcdef-2\r\n");
  ASSERT_TRUE(stranger->readUntil("event: ready"));
  EXPECT_NE(stranger->unread().find("event: resync"), std::string::npos);
}

TEST_F(EventStreamTest, NeedsATokenOrAOneTimeTicket) {
  startWith({});
  auto anonymous = open("/api/v1/events");
  const auto refused = anonymous->read();
  ASSERT_TRUE(refused.has_value());
  EXPECT_EQ(refused->status, 401);

  const auto issued = curl({"-X", "POST", "-H", std::string("Authorization: Bearer ") + kReaderToken,
                            "http://127.0.0.1:" + std::to_string(server_->port()) + "/api/v1/tickets"});
  ASSERT_EQ(issued.status, 201);
  auto parsed = json::parseStrict(issued.body);
  ASSERT_TRUE(parsed && parsed->HasMember("ticket"));
  const std::string ticket = (*parsed)["ticket"].GetString();
  auto with_ticket = open("/api/v1/events?ticket=" + ticket);
  ASSERT_TRUE(with_ticket->readUntil("event: ready"));
  auto reused = open("/api/v1/events?ticket=" + ticket);
  const auto again = reused->read();
  ASSERT_TRUE(again.has_value());
  EXPECT_EQ(again->status, 401);
}

// A client that stops reading does not make the server queue without bound: past its queue it
// is told to resync and dropped (one that never reads again is closed by the write timeout).
TEST_F(EventStreamTest, AClientThatStopsReadingIsDroppedWithResync) {
  http::AdminServerOptions options;
  options.event_queue = 8;
  options.io_timeout = std::chrono::seconds(20);
  options.event_tick = std::chrono::milliseconds(5);  // the test waits for every 4th event
  startWith(options);
  auto reader = open("/api/v1/events", std::string("Authorization: Bearer ") + kReaderToken + "\r\n");
  ASSERT_TRUE(reader->readUntil("event: ready"));
  auto healthy = open("/api/v1/events", std::string("Authorization: Bearer ") + kReaderToken + "\r\n");
  ASSERT_TRUE(healthy->readUntil("event: ready"));
  // The one that reads keeps up and gets everything; the one that does not is closed after a
  // resync. 16 MB in all: more than the kernel's socket buffers take for the one not reading.
  const std::string big(16 * 1024, 'x');
  for (int i = 0; i < 1000; ++i) {
    const std::string id = "a" + std::to_string(i);
    emit("held", R"({"event":"held","approval_id":")" + id + R"(","pad":")" + big + "\"}");
    if (i % 4 == 3) {
      ASSERT_TRUE(healthy->readUntil("\"approval_id\":\"" + id + "\"")) << id;
      EXPECT_EQ(healthy->unread().find("event: resync"), std::string::npos) << id;
      healthy->forget();
    }
  }
  // The other one reads again: what the kernel buffered, then `resync`, then the end.
  EXPECT_TRUE(reader->closedByPeer(std::chrono::seconds(10)));
  EXPECT_NE(reader->unread().find("event: resync"), std::string::npos);
  EXPECT_EQ(reader->unread().find(R"("approval_id":"a999")"), std::string::npos);
  // The server still answers.
  const auto health = curl({"http://127.0.0.1:" + std::to_string(server_->port()) + "/healthz"});
  EXPECT_EQ(health.status, 200);
}

// A client that reads nothing at all while its queue has room: the write that cannot finish is
// noticed by the next event or heartbeat after io_timeout, and the connection is closed.
TEST_F(EventStreamTest, AClientThatReadsNothingIsClosedAfterTheWriteTimeout) {
  http::AdminServerOptions options;
  options.event_queue = 100000;  // never full here: only the write timeout can close it
  options.io_timeout = std::chrono::milliseconds(500);
  options.heartbeat = std::chrono::milliseconds(100);
  startWith(options);
  auto reader = open("/api/v1/events", std::string("Authorization: Bearer ") + kReaderToken + "\r\n");
  ASSERT_TRUE(reader->readUntil("event: ready"));
  // 16 MB: more than the kernel's socket buffers take, so a write stays unfinished.
  const std::string big(16 * 1024, 'x');
  for (int i = 0; i < 1000; ++i) {
    emit("held", R"({"event":"held","approval_id":"b)" + std::to_string(i) + R"(","pad":")" + big + "\"}");
  }
  std::this_thread::sleep_for(std::chrono::seconds(2));  // io_timeout and more heartbeats pass
  EXPECT_TRUE(reader->closedByPeer(std::chrono::seconds(10)));
  EXPECT_EQ(reader->unread().find(R"("approval_id":"b999")"), std::string::npos);
  EXPECT_EQ(curl({"http://127.0.0.1:" + std::to_string(server_->port()) + "/healthz"}).status, 200);
}

TEST_F(AdminHttpTest, ListensOnIpv6Loopback) {
  NullLogger log;
  AdminConfig v6;
  v6.listen = "[::1]:0";
  auto started = AdminServer::start(v6, {}, log);
  if (!started) GTEST_SKIP() << "no IPv6 loopback here: " << started.error().message;
  const auto r = curl({"http://[::1]:" + std::to_string((*started)->port()) + "/healthz"});
  EXPECT_EQ(r.status, 200);
}

}  // namespace
}  // namespace countersign::testing
