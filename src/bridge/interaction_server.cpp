#include "interaction_server.hpp"

#include <sys/socket.h>
#include <sys/time.h>

#include <atomic>
#include <chrono>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <condition_variable>
#include <mutex>
#include <thread>

#include "signatures.hpp"

namespace countersign::bridge {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace bhttp = boost::beast::http;
using tcp = asio::ip::tcp;

struct InteractionServer::Impl {
  std::string secret;
  std::function<std::int64_t()> now_unix;
  std::function<void(std::string)> on_verified;
  Logger& log;
  BridgeMetrics& metrics;
  asio::io_context ioc;
  tcp::acceptor acceptor{ioc};
  std::thread accept_thread;
  std::mutex mutex;
  std::condition_variable idle;
  int active = 0;
  std::atomic<bool> stopping{false};

  Impl(std::string s, std::function<std::int64_t()> n, std::function<void(std::string)> v, Logger& l, BridgeMetrics& m)
      : secret(std::move(s)), now_unix(std::move(n)), on_verified(std::move(v)), log(l), metrics(m) {}

  void acceptLoop() {
    while (!stopping.load()) {
      boost::system::error_code ec;
      tcp::socket socket(ioc);
      acceptor.accept(socket, ec);
      if (ec) {
        if (stopping.load()) return;
        continue;
      }
      std::unique_lock lock(mutex);
      if (active >= 64) {
        socket.close(ec);
        continue;
      }
      ++active;
      lock.unlock();
      std::thread([this, s = std::move(socket)]() mutable {
        serve(s);
        std::lock_guard done(mutex);
        --active;
        idle.notify_all();
      }).detach();
    }
  }

  // After answering early (413), read and drop what the client still sends for a few seconds:
  // closing with unread data would reset the connection before the client reads the answer.
  static void drainInput(tcp::socket& socket) {
    boost::system::error_code ec;
    socket.shutdown(tcp::socket::shutdown_send, ec);
    timeval tv{1, 0};
    setsockopt(socket.native_handle(), SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(5);
    char sink[16384];
    while (std::chrono::steady_clock::now() < deadline) {
      const std::size_t n = socket.read_some(asio::buffer(sink), ec);
      if (ec || n == 0) break;
    }
  }

  void reply(tcp::socket& socket, bhttp::status status, std::string body, bool unread_input = false) {
    bhttp::response<bhttp::string_body> res{status, 11};
    res.set(bhttp::field::content_type, "text/plain; charset=utf-8");
    res.keep_alive(false);
    res.body() = std::move(body);
    res.prepare_payload();
    boost::system::error_code ec;
    bhttp::write(socket, res, ec);
    if (unread_input) return drainInput(socket);
    socket.shutdown(tcp::socket::shutdown_both, ec);
  }

  void serve(tcp::socket& socket) {
    timeval tv{10, 0};
    setsockopt(socket.native_handle(), SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    setsockopt(socket.native_handle(), SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    beast::flat_buffer buffer;
    bhttp::request_parser<bhttp::string_body> parser;
    parser.body_limit(kMaxInteractionBody);
    parser.header_limit(16 * 1024);
    boost::system::error_code ec;
    bhttp::read(socket, buffer, parser, ec);
    if (ec == bhttp::error::body_limit) {
      metrics.interaction("too_large");
      return reply(socket, bhttp::status::payload_too_large, "body too large\n", true);
    }
    if (ec) return;
    const auto& req = parser.get();
    if (req.target() != "/slack/interactions") return reply(socket, bhttp::status::not_found, "not found\n");
    if (req.method() != bhttp::verb::post) return reply(socket, bhttp::status::method_not_allowed, "POST only\n");
    const auto header = [&](std::string_view name) {
      const auto it = req.find(beast::string_view(name.data(), name.size()));
      return it == req.end() ? std::string() : std::string(it->value());
    };
    const auto check = verifySlackSignature(secret, header("X-Slack-Request-Timestamp"), header("X-Slack-Signature"),
                                            req.body(), now_unix());
    if (check != SlackSignatureCheck::ok) {
      metrics.interaction(toString(check));
      log.warn("slack interactions: refused a post", {{"reason", toString(check)}});
      return reply(socket, bhttp::status::unauthorized, "bad or stale signature\n");
    }
    metrics.interaction("accepted");
    std::string body = req.body();
    reply(socket, bhttp::status::ok, "");
    on_verified(std::move(body));
  }
};

InteractionServer::InteractionServer(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
InteractionServer::~InteractionServer() { stop(); }

Result<std::unique_ptr<InteractionServer>> InteractionServer::start(const std::string& listen, std::string signing_secret,
                                                                    std::function<std::int64_t()> now_unix,
                                                                    std::function<void(std::string)> on_verified,
                                                                    Logger& log, BridgeMetrics& metrics) {
  auto impl = std::make_unique<Impl>(std::move(signing_secret), std::move(now_unix), std::move(on_verified), log, metrics);
  const std::size_t colon = listen.rfind(':');
  std::string host = listen.substr(0, colon);
  if (host.size() >= 2 && host.front() == '[') host = host.substr(1, host.size() - 2);
  boost::system::error_code ec;
  const auto address = asio::ip::make_address(host, ec);
  if (ec) return fail(Errc::invalid_argument, "slack.listen: expected an IP address, got " + host);
  const tcp::endpoint endpoint(address, static_cast<unsigned short>(std::stoi(listen.substr(colon + 1))));
  impl->acceptor.open(endpoint.protocol(), ec);
  if (!ec) impl->acceptor.set_option(asio::socket_base::reuse_address(true), ec);
  if (!ec) impl->acceptor.bind(endpoint, ec);
  if (!ec) impl->acceptor.listen(asio::socket_base::max_listen_connections, ec);
  if (ec) return fail(Errc::unavailable, "slack.listen " + listen + ": " + ec.message());
  auto* raw = impl.get();
  impl->accept_thread = std::thread([raw] { raw->acceptLoop(); });
  return std::unique_ptr<InteractionServer>(new InteractionServer(std::move(impl)));
}

int InteractionServer::port() const { return impl_->acceptor.local_endpoint().port(); }

void InteractionServer::stop() {
  if (impl_->stopping.exchange(true)) return;
  boost::system::error_code ec;
  ::shutdown(impl_->acceptor.native_handle(), SHUT_RDWR);
  impl_->acceptor.close(ec);
  if (impl_->accept_thread.joinable()) impl_->accept_thread.join();
  std::unique_lock lock(impl_->mutex);
  impl_->idle.wait_for(lock, std::chrono::seconds(12), [this] { return impl_->active == 0; });
}

}  // namespace countersign::bridge
