#include "https_client.hpp"

#include <openssl/ssl.h>

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

struct HttpsClient::Impl {
  asio::ssl::context ssl{asio::ssl::context::tls_client};
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

namespace {

template <class Stream>
HttpResult exchange(Stream& stream, bhttp::request<bhttp::string_body>& request,
                    asio::io_context& ioc, std::chrono::milliseconds timeout) {
  HttpResult result;
  beast::get_lowest_layer(stream).expires_after(timeout);
  bhttp::async_write(stream, request, [&](beast::error_code ec, std::size_t) {
    if (ec) {
      result.error = "write: " + ec.message();
      return;
    }
    auto buffer = std::make_shared<beast::flat_buffer>();
    auto response = std::make_shared<bhttp::response_parser<bhttp::string_body>>();
    response->body_limit(8 * 1024 * 1024);
    bhttp::async_read(stream, *buffer, *response, [&, buffer, response](beast::error_code rec, std::size_t) {
      if (rec) {
        result.error = "read: " + rec.message();
        return;
      }
      auto& message = response->get();
      result.status = static_cast<int>(message.result_int());
      result.body = std::move(message.body());
      if (const auto it = message.find(bhttp::field::retry_after); it != message.end()) {
        result.retry_after = std::string(it->value());
      }
    });
  });
  ioc.restart();
  ioc.run();
  return result;
}

}  // namespace

HttpResult HttpsClient::post(const std::string& url, const std::string& content_type, const std::string& body,
                             const std::vector<std::pair<std::string, std::string>>& headers,
                             std::chrono::milliseconds timeout) {
  HttpResult result;
  auto parsed = parseUrl(url);
  if (!parsed) {
    result.error = parsed.error().message;
    return result;
  }
  bhttp::request<bhttp::string_body> request{bhttp::verb::post, parsed->target, 11};
  request.set(bhttp::field::host, parsed->host);
  request.set(bhttp::field::user_agent, "countersign-bridge");
  request.set(bhttp::field::content_type, content_type);
  for (const auto& [name, value] : headers) request.set(name, value);
  request.body() = body;
  request.prepare_payload();
  try {
    asio::io_context ioc;
    tcp::resolver resolver(ioc);
    beast::error_code ec;
    const auto endpoints = resolver.resolve(parsed->host, parsed->port, ec);
    if (ec) {
      result.error = "resolve: " + ec.message();
      return result;
    }
    if (!parsed->tls) {
      beast::tcp_stream stream(ioc);
      stream.expires_after(timeout);
      stream.async_connect(endpoints, [&](beast::error_code cec, const tcp::endpoint&) {
        if (cec) result.error = "connect: " + cec.message();
      });
      ioc.run();
      if (!result.error.empty()) return result;
      result = exchange(stream, request, ioc, timeout);
      stream.socket().shutdown(tcp::socket::shutdown_both, ec);
      return result;
    }
    auto& ssl = *static_cast<asio::ssl::context*>(sslContext());
    beast::ssl_stream<beast::tcp_stream> stream(ioc, ssl);
    expectPeerName(stream.native_handle(), parsed->host);
    beast::get_lowest_layer(stream).expires_after(timeout);
    beast::get_lowest_layer(stream).async_connect(endpoints, [&](beast::error_code cec, const tcp::endpoint&) {
      if (cec) {
        result.error = "connect: " + cec.message();
        return;
      }
      stream.async_handshake(asio::ssl::stream_base::client, [&](beast::error_code hec) {
        if (hec) result.error = "tls: " + hec.message();
      });
    });
    ioc.run();
    if (!result.error.empty()) return result;
    result = exchange(stream, request, ioc, timeout);
    beast::get_lowest_layer(stream).socket().shutdown(tcp::socket::shutdown_both, ec);
  } catch (const std::exception& e) {
    result.status = 0;
    result.error = e.what();
  }
  return result;
}

}  // namespace countersign::bridge
