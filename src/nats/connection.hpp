// One cnats connection (plus its JetStream context) configured the way countersign needs it:
// a clear failure when no server answers at start, then reconnects forever with backoff.
#pragma once

#include <nats/nats.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "countersign/config.hpp"
#include "countersign/publisher.hpp"
#include "countersign/result.hpp"
#include "nats/callback_home.hpp"
#include "nats/message_convert.hpp"

namespace countersign::natsio {

// Receives one line per connection event (disconnected, reconnected, closed, async errors such
// as a slow consumer). Called on cnats' callback thread: must be quick and thread-safe.
using Logger = std::function<void(std::string_view)>;

// The Errc a cnats status stands for (NATS_TIMEOUT -> timeout, connection trouble and no
// responders -> unavailable, NATS_NOT_FOUND -> not_found, ...).
Errc errcFor(natsStatus status);

// An Error from a failed cnats call: "<context>: <status text>: <cnats' last error>". Call it on
// the thread that made the failed call, right after it (cnats keeps the last error per thread).
Error natsError(natsStatus status, std::string_view context);
// The same with an explicit code, for statuses whose meaning depends on the call.
Error natsError(Errc code, natsStatus status, std::string_view context);

// Initialises the cnats library once per process (nats_Open, without lock spinning). Connect
// calls it first; building a natsMsg before any connection exists needs it explicitly.
Status openNatsLibrary();

// cnats starts threads of its own (the library's timer, callback and collector threads, a
// connection's reader and flusher, a subscription's delivery thread) and cannot name them.
// NewThreads notes the threads that exist when it is made; name() gives every thread started
// since that still has the name of the thread that started it a name ("cs-..."; Linux keeps 15
// characters), through /proc/self/task/<tid>/comm. Call it on the thread that made cnats start
// them, right after the call.
class NewThreads {
 public:
  NewThreads();
  // Returns how many threads it named.
  int name(std::string_view name);

 private:
  std::vector<int> before_;
  std::string starter_;  // the calling thread's name: what a thread it started inherits
};

// cnats' last error text on this thread, without its "(file.c:123): " prefix ("" if none).
std::string lastNatsErrorText();

// Gives the calling thread a lower CPU priority (nice +10): for the background passes over the
// whole bucket (the replayer's scans, the key and list watchers), so that on a busy machine the
// threads that answer approvals and holds run first. Best effort.
void lowerThreadPriority();

// A server URL fit for logs and messages: credentials in it ("user:pass@", "token@") masked
// ("nats://alice:***@host:4222", "nats://***@host:4222").
std::string safeUrl(const std::string& url);

class Connection {
 public:
  // Connects to cfg.servers (tried in order, not shuffled) with credentials and TLS from cfg.
  // The connection name is cfg.name, plus "-<name_suffix>" when not empty. `send_asap` makes
  // every publish go out at once instead of waiting for the flusher (for the connection that
  // answers requests). Not for a connection that carries ordered consumers (KV watchers): cnats
  // 3.4.1 re-creates an ordered consumer after a reconnect on a thread that, with send_asap,
  // writes to the socket itself, and when that write fails (the connection lost again right after
  // reconnecting) the thread calls natsThread_Detach(NULL) and the process crashes. Without
  // send_asap it only fills the write buffer, which the flusher thread sends. Fails with
  // Errc::unavailable when no server accepts the connection now;
  // once connected, it reconnects forever (backoff 250 ms doubling to 2 s, plus jitter) and
  // logs every disconnect and reconnect through `logger`. A disconnect and the close that
  // follow drain() or the destructor (a close on purpose) go to `quiet` instead. Requests (and
  // so JetStream calls) fail at once while disconnected instead of waiting for their timeout.
  // Server URLs in the error are masked (safeUrl).
  static Result<std::unique_ptr<Connection>> connect(const NatsConfig& cfg,
                                                     std::string_view name_suffix, bool send_asap,
                                                     Logger logger = {}, Logger quiet = {});
  ~Connection();  // closes (not drains) and frees everything
  Connection(const Connection&) = delete;
  Connection& operator=(const Connection&) = delete;

  natsConnection* raw() const { return conn_; }
  // The JetStream context, created once; JetStream API calls wait up to 5 s by default.
  jsCtx* js() const { return js_; }
  // Where this connection's reply inboxes live: nats.inbox_prefix, or cnats' "_INBOX".
  const std::string& inboxPrefix() const { return inbox_prefix_; }
  // A subject of its own under inboxPrefix(): "<prefix>.<random>" (nullopt: out of memory).
  std::optional<std::string> newInbox() const;

  // As cnats last reported it (the connect, then its disconnected, reconnected and closed
  // callbacks), read without the connection's lock: for a moment after a connection drops, before
  // cnats' callback has run, it may still say true (a write then waits for its answer and times
  // out, or goes through once reconnected).
  bool connected() const;
  // The server's max payload (headers + payload) from its INFO; kept while reconnecting.
  std::size_t maxPayload() const;
  // A PING/PONG round trip: everything published before it reached the server.
  Status flush(std::chrono::milliseconds timeout);
  // Graceful shutdown: drains subscriptions (their callbacks finish the messages already
  // received) and pending publishes, then closes. Waits up to `timeout` (plus a second for
  // the close to be reported); after that, the connection is closed regardless.
  void drain(std::chrono::milliseconds timeout);

  // A request and its reply, the reply coming to a synchronous subscription of the calling
  // thread's own (one per thread and connection, made by its first request, on an inbox under
  // nats.inbox_prefix): cnats' reader thread hands the reply straight to the waiting thread.
  // natsConnection_RequestMsg passes every reply through the connection's request-reply inbox,
  // a delivery thread of its own, and frees it through cnats' collector thread: two more thread
  // wakes per round trip. `message.reply` is ignored (the inbox is set here). The reply is ours.
  // Errors (their text starts with `what`): the message's own (toNatsMsg), Errc::unavailable
  // when the server says nobody listens (and `no_responders` is set), Errc::timeout,
  // Errc::unavailable when the connection is lost while waiting.
  Result<OwnedNatsMsg> request(const OutMessage& message, std::chrono::milliseconds timeout, std::string_view what,
                               bool* no_responders = nullptr);
  // request() in two halves, so that a thread can have several requests out and wait for their
  // replies together (one wake-up instead of one per round trip): send() publishes the request
  // with a reply subject of this thread's inbox and returns its number; awaitReply() waits for
  // that number's reply (on the same thread), keeping the replies of this thread's other
  // requests that are still out for their own awaitReply(). Every sent number must be awaited.
  // The server's "no responders" status carries no reply subject once cnats has read it: with
  // several requests out it is taken as the answer to the one awaited (send requests together
  // only where such an answer would be every request's, e.g. writes to one stream).
  Result<std::uint64_t> send(const OutMessage& message, std::string_view what);
  Result<OwnedNatsMsg> awaitReply(std::uint64_t number, std::chrono::milliseconds timeout, std::string_view what,
                                  bool* no_responders = nullptr);

  // Ends and frees a subscription of this connection that the server may still be sending to
  // (an ordered consumer, a pull subscription). cnats 3.4.1's natsSubscription_Destroy frees a
  // subscription while the connection's reader thread may be handing it a message: the reader
  // then locks the freed subscription's mutex, a write into freed memory. Here it is
  // unsubscribed first (the reader no longer finds it), then a round trip to the server is made
  // (the reader has finished with everything that came before its answer), and only then freed.
  // Not connected, nothing is being handed to it: it is freed at once. Unsubscribing deletes a
  // JetStream consumer only where the subscribe call created it (ordered consumers; never one
  // created with js_AddConsumer and bound by name), through the JetStream context it was made
  // with, which bounds that wait.
  void retire(natsSubscription* sub);
  // The same for a KV watcher: kvWatcher_Stop (unsubscribes; deletes its ordered consumer), the
  // round trip, kvWatcher_Destroy. Not connected, kvWatcher_Destroy alone (its consumer delete
  // waits at most the watcher's JetStream context's wait).
  void retire(kvWatcher* watcher);

 private:
  // Shared with cnats' callback thread; it may outlive the Connection (see CallbackHome).
  struct Callbacks {
    Logger logger;
    Logger quiet;
    std::string name;
    std::mutex mutex;
    std::condition_variable cv;
    bool closed = false;
    bool closing = false;  // drain() or the destructor: the disconnect and close are expected
    // The server's max_payload as of the last (re)connect (0: not known yet). cnats reads it
    // under the connection's lock, which every publish and the reader thread take as well.
    std::atomic<std::int64_t> max_payload{0};
    // Whether the connection is up as cnats last told it (kUnknown until the connect returns,
    // then the disconnected, reconnected and closed callbacks): connected() reads it instead of
    // asking cnats under the connection's lock, which the KV calls' checks before every write
    // took on the control connection beside its publishes and its reader.
    enum Link : int { kUnknown, kUp, kDown };
    std::atomic<int> link{kUnknown};
    // With `mutex` held. No logger once the Connection is gone (what they capture may be too).
    void log(std::string_view line) const;
  };
  using Home = CallbackHome<Callbacks>;

  Connection();  // defined where ReplyInbox is complete
  bool waitClosed(std::chrono::milliseconds timeout);

  static void onDisconnected(natsConnection* nc, void* closure);
  static void onReconnected(natsConnection* nc, void* closure);
  static void onClosed(natsConnection* nc, void* closure);
  static void onError(natsConnection* nc, natsSubscription* sub, natsStatus err, void* closure);
  static int64_t reconnectDelay(natsConnection* nc, int attempts, void* closure);

  struct ReplyInbox;
  ReplyInbox* threadInbox(natsStatus& status);

  natsConnection* conn_ = nullptr;
  jsCtx* js_ = nullptr;
  std::uint64_t id_ = 0;  // never reused: the key of this connection's per-thread inboxes
  std::string inbox_prefix_ = "_INBOX";
  std::mutex inboxes_mutex_;
  std::vector<std::unique_ptr<ReplyInbox>> inboxes_;
  std::shared_ptr<Callbacks> callbacks_;
  void* closure_ = nullptr;  // cnats' reference to callbacks_, released by onClosed
};

}  // namespace countersign::natsio
