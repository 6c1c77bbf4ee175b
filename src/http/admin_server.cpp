// The only translation unit that compiles Asio and Beast: keep it that way (build time).
#include "http/admin_server.hpp"

#include <pthread.h>

#include <algorithm>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/thread_pool.hpp>
#include <boost/beast/core/bind_handler.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/core/tcp_stream.hpp>
#include <boost/beast/http/empty_body.hpp>
#include <boost/beast/http/error.hpp>
#include <boost/beast/http/message.hpp>
#include <boost/beast/http/parser.hpp>
#include <boost/beast/http/read.hpp>
#include <boost/beast/http/string_body.hpp>
#include <boost/beast/http/write.hpp>
#include <boost/asio/write.hpp>
#include <cctype>
#include <charconv>
#include <chrono>
#include <deque>
#include <exception>
#include <list>
#include <mutex>
#include <optional>
#include <random>
#include <span>
#include <string>
#include <thread>
#include <unordered_set>

namespace countersign::http {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace bhttp = boost::beast::http;
using tcp = asio::ip::tcp;

namespace {

// After a reply with `Connection: close`, unread request bytes are read and dropped for a
// while, so that closing does not reset the connection before the client has read the reply.
constexpr std::chrono::seconds kLingerTimeout{5};
constexpr std::size_t kLingerBytes = std::size_t{1024} * 1024;
constexpr std::uint32_t kHeaderLimit = 16 * 1024;
constexpr std::chrono::milliseconds kAcceptRetry{100};

bool iequals(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) return false;
  for (std::size_t i = 0; i < a.size(); ++i) {
    const auto x = static_cast<unsigned char>(a[i]);
    const auto y = static_cast<unsigned char>(b[i]);
    if (std::tolower(x) != std::tolower(y)) return false;
  }
  return true;
}

// Beast 1.74 speaks boost::string_view.
std::string_view view(beast::string_view text) {
  return {text.data(), text.size()};
}

struct ListenAddress {
  std::string host;
  std::string port;
};

// "host:port", "[v6]:port", ":port" (all IPv4 interfaces).
Result<ListenAddress> parseListen(std::string_view listen) {
  const auto colon = listen.rfind(':');
  if (colon == std::string_view::npos) {
    return fail(Errc::invalid_argument,
                "admin.listen: expected host:port, got \"" + std::string(listen) + "\"");
  }
  std::string_view host = listen.substr(0, colon);
  const std::string_view port = listen.substr(colon + 1);
  if (host.size() >= 2 && host.front() == '[' && host.back() == ']') {
    host = host.substr(1, host.size() - 2);
  } else if (host.find(':') != std::string_view::npos) {
    return fail(Errc::invalid_argument,
                "admin.listen: an IPv6 address needs brackets ([::1]:9464), got \"" +
                    std::string(listen) + "\"");
  }
  int number = -1;
  const auto [end, ec] = std::from_chars(port.data(), port.data() + port.size(), number);
  if (port.empty() || ec != std::errc() || end != port.data() + port.size() || number < 0 ||
      number > 65535) {
    return fail(Errc::invalid_argument,
                "admin.listen: expected a port 0-65535, got \"" + std::string(port) + "\"");
  }
  return ListenAddress{host.empty() ? std::string("0.0.0.0") : std::string(host),
                       std::string(port)};
}

class Session;
class EventStream;

using Frame = std::shared_ptr<const std::string>;

// What the sessions share. Touched on the I/O thread only (the pool never reaches it).
struct Shared {
  Shared(const AdminConfig& config, AdminHandlers handlers, Logger& logger,
         const AdminServerOptions& opts)
      : log(logger), router(config, std::move(handlers), logger), options(opts),
        max_connections(static_cast<std::size_t>(std::max(2, config.max_connections))) {
    std::random_device device;
    char text[17];
    std::snprintf(text, sizeof text, "%08x%08x", static_cast<unsigned>(device()),
                  static_cast<unsigned>(device()));
    epoch = text;
  }

  Logger& log;
  const AdminRouter router;
  const AdminServerOptions options;
  const std::size_t max_connections;

  // Connections: every open one counts; sessions waiting for a request are `idle`, oldest first.
  std::size_t open = 0;
  std::list<Session*> idle;
  std::uint64_t evicted = 0;

  // The event stream: live clients, and the last events for Last-Event-ID ("<epoch>-<seq>").
  std::unordered_set<EventStream*> streams;
  std::string epoch;
  std::uint64_t seq = 0;
  std::deque<std::pair<std::uint64_t, Frame>> history;

  // The events that arrived since the last tick, as one write per stream.
  void publish(const std::vector<std::pair<std::string, std::string>>& events);
  void heartbeat();
};

// Counts one open connection for as long as it lives (moved from a session to its stream).
class Slot {
 public:
  explicit Slot(Shared& shared) : shared_(&shared) { ++shared.open; }
  Slot(Slot&& other) noexcept : shared_(std::exchange(other.shared_, nullptr)) {}
  Slot& operator=(Slot&&) = delete;
  ~Slot() {
    if (shared_ != nullptr) --shared_->open;
  }

 private:
  Shared* shared_;
};

std::string eventFrame(std::string_view id, std::string_view event, std::string_view data) {
  std::string frame;
  frame.reserve(data.size() + 48);
  if (!id.empty()) frame.append("id: ").append(id).append("\n");
  if (!event.empty()) frame.append("event: ").append(event).append("\n");
  frame.append("data: ");
  for (const char c : data) frame.push_back(c == '\n' || c == '\r' ? ' ' : c);  // one line
  frame.append("\n\n");
  return frame;
}

// A Server-Sent Events client of /api/v1/events. Frames are shared between clients; each client
// queues at most options.event_queue of them. A client that falls that far behind (it does not
// read) gets its queue replaced by one `resync` event and is closed after it: its memory stays
// bounded, and it knows to reload what it shows.
//
// The socket has no timer of its own (a timer armed and cancelled around every write would cost
// more than the write): a write that has not finished within options.io_timeout is found by the
// next push or heartbeat, and the client is closed.
class EventStream : public std::enable_shared_from_this<EventStream> {
 public:
  EventStream(tcp::socket socket, Slot slot, Shared& shared)
      : socket_(std::move(socket)), slot_(std::move(slot)), shared_(shared) {}
  ~EventStream() { shared_.streams.erase(this); }

  void start(const std::string& last_event_id) {
    shared_.streams.insert(this);
    push(std::make_shared<const std::string>(
        "HTTP/1.1 200 OK\r\nServer: countersign\r\nContent-Type: text/event-stream\r\n"
        "Cache-Control: no-store\r\nX-Content-Type-Options: nosniff\r\nConnection: close\r\n\r\n"
        "retry: 2000\n\n"));
    replay(last_event_id);
    push(std::make_shared<const std::string>(eventFrame("", "ready", "{}")));
    // Read nothing more, but notice the client going away.
    watch_.resize(512);
    socket_.async_read_some(
        asio::buffer(watch_), [self = shared_from_this()](beast::error_code ec, std::size_t) {
          if (ec) self->close();  // data after the request is ignored until the client closes
        });
  }

  // Queues `frame`, which holds `events` events (a tick's batch is one frame): a client whose
  // queue would pass options.event_queue events is told to resync and closed.
  void push(Frame frame, std::size_t events = 1) {
    if (writing_ && std::chrono::steady_clock::now() - write_started_ > shared_.options.io_timeout) {
      return close();  // it reads nothing at all
    }
    if (closing_) return;
    if (queued_ > 0 && queued_ + events > shared_.options.event_queue) {
      queue_.clear();
      queued_ = 1;
      queue_.emplace_back(std::make_shared<const std::string>(eventFrame("", "resync", R"({"reason":"slow_client"})")), 1);
      closing_ = true;
      if (!writing_) write();
      return;
    }
    queued_ += events;
    queue_.emplace_back(std::move(frame), events);
    if (!writing_) write();
  }

  void close() {
    closing_ = true;
    queue_.clear();
    queued_ = 0;
    beast::error_code ignored;
    socket_.shutdown(tcp::socket::shutdown_both, ignored);
    socket_.close(ignored);
  }

 private:
  // After Last-Event-ID: the events since, when this process still has them; else `resync`.
  void replay(const std::string& last) {
    if (last.empty()) return;
    const auto dash = last.find('-');
    std::uint64_t after = 0;
    bool known = dash != std::string::npos && last.substr(0, dash) == shared_.epoch;
    if (known) {
      const auto digits = std::string_view(last).substr(dash + 1);
      const auto [end, ec] = std::from_chars(digits.data(), digits.data() + digits.size(), after);
      known = ec == std::errc() && end == digits.data() + digits.size() && after <= shared_.seq;
    }
    // Every event after `after` must still be in the history.
    const std::uint64_t oldest = shared_.history.empty() ? shared_.seq + 1 : shared_.history.front().first;
    if (!known || after + 1 < oldest) {
      push(std::make_shared<const std::string>(eventFrame("", "resync", R"({"reason":"events_missed"})")));
      return;
    }
    for (const auto& [seq, frame] : shared_.history) {
      if (seq > after) push(frame);
    }
  }

  // Writes everything queued in one gathered write: under load a client costs one system call
  // per batch, not one per event.
  void write() {
    inflight_.clear();
    if (queue_.empty()) {
      writing_ = false;
      if (closing_) close();
      return;
    }
    writing_ = true;
    write_started_ = std::chrono::steady_clock::now();
    buffers_.clear();
    while (!queue_.empty() && inflight_.size() < kMaxBatch) {
      auto& [frame, events] = queue_.front();
      buffers_.push_back(asio::buffer(*frame));
      queued_ -= events;
      inflight_.push_back(std::move(frame));
      queue_.pop_front();
    }
    // A view of buffers_ (which lives as long as the write): the write copies no vector.
    asio::async_write(socket_, std::span<const asio::const_buffer>(buffers_), [self = shared_from_this()](beast::error_code ec, std::size_t) {
      self->writing_ = false;
      if (ec) return self->close();
      self->write();
    });
  }

  static constexpr std::size_t kMaxBatch = 64;

  tcp::socket socket_;
  Slot slot_;
  Shared& shared_;
  std::deque<std::pair<Frame, std::size_t>> queue_;  // frames and the events each holds
  std::size_t queued_ = 0;                           // events in queue_
  std::vector<Frame> inflight_;                 // the frames of the write in progress
  std::vector<asio::const_buffer> buffers_;     // ... and their bytes (its capacity is kept)
  std::chrono::steady_clock::time_point write_started_;
  std::vector<char> watch_;
  bool writing_ = false;
  bool closing_ = false;
};

void Shared::publish(const std::vector<std::pair<std::string, std::string>>& events) {
  // Each event is framed once (and kept for Last-Event-ID); the tick's frames go to every
  // stream as one shared buffer: one write per stream per tick, whatever the event rate.
  std::string batch;
  for (const auto& [subject, body] : events) {
    // <prefix>.events.<event>.<topic>: the event's name names the SSE event.
    std::string_view event = "message";
    if (const auto at = subject.find(".events."); at != std::string::npos) {
      const std::string_view rest = std::string_view(subject).substr(at + 8);
      event = rest.substr(0, rest.find('.'));
    }
    ++seq;
    auto frame = std::make_shared<const std::string>(eventFrame(epoch + "-" + std::to_string(seq), event, body));
    if (!streams.empty()) batch += *frame;
    history.emplace_back(seq, std::move(frame));
  }
  while (history.size() > options.event_history) history.pop_front();
  if (streams.empty() || events.empty()) return;
  const auto shared_batch = std::make_shared<const std::string>(std::move(batch));
  // push() may close a stream, which erases it from `streams`: iterate over a copy.
  const std::vector<EventStream*> targets(streams.begin(), streams.end());
  for (EventStream* stream : targets) {
    if (streams.contains(stream)) stream->push(shared_batch, events.size());
  }
}

void Shared::heartbeat() {
  auto ping = std::make_shared<const std::string>(":\n\n");
  const std::vector<EventStream*> targets(streams.begin(), streams.end());
  for (EventStream* stream : targets) {
    if (streams.contains(stream)) stream->push(ping);
  }
}

}  // namespace

namespace {

// One connection: read a request, answer it, repeat while keep-alive. Everything here runs on
// the I/O thread; only router.route() for REST requests runs on the pool.
class Session : public std::enable_shared_from_this<Session> {
 public:
  Session(tcp::socket socket, Shared& shared, asio::thread_pool& pool)
      : stream_(std::move(socket)), slot_(shared), shared_(shared), router_(shared.router),
        pool_(pool), io_timeout_(shared.options.io_timeout) {}
  ~Session() { setIdle(false); }

  void start() { readHeader(); }

  // Closes a connection that waits for a request, to make room for a new one.
  void evict() {
    setIdle(false);
    close();
  }

 private:
  // Idle: waiting for (the head of) a request. The oldest idle connection is evicted first.
  void setIdle(bool idle) {
    if (idle == idle_.has_value()) return;
    if (idle) {
      idle_ = shared_.idle.insert(shared_.idle.end(), this);
    } else {
      shared_.idle.erase(*idle_);
      idle_.reset();
    }
  }

  void readHeader() {
    setIdle(true);
    parser_.emplace();
    parser_->body_limit(kMaxRequestBody);
    parser_->header_limit(kHeaderLimit);
    stream_.expires_after(io_timeout_);
    bhttp::async_read_header(stream_, buffer_, *parser_,
                             beast::bind_front_handler(&Session::onHeader, shared_from_this()));
  }

  void onHeader(beast::error_code ec, std::size_t) {
    setIdle(false);
    if (ec) return onReadError(ec);
    const auto& request = parser_->get();
    if (request.version() >= 11 && iequals(view(request[bhttp::field::expect]), "100-continue")) {
      interim_.emplace(bhttp::status::continue_, request.version());
      stream_.expires_after(io_timeout_);
      bhttp::async_write(stream_, *interim_,
                         beast::bind_front_handler(&Session::onContinue, shared_from_this()));
      return;
    }
    readBody();
  }

  void onContinue(beast::error_code ec, std::size_t) {
    if (ec) return close();
    readBody();
  }

  void readBody() {
    stream_.expires_after(io_timeout_);
    bhttp::async_read(stream_, buffer_, *parser_,
                      beast::bind_front_handler(&Session::onRead, shared_from_this()));
  }

  void onReadError(beast::error_code ec) {
    if (ec == bhttp::error::body_limit) return reply(AdminRouter::tooLarge(), 11, false, false);
    if (ec == bhttp::error::header_limit) {
      return reply(AdminRouter::headersTooLarge(), 11, false, false);
    }
    if (ec == bhttp::error::end_of_stream || ec == bhttp::error::partial_message) return close();
    if (ec.category() == bhttp::make_error_code(bhttp::error::bad_method).category()) {
      return reply(AdminRouter::malformed(ec.message()), 11, false, false);
    }
    close();  // timeout, reset: nobody to answer
  }

  void onRead(beast::error_code ec, std::size_t) {
    if (ec) return onReadError(ec);
    auto request = parser_->release();
    Pending pending;
    pending.version = request.version();
    pending.keep_alive = request.keep_alive();
    pending.head = request.method() == bhttp::verb::head;
    pending.method = std::string(view(request.method_string()));
    pending.target = std::string(view(request.target()));
    for (const auto& field : request) {
      pending.headers.emplace_back(view(field.name_string()), view(field.value()));
    }
    pending.body = std::move(request.body());

    if (AdminRouter::isEventStream(pending.target)) return startEventStream(pending);
    if (!AdminRouter::callsControl(pending.target)) {
      HttpResponse response = route(router_, pending);
      return reply(std::move(response), pending.version, pending.keep_alive, pending.head);
    }
    // Control waits for NATS: answer on a worker, write back on the I/O thread.
    asio::post(pool_, [self = shared_from_this(), pending = std::move(pending)]() mutable {
      HttpResponse response = route(self->router_, pending);
      auto executor = self->stream_.get_executor();
      asio::post(executor, [self = std::move(self), pending = std::move(pending),
                            response = std::move(response)]() mutable {
        self->reply(std::move(response), pending.version, pending.keep_alive, pending.head);
      });
    });
  }

  struct Pending {
    unsigned version = 11;
    bool keep_alive = true;
    bool head = false;
    std::string method;
    std::string target;
    HttpHeaders headers;
    std::string body;
  };

  void startEventStream(const Pending& pending) {
    auto start = router_.eventStream(pending.method, pending.target, pending.headers);
    if (auto* refusal = std::get_if<HttpResponse>(&start)) {
      return reply(std::move(*refusal), pending.version, pending.keep_alive, pending.head);
    }
    if (shared_.streams.size() >= shared_.options.max_event_streams) {
      HttpResponse busy{503, "application/json",
                        R"({"status":"unavailable","code":503,"reason":"too many event streams","retryable":true})",
                        {{"Countersign-Status", "unavailable"}, {"Retry-After", "5"}}};
      return reply(std::move(busy), pending.version, false, pending.head);
    }
    const auto& started = std::get<AdminRouter::EventStreamStart>(start);
    stream_.expires_never();
    std::make_shared<EventStream>(stream_.release_socket(), std::move(slot_), shared_)
        ->start(started.last_event_id);
  }

  static HttpResponse route(const AdminRouter& router, const Pending& p) {
    try {
      return router.route(p.method, p.target, p.headers, p.body);
    } catch (...) {  // route() catches the handlers' exceptions; this is allocation failure
      return HttpResponse{500, "text/plain; charset=utf-8", "internal error\n", {}};
    }
  }

  void reply(HttpResponse response, unsigned version, bool keep_alive, bool head) {
    response_.emplace();
    response_->version(version);
    response_->result(static_cast<unsigned>(response.status));
    response_->set(bhttp::field::server, "countersign");
    if (!response.content_type.empty()) {
      response_->set(bhttp::field::content_type, response.content_type);
    }
    response_->set("X-Content-Type-Options", "nosniff");
    for (auto& [name, value] : response.headers) response_->insert(name, value);
    response_->body() = std::move(response.body);
    response_->keep_alive(keep_alive);
    response_->prepare_payload();
    if (head) response_->body().clear();  // Content-Length stays: what GET would send
    stream_.expires_after(io_timeout_);
    bhttp::async_write(
        stream_, *response_,
        beast::bind_front_handler(&Session::onWrite, shared_from_this(), keep_alive));
  }

  void onWrite(bool keep_alive, beast::error_code ec, std::size_t) {
    response_.reset();
    if (ec) return close();
    if (keep_alive) return readHeader();
    beast::error_code ignored;
    stream_.socket().shutdown(tcp::socket::shutdown_send, ignored);
    linger_.resize(4096);
    lingered_ = 0;
    stream_.expires_after(kLingerTimeout);
    drain();
  }

  void drain() {
    stream_.async_read_some(asio::buffer(linger_),
                            [self = shared_from_this()](beast::error_code ec, std::size_t n) {
                              self->lingered_ += n;
                              if (ec || self->lingered_ > kLingerBytes) return self->close();
                              self->drain();
                            });
  }

  void close() {
    beast::error_code ignored;
    stream_.socket().shutdown(tcp::socket::shutdown_both, ignored);
    stream_.close();
  }

  beast::tcp_stream stream_;
  Slot slot_;
  Shared& shared_;
  std::optional<std::list<Session*>::iterator> idle_;
  const AdminRouter& router_;
  asio::thread_pool& pool_;  // runs the requests that call control
  const std::chrono::milliseconds io_timeout_;
  beast::flat_buffer buffer_;
  std::optional<bhttp::request_parser<bhttp::string_body>> parser_;
  std::optional<bhttp::response<bhttp::empty_body>> interim_;
  std::optional<bhttp::response<bhttp::string_body>> response_;
  std::vector<char> linger_;
  std::size_t lingered_ = 0;
};

}  // namespace

struct AdminServer::Impl {
  Impl(const AdminConfig& config, AdminHandlers handlers, Logger& logger,
       const AdminServerOptions& opts)
      : events(handlers.events), shared(config, std::move(handlers), logger, opts) {
    ioc.emplace();
    pool.emplace(static_cast<std::size_t>(std::max(1, opts.control_workers)));
    acceptor.emplace(*ioc);
    retry.emplace(*ioc);
    heartbeat.emplace(*ioc);
    tick.emplace(*ioc);
  }

  Status bind(const std::string& listen);
  void accept();
  void admit(tcp::socket socket);
  void startFeed();
  void flushEvents();
  void beat();
  void run();
  void stop();

  EventFeed events;
  std::function<void()> stop_feed;
  // Events from the feed's thread, taken by the I/O thread once per tick (options.event_tick).
  std::mutex inbox_mutex;
  std::vector<std::pair<std::string, std::string>> inbox;
  bool tick_armed = false;
  std::chrono::steady_clock::time_point last_flush;  // I/O thread only
  Shared shared;
  Logger& log = shared.log;
  // Optional so that stop() can tear them down in a safe order: the pool (whose queued tasks
  // may own sessions) before the io_context that owns the sessions' sockets.
  std::optional<asio::io_context> ioc;
  std::optional<asio::thread_pool> pool;
  std::optional<tcp::acceptor> acceptor;
  std::optional<asio::steady_timer> retry;
  std::optional<asio::steady_timer> heartbeat;
  std::optional<asio::steady_timer> tick;
  std::thread thread;
  int port = 0;
  std::mutex stop_mutex;
  bool stopped = false;
};

Status AdminServer::Impl::bind(const std::string& listen) {
  auto address = parseListen(listen);
  if (!address) return std::unexpected(address.error());
  beast::error_code ec;
  tcp::resolver resolver(*ioc);
  const auto endpoints = resolver.resolve(
      address->host, address->port, tcp::resolver::passive | tcp::resolver::numeric_service, ec);
  if (ec) return fail(Errc::invalid_argument, "admin.listen " + listen + ": " + ec.message());
  for (const auto& entry : endpoints) {
    beast::error_code bind_ec;
    acceptor->close(bind_ec);
    acceptor->open(entry.endpoint().protocol(), bind_ec);
    if (!bind_ec) acceptor->set_option(asio::socket_base::reuse_address(true), bind_ec);
    if (!bind_ec) acceptor->bind(entry.endpoint(), bind_ec);
    if (!bind_ec) acceptor->listen(asio::socket_base::max_listen_connections, bind_ec);
    if (!bind_ec) {
      port = acceptor->local_endpoint().port();
      return {};
    }
    ec = bind_ec;
  }
  acceptor->close();
  return fail(Errc::unavailable, "admin.listen " + listen + ": cannot listen: " +
                                     (ec ? ec.message() : std::string("no address")));
}

void AdminServer::Impl::accept() {
  acceptor->async_accept([this](beast::error_code ec, tcp::socket socket) {
    if (ec == asio::error::operation_aborted) return;
    if (ec) {
      // Out of file descriptors and the like: try again shortly instead of spinning.
      log.warn("admin: accept failed", {{"error", ec.message()}});
      retry->expires_after(kAcceptRetry);
      retry->async_wait([this](beast::error_code wait_ec) {
        if (!wait_ec) accept();
      });
      return;
    }
    admit(std::move(socket));
    accept();
  });
}

void AdminServer::Impl::admit(tcp::socket socket) {
  if (shared.open >= shared.max_connections) {
    // Full: the connection idle the longest makes room (health probes keep getting in while
    // idle sockets pile up); with none idle, the newcomer is turned away.
    if (shared.idle.empty()) {
      beast::error_code ignored;
      socket.close(ignored);
      return;
    }
    if (shared.evicted++ % 1000 == 0) {
      log.warn("admin: connection limit reached; closing the longest-idle connection",
               {{"max_connections", std::to_string(shared.max_connections)},
                {"evicted", std::to_string(shared.evicted)}});
    }
    shared.idle.front()->evict();
  }
  beast::error_code ignored;
  socket.set_option(tcp::no_delay(true), ignored);
  std::make_shared<Session>(std::move(socket), shared, *pool)->start();
}

void AdminServer::Impl::startFeed() {
  if (!events) return;
  // The first event of a tick arms the timer; the others only join the inbox. At 1,000 events
  // a second the I/O thread wakes once per AdminServerOptions::event_tick (10 times with the
  // default 100 ms), not 1,000 times, and each stream gets one write per tick. The timer is due
  // one tick after the last flush: an event after a quiet spell goes out at once.
  stop_feed = events([this](std::string subject, std::string body) {
    bool arm = false;
    {
      const std::lock_guard lock(inbox_mutex);
      inbox.emplace_back(std::move(subject), std::move(body));
      arm = !std::exchange(tick_armed, true);
    }
    if (!arm) return;
    asio::post(*ioc, [this] {
      tick->expires_at(last_flush + shared.options.event_tick);
      tick->async_wait([this](beast::error_code ec) {
        if (!ec) flushEvents();
      });
    });
  });
}

void AdminServer::Impl::flushEvents() {
  std::vector<std::pair<std::string, std::string>> batch;
  {
    const std::lock_guard lock(inbox_mutex);
    batch.swap(inbox);
    tick_armed = false;
  }
  last_flush = std::chrono::steady_clock::now();
  shared.publish(batch);
}

void AdminServer::Impl::beat() {
  heartbeat->expires_after(shared.options.heartbeat);
  heartbeat->async_wait([this](beast::error_code ec) {
    if (ec) return;
    shared.heartbeat();
    beat();
  });
}

void AdminServer::Impl::run() {
  while (true) {
    try {
      ioc->run();
      return;
    } catch (const std::exception& e) {
      log.error("admin: I/O loop error", {{"error", e.what()}});
    } catch (...) {
      log.error("admin: I/O loop error");
    }
  }
}

void AdminServer::Impl::stop() {
  const std::lock_guard lock(stop_mutex);
  if (stopped) return;
  stopped = true;
  if (stop_feed) std::exchange(stop_feed, nullptr)();  // no event is posted after this
  ioc->stop();
  if (thread.joinable()) thread.join();
  pool->stop();  // queued requests are dropped; running ones finish
  pool->join();
  pool.reset();
  retry.reset();
  heartbeat.reset();
  tick.reset();
  acceptor.reset();
  ioc.reset();  // destroys the pending handlers, hence the sessions and their sockets
}

Result<std::unique_ptr<AdminServer>> AdminServer::start(const AdminConfig& config,
                                                        AdminHandlers handlers, Logger& log,
                                                        AdminServerOptions options) {
  try {
    auto impl = std::make_unique<Impl>(config, std::move(handlers), log, options);
    if (auto bound = impl->bind(config.listen); !bound) {
      impl->stop();
      return std::unexpected(bound.error());
    }
    impl->accept();
    impl->beat();
    impl->startFeed();
    Impl* raw = impl.get();
    impl->thread = std::thread([raw] {
      pthread_setname_np(pthread_self(), "cs-admin-io");
      raw->run();
    });
    log.info("admin HTTP listening",
             {{"listen", config.listen}, {"port", std::to_string(impl->port)}});
    if (!impl->shared.router.hasTokens()) {
      log.warn("admin API has no tokens (admin.tokens): every /api/ request is refused with 401");
    }
    return std::unique_ptr<AdminServer>(new AdminServer(std::move(impl)));
  } catch (const std::exception& e) {
    return fail(Errc::internal, std::string("admin HTTP: cannot start: ") + e.what());
  }
}

AdminServer::AdminServer(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

AdminServer::~AdminServer() {
  stop();
}

int AdminServer::port() const {
  return impl_->port;
}

void AdminServer::stop() {
  impl_->stop();
}

}  // namespace countersign::http
