#include "nats/connection.hpp"

#include <sys/resource.h>
#include <unistd.h>

#include <pthread.h>

#include <algorithm>
#include <atomic>
#include <charconv>
#include <filesystem>
#include <fstream>
#include <random>
#include <vector>

#include "countersign/nkeys.hpp"
#include "countersign/redact.hpp"
#include "nats/message_convert.hpp"

namespace countersign::natsio {
namespace {

constexpr std::int64_t kReconnectBaseMs = 250;
constexpr std::int64_t kReconnectMaxMs = 2000;
constexpr std::int64_t kJetStreamWaitMs = 5000;
constexpr std::chrono::milliseconds kCloseWait{5000};
// How long retire() waits for its round trip; a server that does not answer sends nothing either.
constexpr std::int64_t kRetireRoundTripMs = 2000;

std::string statusText(natsStatus status) {
  return natsStatus_GetText(status);
}

// The public key "U..." of the user seed in `path`: cnats needs both to answer the server's
// challenge.
Result<std::string> nkeyPublicKeyOfSeedFile(const std::string& path) {
  auto seed = nkeys::readSeedFile(path);
  if (!seed) return fail(Errc::invalid_argument, "--nkey " + path + ": " + seed.error().message);
  return nkeys::encodePublicKey(nkeys::publicKeyOf(*seed));
}

std::vector<int> threadIds() {
  std::vector<int> ids;
  std::error_code ec;
  for (const auto& entry : std::filesystem::directory_iterator("/proc/self/task", ec)) {
    try {
      ids.push_back(std::stoi(entry.path().filename().string()));
    } catch (...) {
    }
  }
  std::sort(ids.begin(), ids.end());
  return ids;
}

std::string threadName(int tid) {
  std::ifstream in("/proc/self/task/" + std::to_string(tid) + "/comm");
  std::string name;
  std::getline(in, name);
  return name;
}

}  // namespace

NewThreads::NewThreads() : before_(threadIds()) {
  char name[16] = {};
  pthread_getname_np(pthread_self(), name, sizeof name);
  starter_ = name;
}

int NewThreads::name(std::string_view name) {
  int named = 0;
  const std::string text(name.substr(0, 15));
  for (const int tid : threadIds()) {
    if (std::binary_search(before_.begin(), before_.end(), tid) || threadName(tid) != starter_) continue;
    std::ofstream comm("/proc/self/task/" + std::to_string(tid) + "/comm");
    comm << text;
    comm.flush();
    if (comm) ++named;
  }
  before_ = threadIds();
  return named;
}

Errc errcFor(natsStatus status) {
  switch (status) {
    case NATS_TIMEOUT:
      return Errc::timeout;
    case NATS_NOT_FOUND:
      return Errc::not_found;
    case NATS_MAX_PAYLOAD:
      return Errc::too_large;
    case NATS_INVALID_ARG:
    case NATS_INVALID_SUBJECT:
    case NATS_INVALID_QUEUE_NAME:
    case NATS_INVALID_TIMEOUT:
    case NATS_ADDRESS_MISSING:
      return Errc::invalid_argument;
    case NATS_NO_RESPONDERS:
    case NATS_IO_ERROR:
    case NATS_CONNECTION_CLOSED:
    case NATS_NO_SERVER:
    case NATS_STALE_CONNECTION:
    case NATS_SECURE_CONNECTION_WANTED:
    case NATS_SECURE_CONNECTION_REQUIRED:
    case NATS_CONNECTION_DISCONNECTED:
    case NATS_CONNECTION_AUTH_FAILED:
    case NATS_NOT_PERMITTED:
    case NATS_SSL_ERROR:
    case NATS_NO_SERVER_SUPPORT:
    case NATS_NOT_YET_CONNECTED:
    case NATS_DRAINING:
    case NATS_INSUFFICIENT_BUFFER:
    case NATS_SLOW_CONSUMER:
      return Errc::unavailable;
    default:
      return Errc::internal;
  }
}

Status openNatsLibrary() {
  // No spinning on cnats' mutexes: by default a thread that finds one taken tries it 2000 times
  // with a pause in between before it sleeps, which on a small machine burns the core that the
  // holder needs (natsMutex_Lock took 9% of countersign's CPU samples while approving; without
  // the spin CPU per hold fell by about 17% in alternating runs, bench/README.md).
  static const natsStatus opened = nats_Open(0);
  if (opened != NATS_OK) {
    return fail(Errc::internal,
                std::string("cannot initialise cnats: ") + natsStatus_GetText(opened));
  }
  return {};
}

void lowerThreadPriority() {
  // Linux: a thread's nice value is its own (setpriority on its thread id).
  (void)setpriority(PRIO_PROCESS, static_cast<id_t>(gettid()), 10);
}

std::string lastNatsErrorText() {
  natsStatus ignored = NATS_OK;
  const char* text = nats_GetLastError(&ignored);
  if (text == nullptr) return {};
  std::string_view view(text);
  // cnats prefixes the text with its source location: "(js.c:535): wrong last sequence: 1".
  if (view.starts_with("(")) {
    auto end = view.find("): ");
    if (end != std::string_view::npos) view.remove_prefix(end + 3);
  }
  return std::string(view);
}

Error natsError(Errc code, natsStatus status, std::string_view context) {
  std::string message(context);
  message += ": ";
  message += statusText(status);
  std::string detail = lastNatsErrorText();
  if (!detail.empty() && detail != statusText(status)) message += ": " + detail;
  return Error{code, std::move(message)};
}

Error natsError(natsStatus status, std::string_view context) {
  return natsError(errcFor(status), status, context);
}

void Connection::Callbacks::log(std::string_view line) const {
  const Logger& to = closing && quiet ? quiet : logger;
  if (to) to(line);
}

std::string safeUrl(const std::string& url) { return maskUrlCredentials(url); }

Result<std::unique_ptr<Connection>> Connection::connect(const NatsConfig& cfg,
                                                        std::string_view name_suffix,
                                                        bool send_asap, Logger logger, Logger quiet) {
  if (cfg.servers.empty()) return fail(Errc::invalid_argument, "nats.servers: empty");

  std::unique_ptr<Connection> self(new Connection());
  static std::atomic<std::uint64_t> next_id{0};
  self->id_ = ++next_id;
  if (!cfg.inbox_prefix.empty()) self->inbox_prefix_ = cfg.inbox_prefix;
  auto callbacks = std::make_shared<Callbacks>();
  callbacks->logger = std::move(logger);
  callbacks->quiet = std::move(quiet);
  callbacks->name = cfg.name;
  if (!name_suffix.empty()) callbacks->name += "-" + std::string(name_suffix);
  // cnats' reference, released by onClosed once connected; until then (options, a failed
  // connect: no callback runs) by this guard.
  std::unique_ptr<void, void (*)(void*)> closure(Home::share(callbacks), &Home::release);

  if (auto ok = openNatsLibrary(); !ok) return std::unexpected(ok.error());
  natsOptions* opts = nullptr;
  natsStatus s = natsOptions_Create(&opts);
  if (s != NATS_OK) return std::unexpected(natsError(s, "nats options"));
  std::unique_ptr<natsOptions, decltype(&natsOptions_Destroy)> opts_guard(opts,
                                                                          &natsOptions_Destroy);

  std::vector<const char*> servers;
  servers.reserve(cfg.servers.size());
  for (const auto& url : cfg.servers) servers.push_back(url.c_str());

  void* cb = closure.get();
  const std::string& conn_name = callbacks->name;
  auto step = [&](natsStatus status, const char* what) -> Status {
    if (status != NATS_OK) return std::unexpected(natsError(status, what));
    return {};
  };
  Status ok = step(natsOptions_SetServers(opts, servers.data(), static_cast<int>(servers.size())),
                   "nats.servers");
  if (ok) ok = step(natsOptions_SetNoRandomize(opts, true), "nats options");
  if (ok) ok = step(natsOptions_SetName(opts, conn_name.c_str()), "nats.name");
  if (ok) ok = step(natsOptions_SetSendAsap(opts, send_asap), "nats options");
  if (ok) ok = step(natsOptions_SetRetryOnFailedConnect(opts, false, nullptr, nullptr), "nats");
  if (ok) ok = step(natsOptions_SetAllowReconnect(opts, true), "nats options");
  if (ok) ok = step(natsOptions_SetMaxReconnect(opts, -1), "nats options");
  if (ok) {
    ok = step(natsOptions_SetCustomReconnectDelay(opts, &Connection::reconnectDelay, nullptr),
              "nats options");
  }
  if (ok) ok = step(natsOptions_SetFailRequestsOnDisconnect(opts, true), "nats options");
  if (ok) ok = step(natsOptions_SetPingInterval(opts, 5000), "nats options");
  if (ok) ok = step(natsOptions_SetMaxPingsOut(opts, 3), "nats options");
  if (ok) ok = step(natsOptions_SetDisconnectedCB(opts, &Connection::onDisconnected, cb), "nats");
  if (ok) ok = step(natsOptions_SetReconnectedCB(opts, &Connection::onReconnected, cb), "nats");
  if (ok) ok = step(natsOptions_SetClosedCB(opts, &Connection::onClosed, cb), "nats");
  if (ok) ok = step(natsOptions_SetErrorHandler(opts, &Connection::onError, cb), "nats");
  if (ok && !cfg.inbox_prefix.empty()) {
    ok = step(natsOptions_SetCustomInboxPrefix(opts, cfg.inbox_prefix.c_str()), "nats.inbox_prefix");
  }
  if (ok && !cfg.credentials.empty()) {
    ok = step(natsOptions_SetUserCredentialsFromFiles(opts, cfg.credentials.c_str(), nullptr),
              "nats.credentials");
  }
  if (ok && !cfg.user.empty()) {
    ok = step(natsOptions_SetUserInfo(opts, cfg.user.c_str(), cfg.password.c_str()), "nats user");
  }
  if (ok && !cfg.token.empty()) ok = step(natsOptions_SetToken(opts, cfg.token.c_str()), "nats token");
  if (ok && !cfg.nkey_seed_file.empty()) {
    auto public_key = nkeyPublicKeyOfSeedFile(cfg.nkey_seed_file);
    if (!public_key) return std::unexpected(public_key.error());
    ok = step(natsOptions_SetNKeyFromSeed(opts, public_key->c_str(), cfg.nkey_seed_file.c_str()), "nats nkey");
  }
  if (ok && !cfg.tls_ca.empty()) {
    ok = step(natsOptions_SetSecure(opts, true), "nats.tls_ca");
    if (ok)
      ok = step(natsOptions_LoadCATrustedCertificates(opts, cfg.tls_ca.c_str()), "nats.tls_ca");
  }
  if (ok && (!cfg.tls_cert.empty() || !cfg.tls_key.empty())) {
    if (cfg.tls_cert.empty() || cfg.tls_key.empty()) {
      return fail(Errc::invalid_argument, "nats.tls_cert and nats.tls_key go together");
    }
    ok = step(natsOptions_SetSecure(opts, true), "nats.tls_cert");
    if (ok) {
      ok = step(natsOptions_LoadCertificatesChain(opts, cfg.tls_cert.c_str(), cfg.tls_key.c_str()),
                "nats.tls_cert");
    }
  }
  if (!ok) return std::unexpected(ok.error());

  s = natsConnection_Connect(&self->conn_, opts);
  if (s != NATS_OK) {
    self->conn_ = nullptr;
    std::string urls;
    for (const auto& url : cfg.servers) urls += (urls.empty() ? "" : ", ") + safeUrl(url);
    Error error = natsError(errcFor(s) == Errc::internal ? Errc::unavailable : errcFor(s), s,
                            "cannot connect to NATS (" + urls + ")");
    return std::unexpected(std::move(error));
  }
  callbacks->max_payload.store(natsConnection_GetMaxPayload(self->conn_));
  // Up, unless a callback has already said otherwise (a disconnect right after the connect).
  int unknown = Callbacks::kUnknown;
  callbacks->link.compare_exchange_strong(unknown, Callbacks::kUp);
  // From here the callbacks may run; cnats' reference is released by onClosed.
  self->callbacks_ = std::move(callbacks);
  self->closure_ = closure.release();

  jsOptions js_opts;
  jsOptions_Init(&js_opts);
  js_opts.Wait = kJetStreamWaitMs;
  s = natsConnection_JetStream(&self->js_, self->conn_, &js_opts);
  if (s != NATS_OK) return std::unexpected(natsError(s, "JetStream context"));
  return self;
}

struct Connection::ReplyInbox {
  natsSubscription* sub = nullptr;
  std::string prefix;  // <inbox prefix>.<unique>. ; a request's reply subject adds its number
  std::uint64_t next = 0;
  // Sent and not yet awaited (a handful at most), and the replies that came for them while
  // another number was awaited.
  std::vector<std::uint64_t> out;
  std::vector<std::pair<std::uint64_t, OwnedNatsMsg>> early;
};

Connection::Connection() = default;

Connection::~Connection() {
  if (js_ != nullptr) jsCtx_Destroy(js_);
  if (conn_ != nullptr) {
    {
      const std::lock_guard lock(callbacks_->mutex);
      callbacks_->closing = true;
    }
    natsConnection_Close(conn_);
    (void)waitClosed(kCloseWait);
    {
      const std::lock_guard lock(inboxes_mutex_);
      for (auto& inbox : inboxes_) natsSubscription_Destroy(inbox->sub);
      inboxes_.clear();
    }
    natsConnection_Destroy(conn_);
  }
  if (callbacks_ != nullptr) {
    // A late callback (cnats not done closing) finds no logger: what it captured may be gone.
    const std::lock_guard lock(callbacks_->mutex);
    callbacks_->logger = {};
    callbacks_->quiet = {};
  }
}

bool Connection::waitClosed(std::chrono::milliseconds timeout) {
  if (callbacks_ == nullptr) return true;
  std::unique_lock lock(callbacks_->mutex);
  return callbacks_->cv.wait_for(lock, timeout, [this] { return callbacks_->closed; });
}

bool Connection::connected() const {
  return conn_ != nullptr && callbacks_->link.load(std::memory_order_acquire) == Callbacks::kUp;
}

std::size_t Connection::maxPayload() const {
  if (conn_ == nullptr) return 0;
  std::int64_t max = callbacks_ != nullptr ? callbacks_->max_payload.load(std::memory_order_relaxed) : 0;
  if (max <= 0) {
    // Not known at the connect (a connection still being made): ask cnats, and keep a real answer.
    max = natsConnection_GetMaxPayload(conn_);
    if (callbacks_ != nullptr && max > 0) callbacks_->max_payload.store(max, std::memory_order_relaxed);
  }
  return max > 0 ? static_cast<std::size_t>(max) : 0;
}

Status Connection::flush(std::chrono::milliseconds timeout) {
  natsStatus s = natsConnection_FlushTimeout(conn_, std::max<std::int64_t>(1, timeout.count()));
  if (s != NATS_OK) return std::unexpected(natsError(s, "flush"));
  return {};
}

void Connection::drain(std::chrono::milliseconds timeout) {
  if (conn_ == nullptr) return;
  {
    const std::lock_guard lock(callbacks_->mutex);
    callbacks_->closing = true;
  }
  {
    // The threads' reply inboxes are synchronous subscriptions: cnats counts one as drained only
    // when its owner reads from it again, so the drain would wait out its whole timeout for them.
    // Their requests are answered or given up by now; a request made after this fails at once.
    const std::lock_guard lock(inboxes_mutex_);
    for (auto& inbox : inboxes_) (void)natsSubscription_Unsubscribe(inbox->sub);
  }
  natsStatus s = natsConnection_DrainTimeout(conn_, std::max<std::int64_t>(1, timeout.count()));
  if (s == NATS_OK && waitClosed(timeout + std::chrono::seconds(1))) return;
  if (s != NATS_OK && callbacks_ != nullptr) {
    const std::lock_guard lock(callbacks_->mutex);
    callbacks_->log("nats: drain refused (" + statusText(s) + "), closing");
  }
  natsConnection_Close(conn_);
}

std::optional<std::string> Connection::newInbox() const {
  char* unique = nullptr;
  if (natsInbox_Create(&unique) != NATS_OK) return std::nullopt;  // "_INBOX.<nuid>"
  std::string_view random(unique);
  random.remove_prefix(random.find('.') + 1);
  std::string subject = inbox_prefix_ + "." + std::string(random);
  natsInbox_Destroy(unique);
  return subject;
}

Connection::ReplyInbox* Connection::threadInbox(natsStatus& status) {
  // This thread's inbox on each connection it has asked through (a handful of connections per
  // process, so a short list; ids are never reused, so a closed connection's entry never
  // matches again).
  thread_local std::vector<std::pair<std::uint64_t, ReplyInbox*>> mine;
  for (const auto& [id, inbox] : mine) {
    if (id == id_) return inbox;
  }
  auto subject = newInbox();
  if (!subject) {
    status = NATS_NO_MEMORY;
    return nullptr;
  }
  auto inbox = std::make_unique<ReplyInbox>();
  inbox->prefix = *subject + ".";
  status = natsConnection_SubscribeSync(&inbox->sub, conn_, (inbox->prefix + "*").c_str());
  if (status != NATS_OK) return nullptr;
  // The first request must not overtake the subscription at the server.
  status = natsConnection_FlushTimeout(conn_, kJetStreamWaitMs);
  if (status != NATS_OK) {
    natsSubscription_Destroy(inbox->sub);
    return nullptr;
  }
  ReplyInbox* raw = inbox.get();
  {
    const std::lock_guard lock(inboxes_mutex_);
    inboxes_.push_back(std::move(inbox));
  }
  mine.emplace_back(id_, raw);
  return raw;
}

Result<OwnedNatsMsg> Connection::request(const OutMessage& message, std::chrono::milliseconds timeout,
                                         std::string_view what, bool* no_responders) {
  auto number = send(message, what);
  if (!number) {
    if (no_responders != nullptr) *no_responders = false;
    return std::unexpected(number.error());
  }
  return awaitReply(*number, timeout, what, no_responders);
}

Result<std::uint64_t> Connection::send(const OutMessage& message, std::string_view what) {
  natsStatus s = NATS_OK;
  ReplyInbox* inbox = threadInbox(s);
  if (inbox == nullptr) return std::unexpected(natsError(s, std::string(what) + " (reply inbox)"));
  const std::uint64_t number = ++inbox->next;
  char digits[24];
  const auto end = std::to_chars(digits, digits + sizeof digits, number).ptr;
  std::string reply_subject = inbox->prefix;
  reply_subject.append(digits, static_cast<std::size_t>(end - digits));
  OutMessage out = message;
  out.reply = reply_subject;
  auto msg = toNatsMsg(out);
  if (!msg) return std::unexpected(msg.error());
  s = natsConnection_PublishMsg(conn_, msg->get());
  if (s != NATS_OK) return std::unexpected(natsError(errcFor(s) == Errc::internal ? Errc::unavailable : errcFor(s), s, what));
  inbox->out.push_back(number);
  return number;
}

Result<OwnedNatsMsg> Connection::awaitReply(std::uint64_t number, std::chrono::milliseconds timeout,
                                            std::string_view what, bool* no_responders) {
  if (no_responders != nullptr) *no_responders = false;
  natsStatus s = NATS_OK;
  ReplyInbox* inbox = threadInbox(s);
  if (inbox == nullptr) return std::unexpected(natsError(s, std::string(what) + " (reply inbox)"));
  // Whatever happens, `number` is no longer out once this returns.
  struct Settle {
    ReplyInbox& inbox;
    std::uint64_t number;
    ~Settle() { std::erase(inbox.out, number); }
  } settle{*inbox, number};
  const auto no_one = [&](natsStatus status) {
    if (no_responders != nullptr) *no_responders = true;
    return std::unexpected(natsError(Errc::unavailable, status, what));
  };
  const auto answer = [&](OwnedNatsMsg reply) -> Result<OwnedNatsMsg> {
    const char* status = nullptr;
    if (natsMsg_GetDataLength(reply.get()) == 0 && natsMsgHeader_Get(reply.get(), "Status", &status) == NATS_OK &&
        status != nullptr && std::string_view(status) == "503") {
      return no_one(NATS_NO_RESPONDERS);
    }
    return reply;
  };
  for (auto it = inbox->early.begin(); it != inbox->early.end(); ++it) {
    if (it->first != number) continue;
    OwnedNatsMsg reply = std::move(it->second);
    inbox->early.erase(it);
    return answer(std::move(reply));
  }
  // Waited for in slices, so that a lost connection ends the wait (as cnats' own requests do
  // with FailRequestsOnDisconnect) instead of the timeout.
  constexpr std::int64_t kSliceMs = 250;
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  for (;;) {
    const auto left =
        std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now()).count();
    if (left <= 0) return std::unexpected(natsError(NATS_TIMEOUT, what));
    natsMsg* got = nullptr;
    s = natsSubscription_NextMsg(&got, inbox->sub, std::min<std::int64_t>(left, kSliceMs));
    if (s == NATS_TIMEOUT) {
      if (!connected()) return std::unexpected(natsError(NATS_CONNECTION_DISCONNECTED, what));
      continue;
    }
    // cnats' NextMsg reads the server's 503 itself (and frees it). The server sends it at once,
    // so it answers a request still out, not an earlier one that timed out.
    if (s == NATS_NO_RESPONDERS) return no_one(s);
    if (s != NATS_OK) return std::unexpected(natsError(errcFor(s) == Errc::internal ? Errc::unavailable : errcFor(s), s, what));
    OwnedNatsMsg reply(got);
    std::string_view subject(natsMsg_GetSubject(got));
    std::uint64_t replied = 0;
    if (!subject.starts_with(inbox->prefix)) continue;
    subject.remove_prefix(inbox->prefix.size());
    if (std::from_chars(subject.data(), subject.data() + subject.size(), replied).ptr != subject.data() + subject.size()) {
      continue;
    }
    if (replied == number) return answer(std::move(reply));
    // Another request of this thread that is still out keeps its reply; any other number is
    // the late answer to a request that timed out.
    if (std::find(inbox->out.begin(), inbox->out.end(), replied) != inbox->out.end()) {
      inbox->early.emplace_back(replied, std::move(reply));
    }
  }
}

namespace {

// retire()'s first half: while connected, `unsubscribe()`, then a round trip to the server.
template <typename Unsubscribe>
void unsubscribeThenRoundTrip(const Connection& connection, Unsubscribe unsubscribe) {
  if (!connection.connected()) return;
  unsubscribe();
  (void)natsConnection_FlushTimeout(connection.raw(), kRetireRoundTripMs);
}

}  // namespace

void Connection::retire(natsSubscription* sub) {
  if (sub == nullptr) return;
  unsubscribeThenRoundTrip(*this, [sub] { (void)natsSubscription_Unsubscribe(sub); });
  natsSubscription_Destroy(sub);
}

void Connection::retire(kvWatcher* watcher) {
  if (watcher == nullptr) return;
  unsubscribeThenRoundTrip(*this, [watcher] { (void)kvWatcher_Stop(watcher); });
  kvWatcher_Destroy(watcher);
}

void Connection::onDisconnected(natsConnection*, void* closure) {
  Callbacks& cb = Home::of(closure);
  cb.link.store(Callbacks::kDown, std::memory_order_release);
  std::lock_guard lock(cb.mutex);
  cb.log("nats: " + cb.name + (cb.closing ? " disconnected (closing)" : " disconnected, reconnecting"));
}

void Connection::onReconnected(natsConnection* nc, void* closure) {
  Callbacks& cb = Home::of(closure);
  cb.link.store(Callbacks::kUp, std::memory_order_release);
  cb.max_payload.store(natsConnection_GetMaxPayload(nc));  // another server may allow another size
  char url[256] = {0};
  natsConnection_GetConnectedUrl(nc, url, sizeof url);
  std::lock_guard lock(cb.mutex);
  cb.log("nats: " + cb.name + " reconnected to " + safeUrl(url));
}

void Connection::onClosed(natsConnection*, void* closure) {
  {
    Callbacks& cb = Home::of(closure);
    cb.link.store(Callbacks::kDown, std::memory_order_release);
    const std::lock_guard lock(cb.mutex);
    cb.log("nats: " + cb.name + " closed");
    cb.closed = true;
    cb.cv.notify_all();
  }
  Home::release(closure);  // cnats' last callback for this connection
}

void Connection::onError(natsConnection*, natsSubscription* sub, natsStatus err, void* closure) {
  Callbacks& cb = Home::of(closure);
  std::string line = "nats: " + cb.name + " async error: " + statusText(err);
  if (sub != nullptr) {
    const char* subject = natsSubscription_GetSubject(sub);
    if (subject != nullptr) line += std::string(" on ") + subject;
  }
  std::lock_guard lock(cb.mutex);
  cb.log(line);
}

int64_t Connection::reconnectDelay(natsConnection*, int attempts, void*) {
  thread_local std::minstd_rand random(std::random_device{}());
  std::int64_t delay = kReconnectBaseMs;
  for (int i = 1; i < attempts && delay < kReconnectMaxMs; ++i) delay *= 2;
  delay = std::min(delay, kReconnectMaxMs);
  std::uniform_int_distribution<std::int64_t> jitter(0, delay / 4);
  return delay + jitter(random);
}

}  // namespace countersign::natsio
