// `countersign policy check FILE` and `countersign policy explain FILE ...`.
#include <cstdio>
#include <iostream>

#include "client.hpp"
#include "commands.hpp"
#include "core/json_writer.hpp"
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

// {"ok": false, "error": "..."} on stdout for --json, the message on stderr otherwise.
int invalidFile(bool json, const std::string& message) {
  if (json) {
    detail::JsonObjectWriter w;
    w.field("ok", false).field("error", message);
    std::cout << w.finish() << '\n';
  } else {
    std::cerr << "countersign: " << message << '\n';
  }
  return kExitUsage;
}

int policyCheck(const std::string& file, bool json) {
  auto policy = Policy::loadFile(file);
  if (!policy) return invalidFile(json, policy.error().message);
  if (json) {
    detail::JsonObjectWriter w;
    w.field("ok", true).field("file", file).field("snapshot", (*policy)->snapshot());
    std::cout << w.finish() << '\n';
  } else {
    std::cout << "ok " << (*policy)->snapshot() << '\n';
  }
  return kExitOk;
}

int policyExplain(const ExplainOptions& options) {
  auto loaded = Policy::loadFile(options.file);
  if (!loaded) return invalidFile(options.json, loaded.error().message);
  const Policy& policy = **loaded;
  if (!subject::isValid(options.subject, false)) {
    std::cerr << "countersign: --subject: not a valid NATS subject: \"" << options.subject << "\"\n";
    return kExitUsage;
  }
  if (!subject::isValid(options.route_from, true)) {
    std::cerr << "countersign: --route-from: not a valid subject pattern: \"" << options.route_from << "\"\n";
    return kExitUsage;
  }
  const auto topic = subject::topicOf(options.route_from, options.subject);
  if (!topic) {
    std::cerr << "countersign: subject \"" << options.subject << "\" is not on route \""
              << options.route_from << "\" (use --route-from)\n";
    return kExitUsage;
  }
  Headers headers;
  for (const auto& text : options.headers) {
    std::string key, value;
    if (!splitKeyValue(text, key, value)) {
      std::cerr << "countersign: --header: expected K=V, got \"" << text << "\"\n";
      return kExitUsage;
    }
    headers.emplace_back(key, value);
  }
  Labels labels;
  for (const auto& text : options.labels) {
    std::string key, value;
    if (!splitKeyValue(text, key, value)) {
      std::cerr << "countersign: --label: expected K=V, got \"" << text << "\"\n";
      return kExitUsage;
    }
    labels[key] = value;
  }
  JobView job(options.subject, *topic, headers, options.payload, labels.empty() ? nullptr : &labels);
  const Explanation explanation = policy.explain(job);
  const std::string payload_kind = options.payload.empty() ? "" : job.payloadJson() != nullptr ? "json" : "bytes";
  if (options.json) {
    detail::JsonObjectWriter w;
    w.field("policy", policy.snapshot()).field("subject", options.subject).field("topic", *topic);
    w.optional("payload", payload_kind);
    w.key("trace");
    w.writer().StartArray();
    for (const auto& line : explanation.trace) w.writer().String(line.data(), static_cast<rapidjson::SizeType>(line.size()));
    w.writer().EndArray();
    w.field("decision", toString(explanation.verdict.decision)).field("rule", explanation.verdict.ruleId());
    std::cout << w.finish() << '\n';
    return kExitOk;
  }
  std::cout << "policy: " << policy.snapshot() << '\n'
            << "subject: " << options.subject << '\n'
            << "topic: " << *topic << '\n';
  if (!options.payload.empty()) {
    std::cout << "payload: " << (payload_kind == "json" ? "JSON" : "bytes (not strict JSON: payload and label conditions do not hold)") << '\n';
  }
  for (const auto& line : explanation.trace) std::cout << "  " << line << '\n';
  std::cout << "decision: " << toString(explanation.verdict.decision) << '\n'
            << "rule: " << explanation.verdict.ruleId() << '\n';
  return kExitOk;
}

// `run --check`: the config and its policy, without starting anything.
int configCheck(const RunOptions& options) {
  auto config = loadConfig(options.config_path, processEnvironment());
  if (!config) return invalidFile(options.json, config.error().message);
  auto policy = Policy::loadFile(config->policy.file);
  if (!policy) return invalidFile(options.json, policy.error().message);
  if (options.json) {
    detail::JsonObjectWriter w;
    w.field("ok", true)
        .field("config", options.config_path)
        .field("policy", config->policy.file)
        .field("snapshot", (*policy)->snapshot())
        .field("routes", static_cast<std::uint64_t>(config->routes.size()));
    std::cout << w.finish() << '\n';
  } else {
    std::cout << "ok config " << options.config_path << ", policy " << config->policy.file << " "
              << (*policy)->snapshot() << ", " << config->routes.size() << " route(s)\n";
  }
  return kExitOk;
}

}  // namespace countersign::cli
