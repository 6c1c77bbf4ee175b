// `countersign policy check FILE` and `countersign policy explain FILE ...`.
#include <cstdio>
#include <iostream>

#include "commands.hpp"
#include "countersign/policy.hpp"
#include "countersign/subject.hpp"

namespace countersign::cli {
namespace {

bool splitKeyValue(const std::string& text, std::string& key, std::string& value) {
  const auto eq = text.find('=');
  if (eq == std::string::npos || eq == 0) return false;
  key = text.substr(0, eq);
  value = text.substr(eq + 1);
  return true;
}

}  // namespace

int policyCheck(const std::string& file) {
  auto policy = Policy::loadFile(file);
  if (!policy) {
    std::cerr << "countersign: " << policy.error().message << '\n';
    return 1;
  }
  std::cout << "ok " << (*policy)->snapshot() << '\n';
  return 0;
}

int policyExplain(const ExplainOptions& options) {
  auto loaded = Policy::loadFile(options.file);
  if (!loaded) {
    std::cerr << "countersign: " << loaded.error().message << '\n';
    return 1;
  }
  const Policy& policy = **loaded;
  if (!subject::isValid(options.subject, false)) {
    std::cerr << "countersign: --subject: not a valid NATS subject: \"" << options.subject << "\"\n";
    return 2;
  }
  if (!subject::isValid(options.route_from, true)) {
    std::cerr << "countersign: --route-from: not a valid subject pattern: \"" << options.route_from << "\"\n";
    return 2;
  }
  const auto topic = subject::topicOf(options.route_from, options.subject);
  if (!topic) {
    std::cerr << "countersign: subject \"" << options.subject << "\" is not on route \""
              << options.route_from << "\" (use --route-from)\n";
    return 2;
  }
  Headers headers;
  for (const auto& text : options.headers) {
    std::string key, value;
    if (!splitKeyValue(text, key, value)) {
      std::cerr << "countersign: --header: expected K=V, got \"" << text << "\"\n";
      return 2;
    }
    headers.emplace_back(key, value);
  }
  Labels labels;
  for (const auto& text : options.labels) {
    std::string key, value;
    if (!splitKeyValue(text, key, value)) {
      std::cerr << "countersign: --label: expected K=V, got \"" << text << "\"\n";
      return 2;
    }
    labels[key] = value;
  }
  JobView job(options.subject, *topic, headers, options.payload, labels.empty() ? nullptr : &labels);
  const Explanation explanation = policy.explain(job);
  std::cout << "policy: " << policy.snapshot() << '\n'
            << "subject: " << options.subject << '\n'
            << "topic: " << *topic << '\n';
  if (!options.payload.empty()) {
    std::cout << "payload: " << (job.payloadJson() != nullptr ? "JSON" : "bytes (not strict JSON: payload and label conditions do not hold)") << '\n';
  }
  for (const auto& line : explanation.trace) std::cout << "  " << line << '\n';
  std::cout << "decision: " << toString(explanation.verdict.decision) << '\n'
            << "rule: " << explanation.verdict.ruleId() << '\n';
  return 0;
}

}  // namespace countersign::cli
