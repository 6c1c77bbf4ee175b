// Fuzz target for control request bodies (approve, reject, get, list and the operator's release),
// decided by the real core on in-memory fakes with two held jobs: `pay-1` (no timeout) and
// `restart-1` (10 s). The first input byte picks the operation (and whether the clock moves past
// the timeouts first), the rest is the body. Every answer is a status with valid JSON naming
// that status, and the same request answered twice never delivers a job twice.
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <memory>
#include <string>
#include <string_view>

#include "countersign/control.hpp"
#include "countersign/events.hpp"
#include "countersign/intake.hpp"
#include "countersign/json.hpp"
#include "countersign/releaser.hpp"
#include "countersign/wire_names.hpp"
#include "unit/fakes.hpp"

namespace {

using namespace countersign;
using namespace std::chrono_literals;

void check(bool condition) {
  if (!condition) std::abort();
}

constexpr const char* kPolicy = R"(version: v1
rules:
  - id: pay
    when: { topic: finance.payment.execute }
    decision: require_human
  - id: restart
    when: { topic: ops.restart }
    decision: require_human
    timeout: 10s
)";

std::shared_ptr<const Policy> policy() {
  static const std::shared_ptr<const Policy> parsed = [] {
    auto loaded = Policy::parse(kPolicy, "fuzz");
    check(loaded.has_value());
    return *loaded;
  }();
  return parsed;
}

void checkReply(const ControlReply& reply) {
  check(reply.code >= 200 && reply.code <= 599);
  auto body = json::parseStrict(reply.body);
  check(body.has_value() && body->IsObject());
  const auto status = body->FindMember("status");
  check(status != body->MemberEnd() && status->value.IsString() &&
        wireName(reply.status) == status->value.GetString());
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size == 0) return 0;
  const unsigned selector = data[0];
  const std::string_view body(reinterpret_cast<const char*>(data) + 1, size - 1);

  Config config;
  config.routes.push_back(RouteConfig{.name = "jobs", .from = "agents.jobs.>", .to = "jobs.>"});
  fakes::MemoryKv kv;
  fakes::CapturingPublisher publisher;
  fakes::ManualClock clock;
  fakes::SequentialIds ids;
  NullLogger log;
  Metrics metrics;
  Throttler throttler;
  PolicyHolder holder(policy());
  EventSink events(publisher, clock, log, EventOptions{});
  const Services services{config, kv, publisher, clock, ids, holder, throttler, events, log, metrics};
  Intake intake(services);
  Releaser releaser(services);
  Control control(services, releaser);

  const auto hold = [&](const std::string& topic, const std::string& payload) {
    const auto outcome =
        intake.onJob(config.routes[0], Message{"agents.jobs." + topic, "_INBOX.p", {}, payload});
    check(outcome.status == Outcome::approval_required);
  };
  hold("finance.payment.execute", R"({"id":"pay-1","amount":10})");
  hold("ops.restart", R"({"id":"restart-1"})");
  if (selector & 0x80) clock.advance(1h);

  for (int round = 0; round < 2; ++round) {
    switch (selector % 5) {
      case 0: checkReply(control.handle(ControlOp::approve, body)); break;
      case 1: checkReply(control.handle(ControlOp::reject, body)); break;
      case 2: checkReply(control.handle(ControlOp::get, body)); break;
      case 3: checkReply(control.handle(ControlOp::list, body)); break;
      default: checkReply(control.operatorRelease(body)); break;
    }
    check(publisher.on("jobs.finance.").size() <= 1 && publisher.on("jobs.ops.").size() <= 1);
  }
  return 0;
}
