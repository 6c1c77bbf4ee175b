#include "integration/harness/wire.hpp"

#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <sstream>
#include <stdexcept>
#include <thread>

#include "nats/message_convert.hpp"

extern char** environ;

namespace countersign::testing {

// ---- headers --------------------------------------------------------------------------------

std::string lower(std::string_view text) {
  std::string out(text);
  for (char& c : out) {
    if (c >= 'A' && c <= 'Z') c = static_cast<char>(c - 'A' + 'a');
  }
  return out;
}

std::vector<std::string> headerValues(const Message& msg, std::string_view name) {
  std::vector<std::string> out;
  const std::string wanted = lower(name);
  for (const auto& [key, value] : msg.headers) {
    if (lower(key) == wanted) out.push_back(value);
  }
  return out;
}

std::string header(const Message& msg, std::string_view name) {
  auto values = headerValues(msg, name);
  return values.empty() ? std::string() : values.front();
}

std::vector<std::string> one(std::string value) {
  return {std::move(value)};
}

std::size_t countOn(const std::vector<Message>& messages, const std::string& subject) {
  std::size_t n = 0;
  for (const auto& m : messages) n += m.subject == subject ? 1 : 0;
  return n;
}

// ---- JSON -----------------------------------------------------------------------------------

rapidjson::Document parseJsonQuiet(const std::string& text) {
  rapidjson::Document doc;
  doc.Parse(text.c_str(), text.size());
  if (doc.HasParseError() || !doc.IsObject()) doc.SetObject();
  return doc;
}

rapidjson::Document parseJson(const std::string& text) {
  rapidjson::Document doc;
  doc.Parse(text.c_str(), text.size());
  if (doc.HasParseError() || !doc.IsObject()) {
    ADD_FAILURE() << "not a JSON object: " << text;
    doc.SetObject();
  }
  return doc;
}

std::string str(const rapidjson::Value& obj, const char* key) {
  if (!obj.IsObject() || !obj.HasMember(key) || !obj[key].IsString()) return "<missing>";
  return obj[key].GetString();
}

std::int64_t num(const rapidjson::Value& obj, const char* key) {
  if (!obj.IsObject() || !obj.HasMember(key) || !obj[key].IsInt64()) return -1;
  return obj[key].GetInt64();
}

std::optional<bool> flag(const rapidjson::Value& obj, const char* key) {
  if (!obj.IsObject() || !obj.HasMember(key) || !obj[key].IsBool()) return std::nullopt;
  return obj[key].GetBool();
}

Reply toReply(const std::optional<Message>& msg) {
  Reply reply;
  reply.body.SetObject();
  if (!msg) {
    ADD_FAILURE() << "no reply from countersign";
    return reply;
  }
  reply.received = true;
  reply.raw = msg->payload;
  reply.body = parseJson(msg->payload);
  EXPECT_EQ(headerValues(*msg, "Countersign-Status"), one(reply.status()))
      << "Countersign-Status header must equal the body's status; body: " << msg->payload;
  return reply;
}

std::string policySnapshot(const std::filesystem::path& policy_file) {
  CommandResult result = runCountersign({"policy", "check", policy_file.string()});
  EXPECT_EQ(result.exit_code, 0) << result.out << result.err;
  std::istringstream in(result.out);
  std::string ok, snapshot;
  in >> ok >> snapshot;
  EXPECT_EQ(ok, "ok") << result.out;
  return snapshot;
}

// ---- waiting --------------------------------------------------------------------------------

bool waitUntil(const std::function<bool()>& done, std::chrono::milliseconds timeout,
               std::chrono::milliseconds poll) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  for (;;) {
    if (done()) return true;
    if (std::chrono::steady_clock::now() >= deadline) return false;
    std::this_thread::sleep_for(poll);
  }
}

bool soak() {
  const char* value = std::getenv("COUNTERSIGN_SOAK");
  return value != nullptr && std::string(value) == "1";
}

// ---- streams --------------------------------------------------------------------------------

std::vector<StoredMessage> readStream(Client& client, const std::string& stream) {
  std::vector<StoredMessage> out;
  jsStreamInfo* info = nullptr;
  jsErrCode js_error{};
  natsStatus s = js_GetStreamInfo(&info, client.js(), stream.c_str(), nullptr, &js_error);
  if (s != NATS_OK) {
    ADD_FAILURE() << "stream info " << stream << ": " << natsStatus_GetText(s);
    return out;
  }
  const std::uint64_t first = info->State.FirstSeq;
  const std::uint64_t last = info->State.LastSeq;
  jsStreamInfo_Destroy(info);
  for (std::uint64_t seq = first; seq <= last && last > 0; ++seq) {
    natsMsg* raw = nullptr;
    s = js_GetMsg(&raw, client.js(), stream.c_str(), seq, nullptr, &js_error);
    natsio::NatsMsgPtr owned(raw);
    if (s == NATS_NOT_FOUND) continue;
    if (s != NATS_OK) {
      ADD_FAILURE() << stream << " seq " << seq << ": " << natsStatus_GetText(s);
      continue;
    }
    if (auto converted = natsio::fromNatsMsg(raw)) {
      out.push_back(StoredMessage{seq, std::move(*converted)});
    }
  }
  return out;
}

bool consumerSettled(Client& client, const std::string& stream, const std::string& durable) {
  jsConsumerInfo* consumer = nullptr;
  jsErrCode js_error{};
  if (js_GetConsumerInfo(&consumer, client.js(), stream.c_str(), durable.c_str(), nullptr,
                         &js_error) != NATS_OK) {
    return false;
  }
  const bool settled = consumer->NumPending == 0 && consumer->NumAckPending == 0;
  jsConsumerInfo_Destroy(consumer);
  return settled;
}

// ---- configs and processes ------------------------------------------------------------------

std::string gatewayConfig(const GatewayConfig& config) {
  std::string servers;
  for (const auto& url : config.servers) {
    servers += (servers.empty() ? "\"" : ", \"") + url + "\"";
  }
  std::string text =
      "nats:\n"
      "  servers: [" +
      servers +
      "]\n"
      "policy:\n"
      "  file: policy.yaml\n";
  if (config.store_replicas > 0) {
    text +=
        "store:\n"
        "  bucket: countersign_approvals\n"
        "  replicas: " +
        std::to_string(config.store_replicas) + "\n";
  }
  text +=
      "routes:\n"
      "  - name: jobs\n"
      "    from: \"agents.jobs.>\"\n"
      "    to: \"jobs.>\"\n"
      "    mode: " +
      config.mode + "\n";
  if (!config.to_stream.empty()) text += "    to_stream: " + config.to_stream + "\n";
  if (config.control_block) {
    text +=
        "control:\n"
        "  prefix: countersign\n";
  }
  text +=
      "admin:\n"
      "  listen: \"\"\n";
  if (!config.lease.empty()) {
    text +=
        "release:\n"
        "  replay_interval: 200ms\n"
        "  lease: " +
        config.lease + "\n";
  }
  return text;
}

std::vector<std::unique_ptr<CountersignProcess>> startReplicas(int count,
                                                               const CountersignOptions& options) {
  std::vector<std::unique_ptr<CountersignProcess>> replicas;
  for (int i = 0; i < count; ++i) replicas.push_back(CountersignProcess::start(options));
  return replicas;
}

bool saysReady(const CountersignProcess& process, std::chrono::milliseconds timeout,
               std::chrono::milliseconds poll) {
  return waitUntil([&] { return process.logs().find("countersign ready") != std::string::npos; },
                   timeout, poll);
}

Stack Stack::start(const std::string& policy, NatsServerOptions server_options) {
  Stack s;
  s.server = NatsServer::start(std::move(server_options));
  s.client = std::make_unique<Client>(s.server->url());
  CountersignOptions options;
  options.config_yaml = basicConfig(s.server->url());
  options.policy_yaml = policy;
  options.nats_url = s.server->url();
  s.countersign = CountersignProcess::start(options);
  return s;
}

void settle(Stack& s, Collector& jobs) {
  static int counter = 0;
  const std::string marker = "marker-" + std::to_string(++counter);
  s.client->publish("agents.jobs.knowledge.read", marker);
  s.client->flush();
  const auto deadline = std::chrono::steady_clock::now() + 10s;
  bool seen = false;
  while (!seen && std::chrono::steady_clock::now() < deadline) {
    for (const auto& m : jobs.waitFor(jobs.count() + 1, 200ms)) seen |= m.payload == marker;
  }
  ASSERT_TRUE(seen) << "the allowed marker job never reached jobs.knowledge.read";
  std::this_thread::sleep_for(300ms);
}

// ---- HTTP -----------------------------------------------------------------------------------

std::optional<CurlRun> runCurl(const std::vector<std::string>& args, int max_time_s) {
  std::vector<std::string> argv{
      "curl", "-s", "-i", "--noproxy", "*", "--max-time", std::to_string(max_time_s)};
  argv.insert(argv.end(), args.begin(), args.end());
  std::vector<char*> raw;
  for (auto& a : argv) raw.push_back(a.data());
  raw.push_back(nullptr);

  int fds[2];
  if (::pipe(fds) != 0) {
    ADD_FAILURE() << "pipe: " << std::strerror(errno);
    return std::nullopt;
  }
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_adddup2(&actions, fds[1], STDOUT_FILENO);
  posix_spawn_file_actions_addclose(&actions, fds[0]);
  posix_spawn_file_actions_addclose(&actions, fds[1]);
  pid_t pid = -1;
  const int spawned = ::posix_spawnp(&pid, "curl", &actions, nullptr, raw.data(), environ);
  posix_spawn_file_actions_destroy(&actions);
  ::close(fds[1]);
  CurlRun run;
  if (spawned == 0) {
    char buffer[4096];
    ssize_t n;
    while ((n = ::read(fds[0], buffer, sizeof buffer)) > 0) {
      run.out.append(buffer, static_cast<std::size_t>(n));
    }
  }
  ::close(fds[0]);
  if (spawned != 0) {
    ADD_FAILURE() << "cannot run curl: " << std::strerror(spawned);
    return std::nullopt;
  }
  int status = 0;
  ::waitpid(pid, &status, 0);
  run.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  return run;
}

// ---- sockets --------------------------------------------------------------------------------

int freePort() {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) throw std::runtime_error("socket");
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = 0;
  socklen_t len = sizeof(addr);
  if (::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0 ||
      ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) != 0) {
    ::close(fd);
    throw std::runtime_error("bind port 0");
  }
  ::close(fd);
  return ntohs(addr.sin_port);
}

void rawHeaderPublish(int port, const std::string& subject, const std::string& header_block,
                      const std::string& payload) {
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = htons(static_cast<uint16_t>(port));
  ASSERT_EQ(::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr), 0);
  std::string frame = "CONNECT {\"headers\":true,\"verbose\":false,\"pedantic\":false}\r\n";
  frame += "HPUB " + subject + " " + std::to_string(header_block.size()) + " " +
           std::to_string(header_block.size() + payload.size()) + "\r\n" + header_block + payload +
           "\r\nPING\r\n";
  ASSERT_EQ(::write(fd, frame.data(), frame.size()), static_cast<ssize_t>(frame.size()));
  std::string received;
  char buffer[4096];
  const auto deadline = std::chrono::steady_clock::now() + 5s;
  while (received.find("PONG") == std::string::npos &&
         std::chrono::steady_clock::now() < deadline) {
    ssize_t got = ::recv(fd, buffer, sizeof buffer, MSG_DONTWAIT);
    if (got > 0) {
      received.append(buffer, static_cast<std::size_t>(got));
    } else {
      std::this_thread::sleep_for(5ms);
    }
  }
  ::close(fd);
  ASSERT_NE(received.find("PONG"), std::string::npos) << received;
}

}  // namespace countersign::testing
