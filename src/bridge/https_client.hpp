// HTTP(S) POSTs for the bridge: the Slack Web API and webhooks, on Boost.Beast and OpenSSL. The
// server certificate is verified against the system's CAs plus an optional CA file, and its
// name (or IP) against the URL's host. Connections are kept alive and reused (HTTP/1.1): a call
// takes an idle connection to the same origin, or opens one; a connection the server closed while
// idle is noticed before use, and a request that found a reused connection closed before any
// answer is sent once more on a new one. Each call is bounded by a timeout. Thread-safe: calls
// share the TLS context and the pool of idle connections (a few per origin), nothing else. This
// header stays free of Boost.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "countersign/result.hpp"

namespace countersign::bridge {

struct HttpResult {
  int status = 0;           // 0: no answer (connection, TLS or timeout); see `error`
  std::string body;
  std::string retry_after;  // the Retry-After header, when sent
  std::string error;        // why there was no answer
};

struct ParsedUrl {
  bool tls = true;
  std::string host;
  std::string port;
  std::string target;  // path and query, at least "/"
};
Result<ParsedUrl> parseUrl(std::string_view url);

// Sets SNI and the name (or IP address) the server's certificate must carry, on an OpenSSL SSL*.
void expectPeerName(void* ssl, const std::string& host);

class HttpsClient {
 public:
  // `ca_file` empty: the system's CAs only.
  static Result<std::unique_ptr<HttpsClient>> create(const std::string& ca_file);
  ~HttpsClient();
  HttpsClient(const HttpsClient&) = delete;
  HttpsClient& operator=(const HttpsClient&) = delete;

  HttpResult post(const std::string& url, const std::string& content_type, const std::string& body,
                  const std::vector<std::pair<std::string, std::string>>& headers,
                  std::chrono::milliseconds timeout = std::chrono::seconds(10));

  // The TLS context (a boost::asio::ssl::context), for the Socket Mode WebSocket.
  void* sslContext();

  // Connections opened (TCP connect, plus the TLS handshake for https) since creation.
  std::uint64_t connectionsOpened() const;

 private:
  struct Impl;
  explicit HttpsClient(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace countersign::bridge
