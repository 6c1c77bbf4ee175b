#include "https_client.hpp"

#include <openssl/ssl.h>
#include <sys/socket.h>

#include <atomic>
#include <cerrno>
#include <map>
#include <mutex>

#include <boost/asio/connect.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/address.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/ssl.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/ssl.hpp>
#include <boost/beast/version.hpp>

namespace countersign::bridge {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace bhttp = boost::beast::http;
using tcp = asio::ip::tcp;

Result<ParsedUrl> parseUrl(std::string_view url) {
  ParsedUrl out;
  std::string_view rest;
  if (url.starts_with("https://")) {
    rest = url.substr(8);
  } else if (url.starts_with("http://")) {
    out.tls = false;
    rest = url.substr(7);
  } else {
    return fail(Errc::invalid_argument, "expected an http(s) URL");
  }
  const std::size_t slash = rest.find('/');
  const std::string_view authority = rest.substr(0, slash);
  out.target = slash == std::string_view::npos ? "/" : std::string(rest.substr(slash));
  std::size_t colon = authority.rfind(':');
  if (!authority.empty() && authority.front() == '[') {
    const std::size_t close = authority.find(']');
    if (close == std::string_view::npos) return fail(Errc::invalid_argument, "bad IPv6 host");
    out.host = std::string(authority.substr(1, close - 1));
    colon = authority.find(':', close);
  } else {
    out.host = std::string(authority.substr(0, colon));
  }
  out.port = colon == std::string_view::npos ? (out.tls ? "443" : "80") : std::string(authority.substr(colon + 1));
  if (out.host.empty() || out.port.empty()) return fail(Errc::invalid_argument, "URL without a host");
  return out;
}

void expectPeerName(void* native, const std::string& host) {
  auto* ssl = static_cast<SSL*>(native);
  X509_VERIFY_PARAM* param = SSL_get0_param(ssl);
  boost::system::error_code ec;
  (void)asio::ip::make_address(host, ec);
  if (ec) {
    SSL_ctrl(ssl, SSL_CTRL_SET_TLSEXT_HOSTNAME, TLSEXT_NAMETYPE_host_name, const_cast<char*>(host.c_str()));
    X509_VERIFY_PARAM_set1_host(param, host.c_str(), host.size());
  } else {
    X509_VERIFY_PARAM_set1_ip_asc(param, host.c_str());
  }
}

namespace {

constexpr std::size_t kIdlePerOrigin = 4;
// A connection idle longer than this is closed rather than reused (servers close idle ones).
constexpr std::chrono::seconds kMaxIdle{50};

// One kept-alive connection: its own io_context (each call runs it on the caller's thread), and
// the stream, plain or TLS.
struct Connection {
  asio::io_context ioc;
  std::unique_ptr<beast::tcp_stream> plain;
  std::unique_ptr<beast::ssl_stream<beast::tcp_stream>> tls;
  std::chrono::steady_clock::time_point idle_since;

  beast::tcp_stream& lowest() { return tls ? beast::get_lowest_layer(*tls) : *plain; }

  // Whether the server closed the idle connection (or sent something unasked, such as a TLS
  // close_notify): a non-blocking peek must find nothing to read and no end of stream.
  bool stillOpen() {
    if (std::chrono::steady_clock::now() - idle_since > kMaxIdle) return false;
    char byte = 0;
    const ssize_t n = ::recv(lowest().socket().native_handle(), &byte, 1, MSG_PEEK | MSG_DONTWAIT);
    return n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK);
  }
};

struct Exchange {
  HttpResult result;
  bool keep_alive = false;
  bool nothing_received = false;  // the request failed before any byte of an answer arrived
};

template <class Stream>
Exchange exchange(Stream& stream, bhttp::request<bhttp::string_body>& request, asio::io_context& ioc,
                  std::chrono::milliseconds timeout) {
  Exchange out;
  beast::get_lowest_layer(stream).expires_after(timeout);
  auto buffer = std::make_shared<beast::flat_buffer>();
  auto response = std::make_shared<bhttp::response_parser<bhttp::string_body>>();
  response->body_limit(8 * 1024 * 1024);
  bhttp::async_write(stream, request, [&](beast::error_code ec, std::size_t) {
    if (ec) {
      out.result.error = "write: " + ec.message();
      out.nothing_received = true;
      return;
    }
    bhttp::async_read(stream, *buffer, *response, [&](beast::error_code rec, std::size_t) {
      if (rec) {
        out.result.error = "read: " + rec.message();
        out.nothing_received = !response->got_some();
        return;
      }
      auto& message = response->get();
      out.result.status = static_cast<int>(message.result_int());
      out.keep_alive = message.keep_alive();
      out.result.body = std::move(message.body());
      if (const auto it = message.find(bhttp::field::retry_after); it != message.end()) {
        out.result.retry_after = std::string(it->value());
      }
    });
  });
  ioc.restart();
  ioc.run();
  return out;
}

}  // namespace

struct HttpsClient::Impl {
  asio::ssl::context ssl{asio::ssl::context::tls_client};
  std::mutex mutex;
  std::map<std::string, std::vector<std::unique_ptr<Connection>>> idle;  // by origin
  std::atomic<std::uint64_t> opened{0};

  std::unique_ptr<Connection> takeIdle(const std::string& origin) {
    std::lock_guard lock(mutex);
    auto& list = idle[origin];
    while (!list.empty()) {
      auto connection = std::move(list.back());
      list.pop_back();
      if (connection->stillOpen()) return connection;
    }
    return nullptr;
  }

  void giveBack(const std::string& origin, std::unique_ptr<Connection> connection) {
    connection->idle_since = std::chrono::steady_clock::now();
    std::lock_guard lock(mutex);
    auto& list = idle[origin];
    if (list.size() < kIdlePerOrigin) list.push_back(std::move(connection));
  }

  // A new connection to the URL's host (TCP, and TLS with the peer checks), or the reason why not.
  std::unique_ptr<Connection> open(const ParsedUrl& url, std::chrono::milliseconds timeout, std::string& error) {
    auto connection = std::make_unique<Connection>();
    tcp::resolver resolver(connection->ioc);
    beast::error_code ec;
    const auto endpoints = resolver.resolve(url.host, url.port, ec);
    if (ec) {
      error = "resolve: " + ec.message();
      return nullptr;
    }
    if (url.tls) {
      connection->tls = std::make_unique<beast::ssl_stream<beast::tcp_stream>>(connection->ioc, ssl);
      expectPeerName(connection->tls->native_handle(), url.host);
    } else {
      connection->plain = std::make_unique<beast::tcp_stream>(connection->ioc);
    }
    auto& lowest = connection->lowest();
    lowest.expires_after(timeout);
    lowest.async_connect(endpoints, [&](beast::error_code cec, const tcp::endpoint&) {
      if (cec) {
        error = "connect: " + cec.message();
        return;
      }
      if (!connection->tls) return;
      connection->tls->async_handshake(asio::ssl::stream_base::client, [&](beast::error_code hec) {
        if (hec) error = "tls: " + hec.message();
      });
    });
    connection->ioc.run();
    if (!error.empty()) return nullptr;
    lowest.socket().set_option(tcp::no_delay(true), ec);
    opened.fetch_add(1);
    return connection;
  }
};

HttpsClient::HttpsClient(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
HttpsClient::~HttpsClient() = default;

Result<std::unique_ptr<HttpsClient>> HttpsClient::create(const std::string& ca_file) {
  auto impl = std::make_unique<Impl>();
  boost::system::error_code ec;
  impl->ssl.set_default_verify_paths(ec);
  if (!ca_file.empty()) {
    impl->ssl.load_verify_file(ca_file, ec);
    if (ec) return fail(Errc::io, "cannot load CA file " + ca_file + ": " + ec.message());
  }
  impl->ssl.set_verify_mode(asio::ssl::verify_peer);
  impl->ssl.set_options(asio::ssl::context::no_sslv2 | asio::ssl::context::no_sslv3 |
                        asio::ssl::context::no_tlsv1 | asio::ssl::context::no_tlsv1_1);
  return std::unique_ptr<HttpsClient>(new HttpsClient(std::move(impl)));
}

void* HttpsClient::sslContext() { return &impl_->ssl; }

std::uint64_t HttpsClient::connectionsOpened() const { return impl_->opened.load(); }

HttpResult HttpsClient::post(const std::string& url, const std::string& content_type, const std::string& body,
                             const std::vector<std::pair<std::string, std::string>>& headers,
                             std::chrono::milliseconds timeout) {
  auto parsed = parseUrl(url);
  if (!parsed) {
    HttpResult result;
    result.error = parsed.error().message;
    return result;
  }
  bhttp::request<bhttp::string_body> request{bhttp::verb::post, parsed->target, 11};
  request.set(bhttp::field::host, parsed->host);
  request.set(bhttp::field::user_agent, "countersign-bridge");
  request.set(bhttp::field::content_type, content_type);
  for (const auto& [name, value] : headers) request.set(name, value);
  request.body() = body;
  request.keep_alive(true);
  request.prepare_payload();
  const std::string origin = (parsed->tls ? "https://" : "http://") + parsed->host + ":" + parsed->port;
  try {
    // A reused connection the server closed in the meantime fails before any answer: the
    // request is sent once more, on a new connection.
    for (int attempt = 0;; ++attempt) {
      auto connection = attempt == 0 ? impl_->takeIdle(origin) : nullptr;
      const bool reused = connection != nullptr;
      if (!connection) {
        HttpResult failed;
        connection = impl_->open(*parsed, timeout, failed.error);
        if (!connection) return failed;
      }
      Exchange done = connection->tls ? exchange(*connection->tls, request, connection->ioc, timeout)
                                      : exchange(*connection->plain, request, connection->ioc, timeout);
      if (done.result.status == 0 && reused && done.nothing_received) continue;
      if (done.result.status != 0 && done.keep_alive) impl_->giveBack(origin, std::move(connection));
      return std::move(done.result);
    }
  } catch (const std::exception& e) {
    HttpResult result;
    result.error = e.what();
    return result;
  }
}

}  // namespace countersign::bridge
