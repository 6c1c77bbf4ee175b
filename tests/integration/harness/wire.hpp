// What the integration tests read off the wire and how they wait for it: headers by name, JSON
// bodies and countersign's replies, what a stream stores, polling with a deadline, and the
// configs and process sets the tests start. Only helpers used by two or more test files live here.
#pragma once

#include <rapidjson/document.h>

#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "integration/harness/harness.hpp"

namespace countersign::testing {

// ---- headers --------------------------------------------------------------------------------

// ASCII lower case (header names compare case-insensitively).
std::string lower(std::string_view text);
// Every value of every header whose name equals `name` in any ASCII case, in wire order.
std::vector<std::string> headerValues(const Message& msg, std::string_view name);
// The first of those values; "" when there is none.
std::string header(const Message& msg, std::string_view name);
// {value}: what headerValues() returns for a header present exactly once.
std::vector<std::string> one(std::string value);

// How many of `messages` arrived on exactly `subject`.
std::size_t countOn(const std::vector<Message>& messages, const std::string& subject);

// ---- JSON -----------------------------------------------------------------------------------

// Parses a JSON object; anything else fails the current test (ADD_FAILURE) and yields {}.
rapidjson::Document parseJson(const std::string& text);
// The same without failing the test, for bodies a test only probes (racing, polling).
rapidjson::Document parseJsonQuiet(const std::string& text);
// obj[key] as a string ("<missing>" when absent or not a string), as an integer (-1 when absent
// or not an integer), as a boolean (nullopt when absent or not a boolean).
std::string str(const rapidjson::Value& obj, const char* key);
std::int64_t num(const rapidjson::Value& obj, const char* key);
std::optional<bool> flag(const rapidjson::Value& obj, const char* key);

// A countersign reply: its JSON body, whose status the Countersign-Status header must repeat
// exactly once (toReply() checks that with EXPECT_EQ for every reply a test reads).
struct Reply {
  bool received = false;
  std::string raw;
  rapidjson::Document body;
  std::string status() const { return str(body, "status"); }
  std::int64_t code() const { return num(body, "code"); }
  std::string field(const char* key) const { return str(body, key); }
  std::int64_t number(const char* key) const { return num(body, key); }
  bool isTrue(const char* key) const { return flag(body, key).value_or(false); }
  bool has(const char* key) const { return body.IsObject() && body.HasMember(key); }
};
// No message fails the current test and yields an empty reply (received == false).
Reply toReply(const std::optional<Message>& msg);

// The snapshot `countersign policy check <file>` prints after "ok" (EXPECTs exit code 0 and "ok").
std::string policySnapshot(const std::filesystem::path& policy_file);

// ---- waiting --------------------------------------------------------------------------------

// Calls `done` every `poll` until it returns true or `timeout` has passed; true when it did.
bool waitUntil(const std::function<bool()>& done, std::chrono::milliseconds timeout,
               std::chrono::milliseconds poll = 100ms);

// COUNTERSIGN_SOAK=1: the long variants.
bool soak();

// ---- streams --------------------------------------------------------------------------------

struct StoredMessage {
  std::uint64_t sequence = 0;
  Message msg;
};
// Every message a stream stores, read one by one by sequence (STREAM.MSG.GET, answered by the
// leader). A stream that cannot be read fails the current test and yields {}.
std::vector<StoredMessage> readStream(Client& client, const std::string& stream);

// True when the durable consumer exists, has delivered everything and waits for no ack.
bool consumerSettled(Client& client, const std::string& stream, const std::string& durable);

// ---- configs and processes ------------------------------------------------------------------

// A countersign config with the one route agents.jobs.> -> jobs.> and no admin listener, so that
// replicas can share the machine. Blocks appear in the order nats, policy, store, routes,
// control, admin, release.
struct GatewayConfig {
  std::vector<std::string> servers;
  int store_replicas = 0;          // 0: no store block
  std::string mode = "core";       // the route's intake: core or jetstream
  std::string to_stream = "JOBS";  // "": no to_stream (no dedup of the release)
  bool control_block = false;      // writes `control: prefix: countersign`
  std::string lease;  // "": no release block; else replay_interval 200ms and this lease
};
std::string gatewayConfig(const GatewayConfig& config);

// `count` countersign processes started one after the other with the same options.
std::vector<std::unique_ptr<CountersignProcess>> startReplicas(int count,
                                                               const CountersignOptions& options);
// Polls the process's own output for "countersign ready" (the harness's readiness probe is
// answered by any replica of the queue group, which says nothing about this one).
bool saysReady(const CountersignProcess& process, std::chrono::milliseconds timeout,
               std::chrono::milliseconds poll = 100ms);

// One nats-server, a test client on it, and countersign with basicConfig() and `policy`.
struct Stack {
  std::unique_ptr<NatsServer> server;
  std::unique_ptr<Client> client;
  std::unique_ptr<CountersignProcess> countersign;

  static Stack start(const std::string& policy, NatsServerOptions server_options = {});
};

// Publishes an allowed marker job (the policy must allow knowledge.read) and waits until it
// reached the worker side (`jobs` must collect jobs.>), then 300 ms more: whatever countersign
// decided before the marker has had its chance to arrive. Used before asserting that something
// did NOT arrive.
void settle(Stack& s, Collector& jobs);

// ---- HTTP -----------------------------------------------------------------------------------

// One HTTP response as the tests see it.
struct HttpResponse {
  int status = 0;
  std::map<std::string, std::string> headers;  // lower-case names
  std::string body;

  std::string header(const std::string& name) const {
    const auto it = headers.find(name);
    return it == headers.end() ? std::string() : it->second;
  }
};

struct CurlRun {
  int exit_code = -1;  // 128 + signal when curl was killed by one
  std::string out;     // stdout: with -i, the heads and the body
};
// Runs the curl binary (no shell) as `curl -s -i --noproxy * --max-time <max_time_s> <args>`:
// proxies from the environment are ignored. nullopt (and a test failure) when curl cannot run.
std::optional<CurlRun> runCurl(const std::vector<std::string>& args, int max_time_s = 20);

// ---- sockets --------------------------------------------------------------------------------

// A loopback TCP port that nothing listens on right now (bound to port 0, read back, closed).
int freePort();

// Sends one HPUB with a raw header block (possibly malformed, as a careless or hostile producer
// can) over a bare protocol connection, and waits for the server's PONG so that it was processed.
void rawHeaderPublish(int port, const std::string& subject, const std::string& header_block,
                      const std::string& payload);

}  // namespace countersign::testing
