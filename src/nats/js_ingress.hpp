// JetStream intake (docs/configuration.md, docs/protocol.md, route mode `jetstream`): a durable pull consumer
// on a WorkQueue ingress stream, read by one fetch thread, acked after the intake decision.
#pragma once

#include <nats/nats.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "countersign/ingress_reuse.hpp"
#include "countersign/intake.hpp"
#include "countersign/message.hpp"
#include "countersign/result.hpp"
#include "nats/connection.hpp"

namespace countersign::natsio {

struct IngressOptions {
  std::string stream;                 // e.g. COUNTERSIGN_JOBS
  std::vector<std::string> subjects;  // the route's from pattern(s)
  std::string durable;                // e.g. countersign-jobs (shared by all replicas)
  int replicas = 1;
  std::chrono::milliseconds ack_wait{30000};
  int batch = 64;
  int max_ack_pending = 10000;
  // false (the default): acks are published and confirmed in bulk by one round trip after each
  // batch; true: every ack waits for the server's confirmation (natsMsg_AckSync). Either way an
  // ack is sent only after the handler returned, so a decision is durable before its ack; a
  // lost ack only means a redelivery after ack_wait, which intake deduplicates (the same job id
  // and hash make no second record; forwards carry Nats-Msg-Id countersign-in:<stream>:<seq>).
  // Trivial handler on the 2-vCPU test machine: ~33k msg/s async, ~4k msg/s confirmed (see the
  // top of js_ingress.cpp).
  bool confirm_each_ack = false;
  // One step of the fetch loop (a fetch, one handler call, an ack flush, a JetStream API
  // request) that takes longer than this makes stalled() report the loop as stuck in it.
  std::chrono::milliseconds stuck_after{30000};
  // Where the stream's regressions are recorded (the approval bucket; see
  // countersign/ingress_reuse.hpp). nullptr: none are, and forwards always carry the plain
  // countersign-in:<stream>:<seq>, which a regression can make the target stream drop.
  KvStore* reuse_store = nullptr;
};

// Returns the ack decision for one message; called on the ingress thread, in stream order.
// The message's reply is cleared (it was the JetStream ack subject). The handler must not
// destroy or stop its own JetStreamIngress. An exception from it is caught: the message is
// NAKed (redelivered after a second) and the loop goes on.
using IngressHandler = std::function<IntakeOutcome(Message&&, const IngressPosition&)>;

// Counters for metrics and tests; each is monotonic.
struct IngressStats {
  std::uint64_t handled = 0;       // handler calls that returned
  std::uint64_t acked = 0;         // acks sent (and confirmed, with confirm_each_ack)
  std::uint64_t naked = 0;         // NAKs sent (handler's nak, exceptions, unread at stop)
  std::uint64_t terminated = 0;    // Terms sent (handler's term, malformed messages)
  std::uint64_t malformed = 0;     // messages whose header block cannot be parsed: terminated
  std::uint64_t ack_failures = 0;  // acks/NAKs/Terms the server did not take (redelivered later)
  std::uint64_t fetch_errors = 0;  // fetches that failed for another reason than no messages
  std::uint64_t rebinds = 0;       // stream/consumer re-created or subscription re-bound
  std::uint64_t stalls = 0;        // stalls found: fetches found nothing while the consumer had
                                   // jobs, or the consumer was past the end of its stream
  std::uint64_t recreated = 0;     // consumers deleted and created again (past the stream's end,
                                   // or after a regression of the stream's sequence)
  std::uint64_t regressions = 0;   // regressions of the stream's sequence found (each recorded
                                   // before a job on a reused sequence is taken)
};

class JetStreamIngress {
 public:
  // Creates the stream if missing (file storage, WorkQueue retention, the given subjects; if it
  // exists with other subjects or retention, fails with Errc::invalid_argument naming both
  // rather than editing it), creates the durable pull consumer if missing (explicit ack,
  // deliver all, ack_wait, max_ack_pending, max_deliver unlimited; an existing consumer is used
  // as it is), binds a pull subscription to it, and starts one fetch thread. Never deletes the
  // consumer (not on stop, not on error). Errc::invalid_argument for bad options,
  // Errc::unavailable / Errc::timeout when JetStream does not answer.
  //
  // After start, environment failures never end the loop: while the connection is down it
  // waits (250 ms doubling to 2 s) and tries again; if the stream or the consumer disappeared
  // (a server restarted without its store) they are created again and the subscription is
  // bound again. While fetches come back empty it checks the consumer every 2 s: a consumer
  // with jobs waiting that this ingress is not given gets a new pull subscription, and a
  // consumer whose delivered stream sequence is past the stream's last sequence (the stream's
  // sequence went back after a server crash, so every new job would be skipped) is deleted and
  // created again. That and a regression found after a reconnect (below) are the only cases where
  // the ingress deletes a consumer.
  //
  // After every reconnect to another server instance (a restarted server has a new id), before
  // fetching again, it looks for a regression of the stream's sequence: the stream's last
  // sequence below what its consumer delivered or this ingress handled, or another message on
  // the highest sequence this ingress handled. One found is recorded in options.reuse_store
  // before any job is taken (fetching waits while it cannot be, and while the check gets no
  // answers), and the consumer is created again so that it delivers the jobs it would skip; jobs
  // on the reused sequences then carry the recorded epoch in their forward id. The Connection
  // must outlive the ingress.
  static Result<std::unique_ptr<JetStreamIngress>> start(Connection& connection,
                                                         IngressOptions options,
                                                         IngressHandler handler, Logger log);
  ~JetStreamIngress();  // stop()
  JetStreamIngress(const JetStreamIngress&) = delete;
  JetStreamIngress& operator=(const JetStreamIngress&) = delete;

  // Stops fetching, finishes the message in hand (its ack is sent), NAKs the rest of the
  // fetched batch so that another replica gets them at once, flushes the acks, and ends the
  // subscription (unsubscribed, a round trip, freed: Connection::retire; the durable consumer is
  // kept, as cnats deletes only consumers that its own subscribe call created). Idempotent and
  // thread-safe; waits for the fetch thread: normally at most one fetch wait (500 ms) plus the
  // handler in hand, a few seconds more if the connection drops during a flush or a consumer
  // check. Not from the handler. Stop the ingress before closing its Connection.
  void stop();

  IngressStats stats() const;
  const IngressOptions& options() const { return options_; }
  // Not empty while the ingress takes nothing although jobs wait (for readiness), one reason
  // per line: its consumer has jobs waiting and fetches find nothing (cleared when a fetch brings
  // messages again), its consumer is past the end of its stream (cleared once re-created), or
  // one step of the fetch loop has taken longer than stuck_after (computed when asked, so it is
  // reported even while the fetch thread is blocked).
  std::string stalled() const;

 private:
  struct Counters {
    std::atomic<std::uint64_t> handled{0}, acked{0}, naked{0}, terminated{0}, malformed{0},
        ack_failures{0}, fetch_errors{0}, rebinds{0}, stalls{0}, recreated{0}, regressions{0};
  };
  // What the fetch thread is doing, for the stuck-step report.
  enum class Step { waiting, fetching, handling, flushing, checking, setting_up };
  // RAII: the fetch thread is in `step` until this goes out of scope.
  class InStep {
   public:
    InStep(JetStreamIngress& self, Step step, std::uint64_t sequence = 0);
    ~InStep();
    InStep(const InStep&) = delete;
    InStep& operator=(const InStep&) = delete;

   private:
    JetStreamIngress& self_;
  };

  JetStreamIngress(Connection& connection, IngressOptions options, IngressHandler handler,
                   Logger log);

  Status ensureStream();
  Status ensureConsumer();
  Status bind();
  Status setUp();  // ensureStream + ensureConsumer + bind
  void run();
  void handleBatch(natsMsgList& list);
  void handleOne(natsMsg* msg);
  IntakeOutcome callHandler(Message&& message, const IngressPosition& position);
  void settle(natsMsg* msg, const IntakeOutcome& outcome, std::uint64_t sequence);
  void flushAcks();
  void onFetchError(natsStatus status, jsErrCode js_error);
  void checkWhileIdle();
  // After a reconnect, before fetching: finds a regression of the stream's sequence.
  void checkAfterReconnect();
  // Records a regression (when a store is given) and, once recorded, re-creates the consumer.
  // False while it could not be recorded: nothing may be taken until it is. `covered_by`: the
  // epoch of a recorded regression that already accounts for it (nothing is recorded).
  bool regressionFound(const std::string& what, std::int64_t consumer_created, std::uint64_t delivered,
                       std::uint64_t last, bool recreate = true, std::optional<std::uint64_t> covered_by = {});
  std::string connectedServer() const;  // the id of the server instance connected to
  void recreateConsumer(std::int64_t created, std::uint64_t delivered, std::uint64_t last);
  void reloadReuse();
  void setStalled(std::string reason);
  // Consumer info; nullptr with `gone` set when the stream or consumer does not exist.
  struct ConsumerState {
    bool gone = false;
    bool known = false;  // info was read
    std::uint64_t pending = 0;  // messages not yet delivered to anyone
    std::int64_t ack_pending = 0;
    std::int64_t max_ack_pending = 0;
    std::uint64_t delivered_stream = 0;  // last stream sequence delivered to anyone
    std::int64_t created = 0;            // when this consumer was created (tells re-creations apart)
  };
  ConsumerState consumerState();
  std::optional<std::uint64_t> streamLastSequence();  // nullopt when it cannot be read
  // When the message at `sequence` was stored; nullopt when there is none (or it cannot be read).
  std::optional<std::int64_t> storedAt(std::uint64_t sequence);
  bool consumerIsGone();
  bool sleepUnlessStopping(std::chrono::milliseconds delay);
  // Ends sub_ (if any) safely and keeps the consumer.
  void endSubscription();
  void log(const std::string& line) const;

  Connection& connection_;
  IngressOptions options_;
  IngressHandler handler_;
  Logger log_;

  natsSubscription* sub_ = nullptr;  // touched only by start() and then the fetch thread
  bool need_setup_ = false;          // fetch thread: set up stream/consumer/sub again
  bool degraded_ = false;            // fetch thread: last fetch failed (log transitions only)
  std::size_t unflushed_acks_ = 0;   // fetch thread: acks published since the last flush
  // fetch thread: when messages last came or the consumer was last seen to exist
  std::chrono::steady_clock::time_point last_verified_ = std::chrono::steady_clock::now();
  int idle_checks_with_pending_ = 0;  // fetch thread: idle checks in a row that saw jobs waiting
  int idle_checks_past_end_ = 0;      // fetch thread: idle checks in a row that saw the consumer
                                      // past the stream's last sequence
  std::unique_ptr<IngressReuse> reuse_;  // with options.reuse_store
  std::uint64_t highest_handled_ = 0;      // fetch thread: highest stream sequence handed to the handler
  std::int64_t highest_handled_ns_ = 0;    // fetch thread: when the stream stored that message
  std::string server_seen_;                // fetch thread: the server id the last check was made on
  bool check_pending_ = false;             // fetch thread: the check after a reconnect has not had its
                                           // answers, or found a regression not yet recorded: fetch nothing
  bool reload_reuse_ = true;               // fetch thread: read the regressions before the next batch
  std::chrono::steady_clock::time_point reuse_loaded_{};  // fetch thread: when last read
  Counters counters_;
  mutable std::mutex stalled_mutex_;
  std::string stalled_;  // see stalled()
  Step step_ = Step::waiting;  // under stalled_mutex_: what the fetch thread does, since when
  std::uint64_t step_sequence_ = 0;
  std::chrono::steady_clock::time_point step_since_ = std::chrono::steady_clock::now();

  std::mutex stop_mutex_;  // serialises stop() calls
  std::mutex mutex_;
  std::condition_variable wake_;
  bool stopping_ = false;
  std::atomic<bool> stop_requested_{false};
  std::thread thread_;
};

}  // namespace countersign::natsio
