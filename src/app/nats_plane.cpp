#include "app/nats_plane.hpp"

namespace countersign::app {

Result<NatsPlane> openPlane(const Config& config, std::string_view name, bool send_asap,
                            bool with_store, Logger& log, const Clock& clock,
                            const std::string& chain_id, const nkeys::Signer* signer, WorkPool* timers,
                            RecentlySigned* signed_bodies) {
  NatsPlane plane;
  auto connection = natsio::Connection::connect(
      config.nats, name, send_asap, [&log](std::string_view line) { log.warn(line); },
      [&log](std::string_view line) { log.debug(line); });
  if (!connection) return std::unexpected(connection.error());
  plane.connection = std::move(*connection);
  plane.publisher = std::make_unique<natsio::NatsPublisher>(*plane.connection);
  if (with_store) {
    // The passes over the whole bucket (the key index's watcher, the list index, full listings)
    // on a connection of their own: they stream every key, and the server creates their
    // consumers on the asking connection's read loop. Not send_asap: it carries ordered
    // consumers (see Connection::connect).
    auto watch = natsio::Connection::connect(
        config.nats, std::string(name) + "-watch", false, [&log](std::string_view line) { log.warn(line); },
        [&log](std::string_view line) { log.debug(line); });
    if (!watch) return std::unexpected(watch.error());
    plane.watch_connection = std::move(*watch);
    auto store = natsio::KvBucket::open(*plane.connection, config.store, config.concurrency.holds, timers,
                                        plane.watch_connection.get());
    if (!store) return std::unexpected(store.error());
    plane.store = std::move(*store);
  }
  EventOptions events{.prefix = config.control.prefix,
                      .allowed_events = config.events.allowed,
                      .include_payload = config.events.include_payload,
                      .redact = config.events.redact,
                      .chained = config.audit.enabled,
                      .chain_id = chain_id + "-" + std::string(name),
                      .durable_decisions = config.audit.enabled,
                      .signer = signer,
                      .signer_name = "sign-" + std::string(name.substr(0, 4)),  // cs-sign-inta-0, cs-sign-cont-0
                      // The control connection's events are signed where they are decided (see
                      // EventOptions::sign_on_caller); the intake connection's on its own thread.
                      .sign_on_caller = with_store,
                      .signed_bodies = signed_bodies,
                      // The intake connection's events (denied, throttled, allowed) come from the
                      // routes' delivery threads, which may wait; the control connection's `held`
                      // events come from the store's answer thread, which must not.
                      .backpressure = !with_store};
  static RandomIdSource nonces;  // thread-safe, stateless: shared by every plane
  events.msg_id_nonces = &nonces;
  plane.events = std::make_unique<EventSink>(*plane.publisher, clock, log, std::move(events));
  return plane;
}

}  // namespace countersign::app
