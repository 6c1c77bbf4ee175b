#include "app/endpoint.hpp"

#include <memory>
#include <utility>

#include "nats/js_ingress.hpp"
#include "nats/subscriber.hpp"

namespace countersign::app {
namespace {

class SubscriptionEndpoint final : public Endpoint {
 public:
  explicit SubscriptionEndpoint(std::unique_ptr<natsio::Subscription> sub) : sub_(std::move(sub)) {}
  std::string name() const override { return "subscription " + sub_->subject(); }
  void drain(std::chrono::milliseconds timeout) override { (void)sub_->drain(timeout); }
  std::uint64_t dropped() const override { return sub_->dropped(); }

 private:
  std::unique_ptr<natsio::Subscription> sub_;
};

class IngressEndpoint final : public Endpoint {
 public:
  IngressEndpoint(std::unique_ptr<natsio::JetStreamIngress> ingress, std::string name)
      : ingress_(std::move(ingress)), name_(std::move(name)) {}
  std::string name() const override { return name_; }
  void drain(std::chrono::milliseconds) override { ingress_->stop(); }
  std::string problem() const override { return ingress_->stalled(); }
  std::optional<std::pair<std::string, natsio::IngressStats>> ingressStats() const override {
    return std::make_pair(ingress_->options().stream, ingress_->stats());
  }

 private:
  std::unique_ptr<natsio::JetStreamIngress> ingress_;
  std::string name_;
};

Result<std::unique_ptr<Endpoint>> wrap(Result<std::unique_ptr<natsio::Subscription>> sub,
                                       const std::string& subject) {
  if (!sub) return fail(sub.error().code, "cannot subscribe to " + subject + ": " + sub.error().message);
  return std::make_unique<SubscriptionEndpoint>(std::move(*sub));
}

}  // namespace

Result<std::unique_ptr<Endpoint>> subscribeToExecutor(natsio::Connection& connection,
                                                      const std::string& subject,
                                                      const std::string& queue, WorkPool& executor,
                                                      std::function<void(Message&&)> handler,
                                                      std::string thread_name) {
  auto shared = std::make_shared<std::function<void(Message&&)>>(std::move(handler));
  return wrap(natsio::Subscription::subscribe(connection, subject, queue,
                                              [&executor, shared](Message&& m) {
                                                executor.post("", [shared, m = std::move(m)]() mutable {
                                                  (*shared)(std::move(m));
                                                });
                                              },
                                              {}, std::move(thread_name)),
              subject);
}

Result<std::unique_ptr<Endpoint>> subscribeInline(natsio::Connection& connection,
                                                  const std::string& subject,
                                                  const std::string& queue,
                                                  std::function<void(Message&&)> handler,
                                                  std::string thread_name) {
  return wrap(natsio::Subscription::subscribe(connection, subject, queue, std::move(handler), {},
                                              std::move(thread_name)),
              subject);
}

Result<std::unique_ptr<Endpoint>> subscribeShedding(natsio::Connection& connection, const std::string& subject,
                                                    const std::string& queue, std::function<void(Message&&)> handler,
                                                    int shed_above, std::function<void(Message&&)> on_shed,
                                                    std::string thread_name) {
  return wrap(natsio::Subscription::subscribe(connection, subject, queue, std::move(handler), {}, std::move(thread_name),
                                              {.above = shed_above, .on_shed = std::move(on_shed)}),
              subject);
}

std::unique_ptr<Endpoint> ingressEndpoint(std::unique_ptr<natsio::JetStreamIngress> ingress,
                                          std::string name) {
  return std::make_unique<IngressEndpoint>(std::move(ingress), std::move(name));
}

}  // namespace countersign::app
