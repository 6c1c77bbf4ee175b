#include "nats/kv_bucket.hpp"
#include "nats/message_convert.hpp"
#include "nats/nats_publisher.hpp"
#include "nats/subscriber.hpp"
#include "countersign/json.hpp"
#include "countersign/key_groups.hpp"

#include <pthread.h>

#include <algorithm>
#include <charconv>
#include <condition_variable>
#include <cstring>
#include <limits>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <unordered_map>
#include <unordered_set>
#include <utility>
#include <vector>

namespace countersign::natsio {
namespace {

// A compare-and-swap that lost: the server answers "wrong last sequence: N" (JetStream error
// 10071) and cnats reports it as a generic NATS_ERR.
bool lostCompareAndSwap(natsStatus s) {
  return s == NATS_ERR && lastNatsErrorText().find("wrong last sequence") != std::string::npos;
}

// Generic errors from JetStream (storage full, not the leader, ...) are the environment's.
Error kvError(natsStatus s, std::string_view context) {
  Errc code = errcFor(s);
  if (code == Errc::internal) code = Errc::unavailable;
  return natsError(code, s, context);
}

Status checkValueSize(std::string_view value) {
  if (value.size() > static_cast<std::size_t>(std::numeric_limits<int>::max())) {
    return fail(Errc::too_large, "value too large");
  }
  return {};
}

// The keys cnats' kvStore accepts: A-Z a-z 0-9 _ - / = \ and '.' (not first, last or twice
// in a row).
bool validKey(std::string_view key) {
  if (key.empty() || key.front() == '.' || key.back() == '.') return false;
  char previous = 0;
  for (const char c : key) {
    const bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' ||
                    c == '-' || c == '/' || c == '=' || c == '\\' || (c == '.' && previous != '.');
    if (!ok) return false;
    previous = c;
  }
  return true;
}

// How long getMany waits for the direct gets' answers: what the JetStream context waits.
constexpr std::chrono::milliseconds kDirectGetWait{5000};

// A stored KV message as an entry: its value and revision, or Errc::not_found for the marker a
// delete or purge leaves.
Result<KvEntry> storedEntry(natsMsg* msg, const std::string& key, std::uint64_t revision) {
  const char* operation = nullptr;
  if (natsMsgHeader_Get(msg, "KV-Operation", &operation) == NATS_OK && operation != nullptr &&
      (std::string_view(operation) == "DEL" || std::string_view(operation) == "PURGE")) {
    return fail(Errc::not_found, "key " + key + " deleted");
  }
  KvEntry out;
  const char* data = natsMsg_GetData(msg);
  const int length = natsMsg_GetDataLength(msg);
  if (data != nullptr && length > 0) out.value.assign(data, static_cast<std::size_t>(length));
  out.revision = revision;
  return out;
}

// The answer to a direct get of a key's last value, read as js_DirectGetMsg reads it: a message
// without data that has a status is the server's refusal (404: no such key; 503: no stream
// answers), anything else is the stored message, its sequence in the Nats-Sequence header.
Result<KvEntry> directGetAnswer(natsMsg* msg, const std::string& key) {
  const char* status = nullptr;
  if (natsMsg_GetDataLength(msg) == 0 && natsMsgHeader_Get(msg, "Status", &status) == NATS_OK && status != nullptr) {
    const std::string_view code(status);
    if (code == "404") return fail(Errc::not_found, "key " + key + " not found");
    const char* description = nullptr;
    (void)natsMsgHeader_Get(msg, "Description", &description);
    return fail(Errc::unavailable, "KV get " + key + ": the server answered " + std::string(code) +
                                       (description != nullptr ? " " + std::string(description) : std::string()));
  }
  const char* sequence = nullptr;
  std::uint64_t revision = 0;
  if (natsMsgHeader_Get(msg, "Nats-Sequence", &sequence) != NATS_OK || sequence == nullptr ||
      std::from_chars(sequence, sequence + std::strlen(sequence), revision).ec != std::errc() || revision == 0) {
    return fail(Errc::unavailable, "KV get " + key + ": an answer without a sequence");
  }
  return storedEntry(msg, key, revision);
}

// "0s (none)", "3600s": an age limit in nanoseconds, for messages.
std::string secondsText(std::int64_t nanoseconds) {
  if (nanoseconds == 0) return "0s (none)";
  return std::to_string(nanoseconds / 1'000'000'000) + "s";
}

// Why JetStream calls cannot work on this connection's server, if that is the reason: the
// server has JetStream off (or not for this account). nullopt when JetStream answers.
std::optional<std::string> jetStreamMissing(Connection& connection) {
  jsAccountInfo* info = nullptr;
  jsErrCode code = static_cast<jsErrCode>(0);
  const natsStatus s = js_GetAccountInfo(&info, connection.js(), nullptr, &code);
  jsAccountInfo_Destroy(info);
  if (s == NATS_OK) return std::nullopt;
  if (s == NATS_NO_RESPONDERS || code == JSNotEnabledErr || code == JSNotEnabledForAccountErr) {
    return std::string("JetStream is not enabled on the NATS server (start nats-server with -js, or add a "
                       "jetstream block to its config; or give this account JetStream)");
  }
  return std::nullopt;
}

constexpr std::chrono::milliseconds kAsyncCreateTimeout{5000};
// How long a synchronous get, create or update waits for the server (as cnats' JetStream default).
constexpr std::int64_t kJetStreamWait = 5000;
constexpr std::chrono::milliseconds kAsyncSweepEvery{100};
// The header of a KV write that the server stores only while the key is at that revision (0: has
// no value), as kvStore_Create and kvStore_Update send it.
constexpr const char* kExpectedLastSubjectSequence = "Nats-Expected-Last-Subject-Sequence";

}  // namespace

// With an age limit, how often the index is checked against a full listing (the server ages
// keys out without telling a watcher).
constexpr std::chrono::seconds kFullListingEvery{30};
// A retired group stays retired (later writes to it are not indexed) for at least this long.
constexpr std::chrono::seconds kRetiredFor{30};
// How long the listing's and the watcher's JetStream calls wait (see KvBucket::listing_kv_).
constexpr std::int64_t kListingWaitMs = 120000;
// While the watcher follows the bucket it takes what has arrived this often.
constexpr std::chrono::milliseconds kWatchBatchEvery{100};
// Otherwise it catches up with the bucket in passes this far apart (see watchKeys): the
// replayer's scans, which the index serves, come every second by default.
constexpr std::chrono::milliseconds kPassEvery{1000};
// How long the watcher keeps following the bucket (a consumer that sends each write as it is
// made) after someone last had to wait for a revision it had not taken yet.
constexpr std::chrono::seconds kFollowFor{5};
// How long a pass over the bucket runs at least before, once past the bucket's state at its
// start, it stops waiting for a moment with nothing left to deliver (see watchKeys).
constexpr std::chrono::seconds kChaseFor{5};
// How long groupKeys(group, revision) waits for the watcher to reach the revision before it
// answers from the index without it. It need only cover the watcher's usual lag: a waiter wakes
// the watcher, which then follows the bucket, taking each write as it arrives (a few milliseconds
// behind; the first wait also waits for the consumer that follows to be made). Past it the
// system is slow, and neither listing the bucket (seconds at a million keys) nor a longer wait
// should hold a control thread: a vote the answer misses is only late (the replayer decides a
// reached quorum after its lease).
constexpr std::chrono::milliseconds kRevisionWait{200};

// The bucket's keys as a watcher (meta only) reports them, so that keys() need not list the
// whole bucket every time; grouped by the part before the first '/' (the group of "a/b" and of
// "a" is "a"), so that a retired group is forgotten whole and memory follows the groups still
// open, not the bucket's history.
struct KvBucket::KeyIndex {
  struct Hash {
    using is_transparent = void;
    std::size_t operator()(std::string_view key) const { return std::hash<std::string_view>{}(key); }
  };
  using Clock = std::chrono::steady_clock;
  using Names = std::unordered_set<std::string, Hash, std::equal_to<>>;

  mutable std::mutex mutex;
  // Group -> the rest of each of its keys after the '/' ("" for the key that is the group),
  // compact: a million pending approvals are held here.
  KeyGroups groups;
  // Retired groups, in two generations: a write to one of them is not indexed; `retired_before`
  // is dropped when `retired` is kRetiredFor old, so this holds what was retired lately.
  IdMap<> retired;
  IdMap<> retired_before;
  Clock::time_point retired_since = Clock::now();
  bool live = false;   // the watcher delivered the initial state and still runs
  bool ages = false;   // the bucket has an age limit: keys leave it without a delete
  Clock::time_point last_full = Clock::now();
  // With an age limit the index is checked against a full listing every kFullListingEvery:
  // until then it answers on its own.
  bool fullListingDueLocked() const { return ages && Clock::now() - last_full >= kFullListingEvery; }
  bool listing = false;
  Names added_while_listing;
  std::mutex listing_mutex;  // one full listing at a time
  std::atomic<bool> stopping{false};
  // The watcher went live, is stopping, or took a write waited for; or a waiter wants one.
  std::condition_variable changed;
  std::uint64_t delivered = 0;      // messages of first passes taken (keys() sees progress)
  // The stream sequence (= revision) of the last write the watcher has taken into the index:
  // every write up to it is in. Callers of waitForRevisionLocked() wait for it to pass theirs,
  // the highest of which is `wanted` (0 while none waits): the watcher then follows the bucket,
  // taking each write as it comes.
  std::uint64_t passed = 0;
  std::uint64_t wanted = 0;
  int revision_waiters = 0;
  // When a caller last had to wait for a revision (the watcher follows the bucket for
  // kFollowFor after it instead of catching up in passes).
  Clock::time_point waited_at{};
  FirstPassValue first_pass;        // guarded by mutex
  std::once_flag started;  // the watcher starts with the first keys() call
  std::thread thread;

  std::atomic<bool> active{false};  // keys() was called: from then on the index is kept
  // This process's own creates, merged under `mutex` by the next reader (keys(), a visit, the
  // watcher): an approval's or a hold's create never waits for a scan that holds `mutex`.
  std::mutex inbox_mutex;
  std::vector<std::string> inbox;

  static std::pair<std::string_view, std::string_view> split(std::string_view key) { return KeyGroups::split(key); }

  // With `mutex` held: the watcher stopped delivering; what it misses until it is live again is
  // not among the changes an incremental visit would report (KeyGroups::visitChanges).
  void notLiveLocked() {
    live = false;
    groups.stopChanges();
  }

  // With `mutex` held.
  bool isRetired(std::string_view group) const { return retired.contains(group) || retired_before.contains(group); }

  // The watcher's message with stream sequence `sequence`: `key` (empty: none of the bucket's)
  // written or (`removed`) deleted, taken into the index under one lock with the sequence.
  void apply(std::string_view key, bool removed, std::uint64_t sequence) {
    bool wake = false;
    {
      const std::lock_guard lock(mutex);
      if (!key.empty()) {
        if (removed) {
          eraseLocked(key);
        } else {
          addLocked(key);
        }
      }
      if (sequence > passed) {
        passed = sequence;
        wake = revision_waiters != 0;
      }
    }
    if (wake) changed.notify_all();
  }

  // With `mutex` held (by `lock`): waits, at most kRevisionWait, until the watcher has taken
  // every write up to `revision` into the index (or it stops being live).
  void waitForRevisionLocked(std::unique_lock<std::mutex>& lock, std::uint64_t revision) {
    if (passed >= revision) return;
    waited_at = Clock::now();
    ++revision_waiters;
    wanted = std::max(wanted, revision);
    changed.notify_all();  // the watcher may be resting between batches
    changed.wait_for(lock, kRevisionWait, [&] { return passed >= revision || !live || stopping; });
    if (--revision_waiters == 0) wanted = 0;
  }

  // A key this process created (any thread, never waits for `mutex`).
  void addSoon(std::string_view key) {
    if (!active) return;
    const std::lock_guard lock(inbox_mutex);
    inbox.emplace_back(key);
  }

  // With `mutex` held: whether the watcher should follow the bucket now (someone waits for a
  // revision, or did in the last kFollowFor).
  bool followWantedLocked() const { return wanted > passed || Clock::now() - waited_at < kFollowFor; }

  // With `mutex` held: the own creates since the last call go in (and into `also`).
  void drainLocked(Names* also = nullptr) {
    std::vector<std::string> taken;
    {
      const std::lock_guard lock(inbox_mutex);
      taken.swap(inbox);
    }
    for (const auto& key : taken) {
      addLocked(key);
      if (also != nullptr) also->insert(key);
    }
  }

  // With `mutex` held.
  void addLocked(std::string_view key) {
    if (!active) return;
    if (listing) added_while_listing.emplace(key);
    const auto [group, rest] = split(key);
    if (isRetired(group)) return;
    groups.add(group, rest);
  }

  // With `mutex` held.
  void eraseLocked(std::string_view key) {
    const auto [group, rest] = split(key);
    groups.erase(group, rest);
  }

  void retire(std::string_view group) {
    const std::lock_guard lock(mutex);
    if (!active) return;
    const auto now = Clock::now();
    if (now - retired_since >= kRetiredFor) {
      retired_before = std::move(retired);
      retired.clear();
      retired_since = now;
    }
    groups.eraseGroup(group);
    retired.insert(group);
  }

  // With `mutex` held.
  std::vector<std::string> keysLocked() const {
    return groups.keys();
  }

  // With `mutex` held: `listed` without the keys of retired groups.
  void dropRetired(std::vector<std::string>& listed) const {
    if (retired.empty() && retired_before.empty()) return;
    std::erase_if(listed, [&](const std::string& key) { return isRetired(split(key).first); });
  }
};

// Creates in flight: each a JetStream publish whose reply subject is <inbox><number>, answered on
// a subscription of the bucket's own; the callback of every unanswered create by its number, and
// a timer (or thread) that times out the unanswered ones. Not cnats' asynchronous publish: that
// keeps a map of its own beside this one and frees every PubAck through cnats' collector thread,
// one more thread wake per create (see freeNatsMsg).
struct KvBucket::AsyncCreates {
  using Clock = std::chrono::steady_clock;
  struct Pending {
    CreateDone done;
    Clock::time_point deadline;
    std::string key;
  };

  KeyIndex* index = nullptr;
  std::string inbox;  // "<inbox prefix>.<random>.": a create's reply subject is this and its number
  std::size_t max_pending = 1;

  std::mutex mutex;
  // Conditions of their own, so that an answer wakes no one unless someone waits: for the creates
  // to finish (waitForCreates), for room (createAsync beyond max_pending), or the sweeper (every
  // kAsyncSweepEvery, or to stop).
  std::condition_variable drained;
  std::size_t draining = 0;
  std::condition_variable room;
  std::size_t waiting_for_room = 0;
  std::condition_variable sweeper_wake;
  std::unordered_map<std::uint64_t, Pending> pending;
  std::uint64_t next = 0;     // the last create's number
  std::size_t answering = 0;  // `done` callbacks running (waitForCreates waits for them too)
  bool stopping = false;
  std::thread sweeper;
  // The PubAcks' subscription. Its handler uses the members above: it is declared last so that
  // it goes first (~KvBucket ends it earlier still, once the creates are answered).
  std::unique_ptr<Subscription> replies;

  // With `mutex` held: `n` creates left `pending` to be answered.
  void taken(std::size_t n) {
    answering += n;
    if (waiting_for_room > 0) room.notify_all();
  }
  // With `mutex` held, once `n` answers have run: wakes waitForCreates if anyone waits.
  void answered(std::size_t n) {
    answering -= n;
    if (draining > 0) drained.notify_all();
  }

  // A create's outcome from its reply: the PubAck, or the server's "no responders" status in
  // its place (no stream stores the subject).
  static Result<std::uint64_t> outcome(const Message& reply, const std::string& key) {
    const std::string what = "KV create " + key;
    if (reply.payload.empty()) {
      const std::string* status = findHeader(reply.headers, "Status");
      if (status != nullptr && *status == "503") return fail(Errc::unavailable, what + ": no stream stores the key");
    }
    auto ack = parsePubAck(reply.payload, what);
    if (ack) return ack->sequence;
    if (ack.error().code == Errc::wrong_revision) return fail(Errc::exists, "key " + key + " exists");
    return std::unexpected(ack.error());
  }

  // On the subscription's delivery thread.
  void onReply(Message&& reply) {
    std::string_view subject = reply.subject;
    std::uint64_t number = 0;
    if (!subject.starts_with(inbox)) return;
    subject.remove_prefix(inbox.size());
    if (std::from_chars(subject.data(), subject.data() + subject.size(), number).ptr != subject.data() + subject.size()) {
      return;
    }
    Pending entry;
    {
      const std::lock_guard lock(mutex);
      const auto it = pending.find(number);
      if (it == pending.end()) return;  // the late answer to a create that timed out or was cancelled
      entry = std::move(it->second);
      pending.erase(it);
      taken(1);
    }
    // Counted as answered whatever happens below: the subscription swallows what a handler
    // throws, and a count that stays up would hold every later waitForCreates to its timeout.
    struct Answered {
      AsyncCreates& self;
      ~Answered() {
        const std::lock_guard lock(self.mutex);
        self.answered(1);
      }
    } answered_once{*this};
    std::optional<Result<std::uint64_t>> created;
    try {
      created = outcome(reply, entry.key);
    } catch (const std::exception& e) {
      created = fail(Errc::internal, "KV create " + entry.key + ": " + e.what());
    }
    if (*created && index != nullptr) index->addSoon(entry.key);
    entry.done(std::move(*created));
  }

  // One pass: answers the creates past their deadline (Errc::timeout).
  void sweepOnce() {
    std::unique_lock lock(mutex);
    const auto now = Clock::now();
    std::vector<Pending> expired;
    for (auto it = pending.begin(); it != pending.end();) {
      if (it->second.deadline <= now) {
        expired.push_back(std::move(it->second));
        it = pending.erase(it);
      } else {
        ++it;
      }
    }
    if (expired.empty()) return;
    taken(expired.size());
    lock.unlock();
    for (auto& entry : expired) {
      entry.done(fail(Errc::timeout, "KV create " + entry.key + ": no PubAck within " +
                                         std::to_string(kAsyncCreateTimeout.count()) + " ms"));
    }
    lock.lock();
    answered(expired.size());
  }

  // Without an executor: a thread of its own, every kAsyncSweepEvery until stopping.
  void sweep() {
    std::unique_lock lock(mutex);
    while (!stopping) {
      sweeper_wake.wait_for(lock, kAsyncSweepEvery);
      if (stopping) break;
      lock.unlock();
      sweepOnce();
      lock.lock();
    }
  }

  // With an executor: a timer on its lane "kv-sweep", every kAsyncSweepEvery while the state
  // exists and is not stopping.
  static void scheduleSweeps(WorkPool& timers, std::weak_ptr<AsyncCreates> state) {
    timers.postAfter(kAsyncSweepEvery, "kv-sweep", [&timers, state = std::move(state)] {
      const std::shared_ptr<AsyncCreates> self = state.lock();
      if (self == nullptr) return;
      {
        const std::lock_guard lock(self->mutex);
        if (self->stopping) return;
      }
      self->sweepOnce();
      scheduleSweeps(timers, state);
    });
  }
};

Status KvBucket::startAsync(int max_pending, WorkPool* timers) {
  auto state = std::make_shared<AsyncCreates>();
  auto inbox = connection_.newInbox();
  if (!inbox) return fail(Errc::internal, "KV creates: no reply inbox");
  state->inbox = *inbox + ".";
  state->max_pending = static_cast<std::size_t>(std::max(1, max_pending));
  // The subscription ends before the state does (~KvBucket), so its handler may hold it raw.
  auto replies = Subscription::subscribe(
      connection_, state->inbox + "*", "", [raw = state.get()](Message&& reply) { raw->onReply(std::move(reply)); },
      {}, "cs-kv-puback");
  if (!replies) return std::unexpected(replies.error());
  state->replies = std::move(*replies);
  // The first create must not overtake the subscription at the server.
  if (auto flushed = connection_.flush(std::chrono::milliseconds(kJetStreamWait)); !flushed) {
    return std::unexpected(flushed.error());
  }
  state->index = index_.get();
  if (timers != nullptr) {
    AsyncCreates::scheduleSweeps(*timers, state);
  } else {
    state->sweeper = std::thread([raw = state.get()] {
      pthread_setname_np(pthread_self(), "cs-kv-sweep");
      raw->sweep();
    });
  }
  async_ = std::move(state);
  return {};
}

std::optional<std::uint64_t> KvBucket::lastSequence() {
  const std::string stream = "KV_" + bucket_;
  jsStreamInfo* info = nullptr;
  jsErrCode code = static_cast<jsErrCode>(0);
  std::optional<std::uint64_t> last;
  if (js_GetStreamInfo(&info, watch_js_ != nullptr ? watch_js_ : connection_.js(), stream.c_str(), nullptr, &code) ==
          NATS_OK &&
      info != nullptr) {
    last = info->State.LastSeq;
  }
  jsStreamInfo_Destroy(info);
  return last;
}

void KvBucket::watchKeys() {
  KeyIndex& index = *index_;
  Connection& connection = watchConnection();
  auto pause = [&](std::chrono::milliseconds delay) {
    std::unique_lock lock(index.mutex);
    index.changed.wait_for(lock, delay, [&] { return index.stopping.load(); });
  };
  const std::string stream = "KV_" + bucket_;
  const std::string prefix = "$KV." + bucket_ + ".";
  const std::string everything = prefix + ">";
  // The next stream sequence to deliver: every pass and subscription (after a lost one, after
  // the first pass) starts there, so each write is taken once.
  std::uint64_t next = 1;
  bool first_pass_done = false;
  // After the first pass the watcher has no consumer on the bucket most of the time: it catches
  // up in a pass every kPassEvery (a consumer from `next` that ends once it has delivered
  // what the bucket held when the pass began; none when nothing was written). A consumer that
  // stays makes nats-server send every write to it as it is stored: a delivery and a wake-up of
  // this connection per KV write (three per approval), which on a small VM measurably slows the
  // writes themselves. Only while callers wait for revisions (groupKeys: quorum votes, which
  // must see each other's writes at once) does it follow the bucket with a consumer that stays,
  // until kFollowFor after the last wait. In a cluster every consumer made or deleted is agreed
  // on by the cluster's meta group, which passes would keep busy: there it always follows.
  enum class Pass { first, catch_up, follow };
  bool rest = false;  // a catch-up pass (or the look that found nothing new) just ended
  while (!index.stopping) {
    if (rest) {
      rest = false;
      std::unique_lock lock(index.mutex);
      index.drainLocked();  // bounds the inbox while nobody lists
      // Someone waits (or waited just now, while a pass took the write): follow at once.
      index.changed.wait_for(lock, kPassEvery,
                             [&] { return index.stopping.load() || index.followWantedLocked(); });
      continue;
    }
    if (!connection.connected()) {
      pause(std::chrono::milliseconds(200));
      continue;
    }
    FirstPassValue first_pass;
    Pass pass = Pass::first;
    {
      const std::lock_guard lock(index.mutex);
      if (!first_pass_done) {
        first_pass = index.first_pass;
      } else {
        pass = clustered_ || index.followWantedLocked() ? Pass::follow : Pass::catch_up;
      }
    }
    // Caught up already when the stream holds nothing from `next` on.
    const auto last = lastSequence();
    if (!last) {
      pause(std::chrono::milliseconds(1000));
      continue;
    }
    bool caught_up = *last < next;
    if (pass == Pass::catch_up && caught_up) {
      rest = true;  // nothing new: no consumer
      continue;
    }
    // The first pass ends when nothing is left to deliver. While writes outpace it that may
    // never come: then it ends once it is past the stream's last message as of now and has run
    // for kChaseFor. Every key present now that was not written again meanwhile is in the index
    // by then; one written again is indexed when the watcher reaches that write. A catch-up
    // pass ends once it is past the stream's last message as of now: the next one takes the
    // rest.
    const std::uint64_t loaded_at = *last;
    const auto loading_since = std::chrono::steady_clock::now();
    // An ordered consumer from `next` (cheap for the server to create: no last-per-subject
    // search over a million subjects, which a key watcher's consumer costs nats-server 2.9 tens of
    // seconds on the connection's read loop); headers only, but for a first pass that hands
    // the values on. The bucket keeps one value per key, so every message is a key's last.
    jsSubOptions so;
    jsSubOptions_Init(&so);
    so.Stream = stream.c_str();
    so.Ordered = true;
    so.Config.DeliverPolicy = js_DeliverByStartSequence;
    so.Config.OptStartSeq = next;
    so.Config.HeadersOnly = !first_pass;
    natsSubscription* sub = nullptr;
    jsErrCode code = static_cast<jsErrCode>(0);
    if (js_SubscribeSync(&sub, watch_js_ != nullptr ? watch_js_ : connection.js(), everything.c_str(), nullptr, &so,
                         &code) != NATS_OK) {
      natsSubscription_Destroy(sub);
      pause(std::chrono::milliseconds(1000));
      continue;
    }
    (void)natsSubscription_SetPendingLimits(sub, -1, -1);  // the consumer's flow control bounds it
    bool ended = false;  // the subscription has done its part (not lost)
    auto loaded = [&] {
      {
        const std::lock_guard lock(index.mutex);
        index.live = true;
      }
      index.changed.notify_all();
      first_pass_done = true;
      if (pass != Pass::follow) {
        ended = true;  // the first pass hands over to catch-up passes; a catch-up pass is done
        rest = pass == Pass::catch_up;
      }
    };
    if (caught_up) loaded();
    while (!index.stopping && !ended) {
      natsMsg* raw = nullptr;
      // While loading, take the messages as they come; once following, take what has arrived,
      // then sleep: a thread woken for every key would cost a context switch per KV write.
      const bool loading = !caught_up;
      const natsStatus s = natsSubscription_NextMsg(&raw, sub, loading ? 100 : 1);
      if (s == NATS_TIMEOUT) {
        if (loading) {
          // Messages below `next` may have gone (aged out) since the count was taken.
          const auto now_last = lastSequence();
          if (now_last && *now_last < next) {
            caught_up = true;
            loaded();
          }
        } else {
          std::unique_lock lock(index.mutex);
          index.drainLocked();  // bounds the inbox while nobody lists
          if (!clustered_ && !index.followWantedLocked()) {
            ended = true;  // nobody waited lately: back to catch-up passes
            rest = true;
            break;
          }
          // Someone waits for a write not taken yet (groupKeys with a revision): no rest.
          index.changed.wait_for(lock, kWatchBatchEvery,
                                 [&] { return index.stopping.load() || index.wanted > index.passed; });
        }
        continue;
      }
      if (s != NATS_OK) break;  // the subscription failed: a new one resumes at `next`
      const OwnedNatsMsg msg(raw);
      jsMsgMetaData* meta = nullptr;
      std::uint64_t pending = 0;
      std::uint64_t sequence = 0;
      if (natsMsg_GetMetaData(&meta, msg.get()) == NATS_OK && meta != nullptr) {
        sequence = meta->Sequence.Stream;
        next = std::max(next, sequence + 1);
        pending = meta->NumPending;
      }
      jsMsgMetaData_Destroy(meta);
      const std::string_view subject = natsMsg_GetSubject(msg.get());
      if (subject.size() > prefix.size() && subject.starts_with(prefix)) {
        const std::string_view key = subject.substr(prefix.size());
        const char* operation = nullptr;
        const bool removed = natsMsgHeader_Get(msg.get(), "KV-Operation", &operation) == NATS_OK &&
                             operation != nullptr &&
                             (std::string_view(operation) == "DEL" || std::string_view(operation) == "PURGE");
        index.apply(key, removed, sequence);
        if (!removed && first_pass) {
          const char* data = natsMsg_GetData(msg.get());
          const int length = natsMsg_GetDataLength(msg.get());
          first_pass(key, data != nullptr && length > 0
                              ? std::string_view(data, static_cast<std::size_t>(length))
                              : std::string_view());
        }
      } else {
        index.apply({}, false, sequence);
      }
      if (!caught_up) {
        {
          const std::lock_guard lock(index.mutex);
          ++index.delivered;
        }
        const bool past_start = next > loaded_at;
        if (pending == 0 || (past_start && (pass == Pass::catch_up ||
                                            std::chrono::steady_clock::now() - loading_since > kChaseFor))) {
          caught_up = true;
          loaded();
        }
      }
    }
    // The server may still be sending to it (see Connection::retire). Unsubscribing deletes the
    // ordered consumer through watch_js_, whose wait (not the listings' two minutes) bounds it
    // when the server stops answering.
    connection.retire(sub);
    if (!ended) {
      rest = false;
      const std::lock_guard lock(index.mutex);
      index.notLiveLocked();
    }
  }
  const std::lock_guard lock(index.mutex);
  index.notLiveLocked();
}

bool KvBucket::indexLive() const {
  const std::lock_guard lock(index_->mutex);
  return index_->live;
}

Result<std::unique_ptr<KvBucket>> KvBucket::open(Connection& connection,
                                                 const StoreConfig& config, int max_async_creates,
                                                 WorkPool* timers, Connection* watch_connection) {
  kvStore* kv = nullptr;
  natsStatus s = js_KeyValue(&kv, connection.js(), config.bucket.c_str());
  if (s == NATS_NOT_FOUND) {
    kvConfig kv_config;
    kvConfig_Init(&kv_config);
    kv_config.Bucket = config.bucket.c_str();
    kv_config.History = 1;
    kv_config.StorageType = js_FileStorage;
    kv_config.Replicas = config.replicas;
    kv_config.TTL = std::chrono::duration_cast<std::chrono::nanoseconds>(config.max_age).count();
    s = js_CreateKeyValue(&kv, connection.js(), &kv_config);
    if (s != NATS_OK) {
      Error create_error = kvError(s, "cannot create KV bucket " + config.bucket);
      // Another process may have created it at the same time, with other settings.
      if (js_KeyValue(&kv, connection.js(), config.bucket.c_str()) != NATS_OK) {
        return std::unexpected(std::move(create_error));
      }
      s = NATS_OK;
    }
  }
  if (s != NATS_OK) {
    Error error = kvError(s, "cannot open KV bucket " + config.bucket);
    if (auto why = jetStreamMissing(connection)) error.message = "cannot open KV bucket " + config.bucket + ": " + *why;
    return std::unexpected(std::move(error));
  }
  std::unique_ptr<KvBucket> bucket(new KvBucket(connection, kv, config.bucket));
  bucket->watch_connection_ = watch_connection;
  jsOptions watch_options;
  jsOptions_Init(&watch_options);
  watch_options.Wait = kJetStreamWait;
  if (natsConnection_JetStream(&bucket->watch_js_, bucket->watchConnection().raw(), &watch_options) != NATS_OK) {
    bucket->watch_js_ = nullptr;  // the watcher uses the connection's own context
  }
  jsOptions listing_options;
  jsOptions_Init(&listing_options);
  listing_options.Wait = kListingWaitMs;
  if (natsConnection_JetStream(&bucket->listing_js_, bucket->watchConnection().raw(), &listing_options) == NATS_OK &&
      js_KeyValue(&bucket->listing_kv_, bucket->listing_js_, config.bucket.c_str()) != NATS_OK) {
    bucket->listing_kv_ = nullptr;  // listings use kv_ and its shorter wait
  }
  // The bucket's own settings (an existing bucket keeps its own): with one replica and direct
  // gets allowed, reads are direct gets. A bucket scaled up later needs a restart to be read
  // through its leader again.
  jsStreamInfo* info = nullptr;
  const std::string stream = "KV_" + config.bucket;
  std::optional<std::int64_t> max_age_ns;
  if (js_GetStreamInfo(&info, connection.js(), stream.c_str(), nullptr, nullptr) == NATS_OK && info != nullptr &&
      info->Config != nullptr) {
    bucket->direct_gets_ = info->Config->Replicas == 1 && info->Config->AllowDirect;
    bucket->one_value_per_key_ = info->Config->MaxMsgsPerSubject == 1;
    bucket->clustered_ = info->Cluster != nullptr;
    max_age_ns = info->Config->MaxAge;
  }
  jsStreamInfo_Destroy(info);
  const auto want_ns = std::chrono::duration_cast<std::chrono::nanoseconds>(config.max_age).count();
  if (max_age_ns && *max_age_ns != want_ns) {
    return fail(Errc::invalid_argument,
                "store.bucket " + config.bucket + " exists with other settings: its max_age is " +
                    secondsText(*max_age_ns) + ", store.max_age says " + secondsText(want_ns) +
                    " (records would age out at another time): set store.max_age to the bucket's, or use "
                    "another bucket");
  }
  bucket->index_->ages = want_ns > 0;
  if (auto started = bucket->startAsync(max_async_creates, timers); !started) return std::unexpected(started.error());
  return bucket;
}

KvBucket::KvBucket(Connection& connection, kvStore* kv, std::string bucket)
    : connection_(connection), kv_(kv), bucket_(std::move(bucket)), index_(std::make_unique<KeyIndex>()) {}

void KvBucket::stopWatching() {
  // Also keeps keys() from starting a watcher later.
  std::call_once(index_->started, [] {});
  {
    const std::lock_guard lock(index_->mutex);
    index_->stopping = true;
    index_->notLiveLocked();
  }
  index_->changed.notify_all();
  if (index_->thread.joinable()) index_->thread.join();
}

void KvBucket::onFirstPass(FirstPassValue each) {
  const std::lock_guard lock(index_->mutex);
  index_->first_pass = std::move(each);
}

KvBucket::~KvBucket() {
  stopWatching();
  if (async_ != nullptr) {
    (void)waitForCreates(kAsyncCreateTimeout);
    cancelCreates();
    {
      const std::lock_guard lock(async_->mutex);
      async_->stopping = true;
    }
    async_->sweeper_wake.notify_all();
    async_->room.notify_all();
    if (async_->sweeper.joinable()) async_->sweeper.join();
    async_->replies.reset();  // no PubAck is handled after this
  }
  if (listing_kv_ != nullptr) kvStore_Destroy(listing_kv_);
  if (listing_js_ != nullptr) jsCtx_Destroy(listing_js_);
  if (watch_js_ != nullptr) jsCtx_Destroy(watch_js_);
  kvStore_Destroy(kv_);
}

void KvBucket::cancelCreates() {
  if (async_ == nullptr) return;
  std::vector<AsyncCreates::Pending> left;
  {
    const std::lock_guard lock(async_->mutex);
    for (auto& [number, entry] : async_->pending) left.push_back(std::move(entry));
    async_->pending.clear();
    async_->taken(left.size());
  }
  for (auto& entry : left) entry.done(fail(Errc::unavailable, "KV create " + entry.key + ": cancelled (stopping)"));
  {
    const std::lock_guard lock(async_->mutex);
    async_->answered(left.size());
  }
  // Answers taken before this call (a PubAck being handled, a sweep) may still be running their
  // `done`: none may run once this returns.
  (void)waitForCreates(kAsyncCreateTimeout);
}

bool KvBucket::waitForCreates(std::chrono::milliseconds timeout) {
  if (async_ == nullptr) return true;
  std::unique_lock lock(async_->mutex);
  ++async_->draining;
  const bool done = async_->drained.wait_for(
      lock, timeout, [this] { return async_->pending.empty() && async_->answering == 0; });
  --async_->draining;
  return done;
}

void KvBucket::createAsync(std::string_view key, std::string_view value, CreateDone done) {
  if (auto ok = checkValueSize(value); !ok) return done(std::unexpected(ok.error()));
  std::string k(key);
  if (!validKey(k)) return done(fail(Errc::invalid_argument, "KV create: invalid key \"" + k + "\""));
  if (auto ok = checkConnected("KV create " + k); !ok) return done(std::unexpected(ok.error()));
  const std::string subject = "$KV." + bucket_ + "." + k;
  AsyncCreates& async = *async_;
  std::uint64_t number = 0;
  {
    // Beyond max_pending, the caller waits for an answer to make room, or for the sweep that
    // times out the oldest create (so a little longer than a create may wait: the wait fails
    // only when the sweeps have stopped).
    std::unique_lock lock(async.mutex);
    if (async.pending.size() >= async.max_pending) {
      ++async.waiting_for_room;
      const bool room = async.room.wait_for(lock, kAsyncCreateTimeout + 3 * kAsyncSweepEvery, [&] {
        return async.pending.size() < async.max_pending || async.stopping;
      });
      --async.waiting_for_room;
      if (!room || async.stopping) {
        lock.unlock();
        return done(fail(Errc::unavailable, "KV create " + k + ": " + std::to_string(async.max_pending) +
                                                " creates awaited their PubAck for " +
                                                std::to_string(kAsyncCreateTimeout.count()) + " ms"));
      }
      // PubAcks that stopped coming are most often a lost connection: a create sent now would
      // wait in cnats' buffer for the reconnect, long after its caller was told it failed.
      if (auto ok = checkConnected("KV create " + k); !ok) {
        lock.unlock();
        return done(std::unexpected(ok.error()));
      }
    }
    number = ++async.next;
    async.pending.emplace(number, AsyncCreates::Pending{std::move(done),
                                                        AsyncCreates::Clock::now() + kAsyncCreateTimeout, k});
  }
  char digits[24];
  const auto end = std::to_chars(digits, digits + sizeof digits, number).ptr;
  std::string reply = async.inbox;
  reply.append(digits, static_cast<std::size_t>(end - digits));
  static const Headers kCreate{{kExpectedLastSubjectSequence, "0"}};
  auto msg = toNatsMsg(OutMessage{.subject = subject, .reply = reply, .headers = &kCreate, .payload = value});
  // The PubAck may be handled before this returns.
  const natsStatus s = msg ? natsConnection_PublishMsg(connection_.raw(), msg->get()) : NATS_OK;
  if (msg && s == NATS_OK) return;
  CreateDone failed;
  {
    const std::lock_guard lock(async.mutex);
    if (auto it = async.pending.find(number); it != async.pending.end()) {
      failed = std::move(it->second.done);
      async.pending.erase(it);
      async.taken(1);
    }
  }
  if (!failed) return;  // answered meanwhile (cancelCreates)
  failed(msg ? std::unexpected(kvError(s, "KV create " + k)) : std::unexpected(msg.error()));
  const std::lock_guard lock(async.mutex);
  async.answered(1);
}

Status KvBucket::checkConnected(std::string_view what) const {
  if (connection_.connected()) return {};
  return fail(Errc::unavailable, std::string(what) + ": not connected to NATS");
}

Result<std::uint64_t> KvBucket::write(const std::string& key, std::string_view value, std::uint64_t expected,
                                      std::string_view what) {
  const std::string subject = "$KV." + bucket_ + "." + key;
  const std::string last = std::to_string(expected);
  const Headers headers{{kExpectedLastSubjectSequence, last}};
  const OutMessage message{.subject = subject, .reply = {}, .headers = &headers, .payload = value};
  auto ack = jsPublish(connection_, message, std::chrono::milliseconds(kJetStreamWait), what);
  if (!ack) return std::unexpected(ack.error());
  return ack->sequence;
}

Result<std::uint64_t> KvBucket::create(std::string_view key, std::string_view value) {
  if (auto ok = checkValueSize(value); !ok) return std::unexpected(ok.error());
  std::string k(key);
  if (!validKey(k)) return fail(Errc::invalid_argument, "KV create: invalid key \"" + k + "\"");
  if (auto ok = checkConnected("KV create " + k); !ok) return std::unexpected(ok.error());
  return created(k, value, write(k, value, 0, "KV create " + k));
}

Result<std::uint64_t> KvBucket::created(const std::string& k, std::string_view value, Result<std::uint64_t> written) {
  if (!written && written.error().code == Errc::wrong_revision) {
    // The key has a last message. kvStore_Create tells a delete or purge marker (created again
    // over it) from a value (exists); only this path pays for its extra round trips.
    std::uint64_t revision = 0;
    const natsStatus s = kvStore_Create(&revision, kv_, k.c_str(), value.data(), static_cast<int>(value.size()));
    if (s == NATS_OK) written = revision;
    else if (lostCompareAndSwap(s)) return fail(Errc::exists, "key " + k + " exists");
    else written = std::unexpected(kvError(s, "KV create " + k));
  }
  if (written) {
    index_->addSoon(k);
    return *written;
  }
  // On a replicated bucket a create whose answer was lost may have happened: ask the stream
  // leader.
  if (auto existing = get(k)) return fail(Errc::exists, "key " + k + " exists");
  return std::unexpected(written.error());
}

Result<std::uint64_t> KvBucket::updated(const std::string& k, std::uint64_t expected_revision,
                                        Result<std::uint64_t> written) {
  if (!written && written.error().code == Errc::wrong_revision) {
    return fail(Errc::wrong_revision,
                "key " + k + " is no longer at revision " + std::to_string(expected_revision));
  }
  return written;
}

std::vector<Result<std::uint64_t>> KvBucket::writeMany(std::span<const Write> writes) {
  if (writes.size() < 2) return KvStore::writeMany(writes);
  // Checked as create() and update() check them; the rest sent at once (on this thread's reply
  // inbox) and their PubAcks awaited together.
  std::vector<std::optional<Result<std::uint64_t>>> answers(writes.size());
  std::vector<std::uint64_t> numbers(writes.size(), 0);
  std::vector<std::string> keys(writes.size());
  std::vector<std::string> whats(writes.size());
  for (std::size_t i = 0; i < writes.size(); ++i) {
    const Write& w = writes[i];
    keys[i] = std::string(w.key);
    whats[i] = (w.expected_revision == 0 ? "KV create " : "KV update ") + keys[i];
    if (auto ok = checkValueSize(w.value); !ok) {
      answers[i] = std::unexpected(ok.error());
    } else if (!validKey(keys[i])) {
      answers[i] = fail(Errc::invalid_argument, whats[i].substr(0, 9) + ": invalid key \"" + keys[i] + "\"");
    } else if (auto connected = checkConnected(whats[i]); !connected) {
      answers[i] = std::unexpected(connected.error());
    } else {
      const std::string subject = "$KV." + bucket_ + "." + keys[i];
      const Headers headers{{kExpectedLastSubjectSequence, std::to_string(w.expected_revision)}};
      const OutMessage message{.subject = subject, .reply = {}, .headers = &headers, .payload = w.value};
      auto sent = connection_.send(message, whats[i]);
      if (sent) numbers[i] = *sent;
      else answers[i] = std::unexpected(sent.error());
    }
  }
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(kJetStreamWait);
  for (std::size_t i = 0; i < writes.size(); ++i) {
    if (numbers[i] == 0) continue;
    const auto left = std::max(std::chrono::milliseconds(1), std::chrono::duration_cast<std::chrono::milliseconds>(
                                                                 deadline - std::chrono::steady_clock::now()));
    bool no_responders = false;
    auto reply = connection_.awaitReply(numbers[i], left, whats[i], &no_responders);
    auto ack = readPubAck(std::move(reply), no_responders, whats[i]);
    answers[i] = ack ? Result<std::uint64_t>(ack->sequence) : std::unexpected(ack.error());
  }
  std::vector<Result<std::uint64_t>> out;
  out.reserve(writes.size());
  for (std::size_t i = 0; i < writes.size(); ++i) {
    if (numbers[i] == 0) {
      out.push_back(std::move(*answers[i]));
    } else if (writes[i].expected_revision == 0) {
      out.push_back(created(keys[i], writes[i].value, std::move(*answers[i])));
    } else {
      out.push_back(updated(keys[i], writes[i].expected_revision, std::move(*answers[i])));
    }
  }
  return out;
}

Result<KvEntry> KvBucket::get(std::string_view key) {
  std::string k(key);
  // As kvStore_Get does: a wildcard or an empty token would make the request's subject mean
  // something else than one key.
  if (!validKey(k)) return fail(Errc::invalid_argument, "KV get: invalid key \"" + k + "\"");
  if (auto ok = checkConnected("KV get " + k); !ok) return std::unexpected(ok.error());
  const std::string stream = "KV_" + bucket_;
  const std::string subject = "$KV." + bucket_ + "." + k;
  if (direct_gets_) {
    // One replica: whoever answers a direct get is the stream itself, so it has seen every
    // confirmed write, and a direct get costs the server and us far less than a leader read.
    // (What kvStore_Get does, as a request of ours: Connection::request, the answer straight to
    // this thread and freed here.)
    std::string body = R"({"last_by_subj":)";
    json::appendJsonString(body, subject);
    body += '}';
    bool no_responders = false;
    auto reply = connection_.request(OutMessage{.subject = "$JS.API.DIRECT.GET." + stream, .payload = body},
                                     std::chrono::milliseconds(kJetStreamWait), "KV get " + k, &no_responders);
    if (!reply) {
      if (no_responders) return fail(Errc::unavailable, "KV get " + k + ": no responders (stream " + stream + ")");
      return std::unexpected(reply.error());
    }
    return directGetAnswer(reply->get(), k);
  }
  // Read through the stream leader (STREAM.MSG.GET), not kvStore_Get: cnats 3.4.1 uses direct
  // gets on buckets that allow them, and on a replicated bucket a lagging replica answers
  // those (seen: 14-30 of 300 reads right after a create through another node missed the
  // key). The decisions read here must see every create that was confirmed.
  natsMsg* raw = nullptr;
  jsErrCode code = static_cast<jsErrCode>(0);
  const natsStatus s = js_GetLastMsg(&raw, connection_.js(), stream.c_str(), subject.c_str(), nullptr, &code);
  const OwnedNatsMsg msg(raw);
  if (s == NATS_NOT_FOUND) return fail(Errc::not_found, "key " + k + " not found");
  if (s != NATS_OK) return std::unexpected(kvError(s, "KV get " + k));
  return storedEntry(msg.get(), k, natsMsg_GetSequence(msg.get()));
}

std::vector<Result<KvEntry>> KvBucket::getMany(std::span<const std::string> keys) {
  if (!direct_gets_ || keys.size() < 2) return KvStore::getMany(keys);
  std::vector<std::optional<Result<KvEntry>>> answers(keys.size());
  const auto answered = [&] {
    std::vector<Result<KvEntry>> out;
    out.reserve(answers.size());
    for (auto& answer : answers) out.push_back(std::move(*answer));
    return out;
  };
  const auto answerAll = [&](const Error& error) {
    for (auto& answer : answers) {
      if (!answer) answer = std::unexpected(error);
    }
    return answered();
  };
  if (auto ok = checkConnected("KV get"); !ok) return answerAll(ok.error());
  // What js_DirectGetMsg asks for a key's last value, sent at once on this thread's reply inbox
  // and the answers awaited together (a late answer to one given up is dropped there; there is no
  // subscription of this call's own for it to race when it is freed).
  const std::string api = "$JS.API.DIRECT.GET.KV_" + bucket_ + ".$KV." + bucket_ + ".";
  std::vector<std::uint64_t> numbers(keys.size(), 0);
  for (std::size_t i = 0; i < keys.size(); ++i) {
    if (!validKey(keys[i])) {
      answers[i] = fail(Errc::invalid_argument, "KV get: invalid key \"" + keys[i] + "\"");
      continue;
    }
    const std::string subject = api + keys[i];
    auto sent = connection_.send(OutMessage{.subject = subject}, "KV get " + keys[i]);
    if (sent) numbers[i] = *sent;
    else answers[i] = std::unexpected(sent.error());
  }
  const auto deadline = std::chrono::steady_clock::now() + kDirectGetWait;
  for (std::size_t i = 0; i < keys.size(); ++i) {
    if (numbers[i] == 0) continue;
    const auto left = std::max(std::chrono::milliseconds(1), std::chrono::duration_cast<std::chrono::milliseconds>(
                                                                 deadline - std::chrono::steady_clock::now()));
    bool no_responders = false;
    auto reply = connection_.awaitReply(numbers[i], left, "KV get " + keys[i], &no_responders);
    if (reply) {
      answers[i] = directGetAnswer(reply->get(), keys[i]);
    } else if (no_responders) {
      answers[i] = fail(Errc::unavailable, "KV get " + keys[i] + ": no responders (stream KV_" + bucket_ + ")");
    } else {
      answers[i] = std::unexpected(std::move(reply.error()));
    }
  }
  return answered();
}

Result<std::uint64_t> KvBucket::update(std::string_view key, std::string_view value,
                                       std::uint64_t expected_revision) {
  std::string k(key);
  if (expected_revision == 0) {
    return fail(Errc::invalid_argument, "KV update " + k + ": expected revision 0 (use create)");
  }
  if (auto ok = checkValueSize(value); !ok) return std::unexpected(ok.error());
  if (!validKey(k)) return fail(Errc::invalid_argument, "KV update: invalid key \"" + k + "\"");
  if (auto ok = checkConnected("KV update " + k); !ok) return std::unexpected(ok.error());
  return updated(k, expected_revision, write(k, value, expected_revision, "KV update " + k));
}

void KvBucket::startWatcher() {
  std::call_once(index_->started, [this] {
    {
      const std::lock_guard lock(index_->mutex);
      index_->active = true;
    }
    index_->thread = std::thread([this] {
      pthread_setname_np(pthread_self(), "cs-kv-watch");
      lowerThreadPriority();
      watchKeys();
    });
  });
}

Status KvBucket::waitForIndex(std::unique_lock<std::mutex>& lock) {
  // The watcher's pass over the bucket is the listing: wait for it (a second pass at the same
  // time would double the work of the server, which on a large bucket is what is short).
  std::uint64_t delivered = index_->delivered;
  auto progress = KeyIndex::Clock::now();
  while (!index_->live) {
    if (index_->stopping) return fail(Errc::unavailable, "KV keys of " + bucket_ + ": stopping");
    if (!watchConnection().connected()) {
      return fail(Errc::unavailable, "KV keys of " + bucket_ + ": not connected to NATS");
    }
    index_->changed.wait_for(lock, std::chrono::milliseconds(200));
    const auto now = KeyIndex::Clock::now();
    if (index_->delivered != delivered) {
      delivered = index_->delivered;
      progress = now;
    } else if (now - progress > std::chrono::milliseconds(kListingWaitMs)) {
      return fail(Errc::timeout, "KV keys of " + bucket_ + ": the key watcher delivered nothing for " +
                                     std::to_string(kListingWaitMs / 1000) + " s (" + std::to_string(delivered) +
                                     " keys so far)");
    }
  }
  return {};
}

Status KvBucket::visitKeys(const KeyVisitor& visit) {
  startWatcher();
  {
    std::unique_lock lock(index_->mutex);
    if (auto ok = waitForIndex(lock); !ok) return ok;
    index_->drainLocked();
    if (!index_->fullListingDueLocked()) {
      index_->groups.forEach(visit);
      return {};
    }
  }
  return KvStore::visitKeys(visit);  // the age limit's check against a full listing is due
}

Result<KvStore::BusyVisit> KvBucket::visitBusyKeys(const KeyVisitor& visit, bool all) {
  startWatcher();
  {
    std::unique_lock lock(index_->mutex);
    if (auto ok = waitForIndex(lock); !ok) return std::unexpected(ok.error());
    index_->drainLocked();
    if (!index_->fullListingDueLocked()) return visitBusyGroups(index_->groups, visit, all);
    // What changes from here on is collected; the listing below (which also takes out what aged
    // out) is visited whole.
    index_->groups.restartChanges();
  }
  if (auto ok = KvStore::visitKeys(visit); !ok) {
    const std::lock_guard lock(index_->mutex);
    index_->groups.stopChanges();  // what changed before the listing is not known any more
    return std::unexpected(ok.error());
  }
  return BusyVisit{};
}

Result<std::vector<std::string>> KvBucket::keys() {
  startWatcher();
  {
    std::unique_lock lock(index_->mutex);
    if (auto ok = waitForIndex(lock); !ok) return std::unexpected(ok.error());
    index_->drainLocked();
    if (!index_->fullListingDueLocked()) {
      return index_->keysLocked();
    }
  }
  const std::lock_guard listing(index_->listing_mutex);
  {
    const std::lock_guard lock(index_->mutex);
    index_->listing = true;
    index_->added_while_listing.clear();
  }
  auto listed = listKeys();
  const std::lock_guard lock(index_->mutex);
  index_->listing = false;
  KeyIndex::Names added = std::move(index_->added_while_listing);
  index_->added_while_listing.clear();
  index_->drainLocked(&added);  // created while listing, or just before
  if (!listed) return listed;
  if (!index_->live) {
    // The watcher is being restarted: the listing is the answer.
    index_->dropRetired(*listed);
    return listed;
  }
  // An age limit removes keys without a delete: what the listing no longer has (and was not
  // written meanwhile) has aged out. Keys are added only by the watcher and our own creates,
  // so that retired groups stay out.
  const KeyIndex::Names present(listed->begin(), listed->end());
  for (const auto& key : index_->keysLocked()) {
    if (!present.contains(key) && !added.contains(key)) index_->eraseLocked(key);
  }
  index_->last_full = KeyIndex::Clock::now();
  return index_->keysLocked();
}

void KvBucket::retire(std::string_view group) { index_->retire(group); }

Result<std::vector<std::string>> KvBucket::groupKeys(std::string_view group, std::uint64_t through_revision) {
  {
    std::unique_lock lock(index_->mutex);
    const auto indexed = [&] {
      return index_->live && !index_->isRetired(group) && !index_->fullListingDueLocked();
    };
    // Past the wait without the revision, the index answers all the same (see kRevisionWait);
    // only an index that cannot answer at all lists the bucket.
    if (indexed()) {
      index_->waitForRevisionLocked(lock, through_revision);
      if (indexed()) {
        index_->drainLocked();
        return index_->groups.groupKeys(group);
      }
    }
  }
  return KvStore::groupKeys(group, through_revision);
}

Result<std::vector<std::string>> KvBucket::listKeys() {
  if (!watchConnection().connected()) return fail(Errc::unavailable, "KV keys of " + bucket_ + ": not connected to NATS");
  // No Timeout: with one set, cnats 3.4.1's kvStore_Keys gives up early on larger buckets
  // (nats-io/nats.c#916: failed from about 2,000 keys with 30 s); with none it listed 100k keys
  // in 1.1 s here.
  kvWatchOptions options;
  kvWatchOptions_Init(&options);
  // Where the bucket keeps one value per key, every message is a key's last: a consumer over
  // all of them lists the same keys, and nats-server creates it at once (one that delivers the
  // last message per key costs it tens of seconds over a million keys).
  options.IncludeHistory = one_value_per_key_;
  ++listings_;
  kvKeysList list{};
  natsStatus s = kvStore_Keys(&list, listing_kv_ != nullptr ? listing_kv_ : kv_, &options);
  std::vector<std::string> out;
  if (s == NATS_OK) {
    out.reserve(static_cast<std::size_t>(list.Count));
    for (int i = 0; i < list.Count; ++i) out.emplace_back(list.Keys[i]);
  }
  kvKeysList_Destroy(&list);
  // Older cnats versions report an empty bucket as "not found".
  if (s == NATS_NOT_FOUND) return out;
  if (s != NATS_OK) return std::unexpected(kvError(s, "KV keys of " + bucket_));
  return out;
}

}  // namespace countersign::natsio
