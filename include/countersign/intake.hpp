// Intake (DESIGN.md section 5): decides one received job and acts on the decision: forward,
// refuse, throttle or hold. Thread-safe; called from the subscription's delivery thread.
#pragma once

#include <string>

#include "countersign/config.hpp"
#include "countersign/events.hpp"
#include "countersign/message.hpp"
#include "countersign/services.hpp"

namespace countersign {

// What intake did with one job (for the caller's metrics and for tests).
struct IntakeOutcome {
  std::string status;  // allowed, denied, throttled, approval_required, conflict, too_large,
                       // unavailable, unroutable
  int code = 0;
  std::string rule;
  std::string approval_id;
  bool forwarded = false;
  bool replied = false;
};

class Intake {
 public:
  explicit Intake(Services services);
  IntakeOutcome onJob(const RouteConfig& route, Message&& message);

 private:
  struct Job;
  IntakeOutcome decide(const RouteConfig& route, Message&& message);
  IntakeOutcome forward(const Job& job, std::string_view rule);
  IntakeOutcome hold(Job& job, const JobView& view, const Policy& policy, const Rule& rule);
  IntakeOutcome refuse(const Job& job, std::string_view status, int code, std::string body,
                       const Event& event);
  bool reply(const Job& job, std::string_view status, const std::string& body);

  Services s_;
  ReplyGuard guard_;
};

}  // namespace countersign
