#include "socket_mode.hpp"

#include <boost/asio/connect.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/ssl.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/ssl.hpp>
#include <boost/beast/websocket.hpp>
#include <boost/beast/websocket/ssl.hpp>

#include "core/json_writer.hpp"
#include "countersign/json.hpp"
#include "json_fields.hpp"
#include "retry.hpp"

namespace countersign::bridge {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace websocket = boost::beast::websocket;
using tcp = asio::ip::tcp;

SocketMode::SocketMode(SlackApi& api, HttpsClient& client, Logger& log,
                       std::function<void(std::string)> on_interactive)
    : api_(api), client_(client), log_(log), on_interactive_(std::move(on_interactive)) {}

SocketMode::~SocketMode() { stop(); }

void SocketMode::start() { thread_ = std::thread([this] { run(); }); }

void SocketMode::stop() {
  {
    std::lock_guard lock(mutex_);
    stopping_ = true;
    if (abort_session_) abort_session_();
  }
  wake_.notify_all();
  if (thread_.joinable()) thread_.join();
}

bool SocketMode::sleepUnlessStopping(std::chrono::milliseconds delay) {
  std::unique_lock lock(mutex_);
  return !wake_.wait_for(lock, delay, [this] { return stopping_; });
}

void SocketMode::run() {
  int failures = 0;
  while (true) {
    {
      std::lock_guard lock(mutex_);
      if (stopping_) return;
    }
    SlackReply reply = api_.call("apps.connections.open", "{}", true);
    std::string url;
    if (reply.ok) {
      if (auto doc = json::parseStrict(reply.body); doc && doc->IsObject()) url = detail::stringAt(*doc, "url");
    }
    bool asked_to_reconnect = false;
    if (!url.empty()) {
      asked_to_reconnect = session(url);
      connected_.store(false);
    }
    if (asked_to_reconnect) {
      failures = 0;
      continue;
    }
    ++failures;
    const auto delay = retryDelay(kSlackRetry, failures, reply.ok ? std::nullopt : reply.retry_after);
    if (!sleepUnlessStopping(delay.value_or(std::chrono::seconds(30)))) return;
  }
}

bool SocketMode::session(const std::string& url) {
  std::string wss = url;
  if (wss.starts_with("wss://")) wss.replace(0, 6, "https://");
  auto parsed = parseUrl(wss);
  if (!parsed || !parsed->tls) {
    log_.error("socket mode: Slack gave an unusable URL");
    return false;
  }
  try {
    asio::io_context ioc;
    auto& ssl = *static_cast<asio::ssl::context*>(client_.sslContext());
    websocket::stream<beast::ssl_stream<tcp::socket>> ws(ioc, ssl);
    tcp::resolver resolver(ioc);
    const auto endpoints = resolver.resolve(parsed->host, parsed->port);
    asio::connect(beast::get_lowest_layer(ws), endpoints);
    expectPeerName(ws.next_layer().native_handle(), parsed->host);
    ws.next_layer().handshake(asio::ssl::stream_base::client);
    ws.handshake(parsed->host, parsed->target);
    {
      std::lock_guard lock(mutex_);
      if (stopping_) return false;
      abort_session_ = [&ws] {
        boost::system::error_code ec;
        beast::get_lowest_layer(ws).shutdown(tcp::socket::shutdown_both, ec);
      };
    }
    struct ClearAbort {
      SocketMode* self;
      ~ClearAbort() {
        std::lock_guard lock(self->mutex_);
        self->abort_session_ = nullptr;
      }
    } clear_abort{this};
    beast::flat_buffer buffer;
    while (true) {
      buffer.clear();
      ws.read(buffer);
      const std::string text = beast::buffers_to_string(buffer.data());
      auto doc = json::parseStrict(text);
      if (!doc || !doc->IsObject()) continue;
      const std::string type = detail::stringAt(*doc, "type");
      const std::string envelope_id = detail::stringAt(*doc, "envelope_id");
      if (!envelope_id.empty()) {
        // Slack wants the ack within 3 s, before any work.
        countersign::detail::JsonObjectWriter ack;
        ack.field("envelope_id", envelope_id);
        ws.text(true);
        ws.write(asio::buffer(ack.finish()));
      }
      if (type == "hello") {
        connected_.store(true);
        log_.info("socket mode: connected");
      } else if (type == "disconnect") {
        log_.info("socket mode: Slack asked to reconnect", {{"reason", detail::stringAt(*doc, "reason")}});
        boost::system::error_code ec;
        ws.close(websocket::close_code::normal, ec);
        return true;
      } else if (type == "interactive") {
        if (const auto* payload = detail::member(*doc, "payload"); payload != nullptr && payload->IsObject()) {
          on_interactive_(json::toString(*payload));
        }
      }
    }
  } catch (const std::exception& e) {
    std::lock_guard lock(mutex_);
    if (!stopping_) log_.warn("socket mode: connection lost, reconnecting", {{"error", e.what()}});
  }
  return false;
}

}  // namespace countersign::bridge
