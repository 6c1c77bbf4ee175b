// One NATS connection and what lives on it: its publisher, the store handle (on the connection
// that sends at once) and the event sink. The Gateway has two; the Slack bridge process one.
#pragma once

#include <memory>
#include <string>
#include <string_view>

#include "countersign/clock.hpp"
#include "countersign/config.hpp"
#include "countersign/events.hpp"
#include "countersign/log.hpp"
#include "countersign/result.hpp"
#include "nats/connection.hpp"
#include "nats/kv_bucket.hpp"
#include "nats/nats_publisher.hpp"

namespace countersign::app {

struct NatsPlane {
  // Declared in start order: the events use the publisher, which uses the connection.
  std::unique_ptr<natsio::Connection> connection;
  std::unique_ptr<natsio::NatsPublisher> publisher;
  // with_store only: the store's passes over the whole bucket (and the list index's watcher)
  std::unique_ptr<natsio::Connection> watch_connection;
  std::unique_ptr<natsio::KvBucket> store;  // with_store only
  std::unique_ptr<EventSink> events;
};

// Connects (connection name "<nats.name>-<name>"), opens the store bucket when `with_store`
// (with a second connection, "<nats.name>-<name>-watch", for its passes over the whole bucket)
// (checking that JetStream answers and that an existing bucket has the configured max_age) and
// builds the event sink for the audit chain "<chain_id>-<name>", its events signed by `signer`
// (countersign's own key) on a thread of its own. Connection events are logged
// through `log`: a disconnect at warn, except while the plane is being closed on purpose (debug).
// `timers`: the executor whose timer answers the store's creates that get no PubAck (null: the
// store's own thread).
Result<NatsPlane> openPlane(const Config& config, std::string_view name, bool send_asap,
                            bool with_store, Logger& log, const Clock& clock,
                            const std::string& chain_id, const nkeys::Signer* signer, WorkPool* timers = nullptr,
                            RecentlySigned* signed_bodies = nullptr);

}  // namespace countersign::app
