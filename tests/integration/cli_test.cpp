// The countersign CLI as people who already use the `nats` CLI and kubectl expect it: --json on
// every command (each output parses), a suggestion for a mistyped command, the same exit code for
// the same outcome, aligned tables with the producer's job id, `watch` in words, `submit` on a
// JetStream route reporting the decision, a 409 that says what to do next, the `nats` CLI's
// connection options (user/password, nkey, context files), a permission refusal named as such,
// and no password ever printed. The real binary against a real nats-server.
#include <gtest/gtest.h>
#include <rapidjson/document.h>

#include <csignal>
#include <fstream>
#include <future>
#include <sstream>
#include <string>
#include <vector>

#include "countersign/nkeys.hpp"
#include "integration/harness/harness.hpp"
#include "integration/harness/wire.hpp"

namespace countersign::testing {
namespace {

constexpr const char* kPassword = "s3cr3t-Pa55w0rd-7f1c";
constexpr const char* kPayment = "agents.jobs.finance.payment.execute";

std::string payment(const std::string& id) {
  return R"({"id":")" + id + R"(","amount":10,"labels":{"env":"production"}})";
}

std::string both(const CommandResult& r) {
  return "exit " + std::to_string(r.exit_code) + "\nstdout: " + r.out + "\nstderr: " + r.err;
}

bool has(const std::string& text, const std::string& part) { return text.find(part) != std::string::npos; }

std::vector<std::string> lines(const std::string& text) {
  std::vector<std::string> out;
  std::istringstream in(text);
  for (std::string line; std::getline(in, line);) {
    if (!line.empty()) out.push_back(line);
  }
  return out;
}

// Every non-empty line of stdout is one JSON document (one line for most commands, one per
// event for `watch` and `audit ID`), and there is at least one.
void expectJsonLines(const CommandResult& r, const std::string& what) {
  const auto docs = lines(r.out);
  EXPECT_FALSE(docs.empty()) << what << ": no output; " << both(r);
  for (const auto& line : docs) {
    rapidjson::Document doc;
    doc.Parse(line.data(), line.size());
    EXPECT_FALSE(doc.HasParseError()) << what << ": not JSON: " << line;
    EXPECT_TRUE(doc.IsObject()) << what << ": not an object: " << line;
  }
}

std::string routeInJetStreamMode(std::string config) {
  const std::string to = "    to: \"jobs.>\"\n";
  config.replace(config.find(to), to.size(), to + "    mode: jetstream\n");
  return config;
}

class CliTest : public ::testing::Test {
 protected:
  void startAll(const std::string& extra_server_config = "", const std::string& gateway_url = "",
                bool jetstream_route = false) {
    server_ = NatsServer::start({.extra_config = extra_server_config});
    CountersignOptions options;
    const std::string url = gateway_url.empty() ? server_->url() : gateway_url;
    options.config_yaml = basicConfig(url);
    if (jetstream_route) options.config_yaml = routeInJetStreamMode(options.config_yaml);
    options.policy_yaml = seedPolicy();
    options.nats_url = url;
    gateway_ = CountersignProcess::start(options);
  }
  CommandResult cli(std::vector<std::string> args, const std::map<std::string, std::string>& env = {}) {
    args.push_back("--server");
    args.push_back(server_->url());
    return runCountersign(args, env);
  }

  std::unique_ptr<NatsServer> server_;
  std::unique_ptr<CountersignProcess> gateway_;
};

TEST_F(CliTest, EveryCommandsJsonOutputParses) {
  startAll();
  // watch runs beside the others and sees the first three events.
  auto watched = std::async(std::launch::async, [&] {
    return cli({"watch", "--json", "--count", "3", "--timeout-ms", "20000"});
  });
  std::this_thread::sleep_for(500ms);
  expectJsonLines(cli({"submit", kPayment, payment("pay-1"), "--json"}), "submit (held)");
  expectJsonLines(cli({"submit", kPayment, R"({"id":"pay-2"})", "--json"}), "submit (denied)");
  expectJsonLines(cli({"pending", "--json"}), "pending");
  expectJsonLines(cli({"show", "pay-1", "--json"}), "show");
  expectJsonLines(cli({"approve", "pay-1", "--json"}), "approve");
  expectJsonLines(cli({"approve", "pay-1", "--json"}), "approve again");
  expectJsonLines(cli({"submit", kPayment, payment("pay-3"), "--json"}), "submit (held)");
  expectJsonLines(cli({"reject", "pay-3", "--json"}), "reject");
  expectJsonLines(cli({"show", "nope", "--json"}), "show (404)");
  expectJsonLines(cli({"release", "pay-1", "--force", "--json"}), "release");
  expectJsonLines(cli({"audit", "pay-1", "--json"}), "audit ID");
  expectJsonLines(cli({"audit", "verify", "--key", gateway_->receiptKey(), "--json"}), "audit verify");
  const CommandResult watch = watched.get();
  EXPECT_EQ(watch.exit_code, 0) << both(watch);
  expectJsonLines(watch, "watch");
  EXPECT_EQ(lines(watch.out).size(), 3u) << watch.out;
  // A worker's check of the receipt an allowed job carries.
  auto receipt = std::async(std::launch::async, [&] {
    return cli({"receipt", "verify", "--key", gateway_->receiptKey(), "--subject", "jobs.>", "--timeout-ms", "20000",
                "--json"});
  });
  std::this_thread::sleep_for(500ms);
  Client producer(server_->url());
  producer.publish("agents.jobs.knowledge.read", R"({"id":"read-1"})");
  producer.flush();
  const CommandResult receipt_check = receipt.get();
  EXPECT_EQ(receipt_check.exit_code, 0) << both(receipt_check);
  expectJsonLines(receipt_check, "receipt verify");
  EXPECT_TRUE(has(receipt_check.out, "read-1") || has(receipt_check.out, "knowledge.read")) << receipt_check.out;

  TempDir dir;
  const std::string policy = dir.write("policy.yaml", seedPolicy()).string();
  const std::string config = dir.write("c.yaml", basicConfig(server_->url())).string();
  expectJsonLines(runCountersign({"policy", "check", policy, "--json"}), "policy check");
  expectJsonLines(runCountersign({"policy", "explain", policy, "--subject", kPayment, "--json"}), "policy explain");
  expectJsonLines(runCountersign({"run", "--config", config, "--check", "--json"}), "run --check");
  const std::string bad = dir.write("bad.yaml", "version: v1\nrules: 5\n").string();
  expectJsonLines(runCountersign({"policy", "check", bad, "--json"}), "policy check (invalid)");

  const CommandResult generated = runCountersign({"keys", "generate", "--json"});
  expectJsonLines(generated, "keys generate");
  EXPECT_TRUE(has(generated.out, R"("public_key":"U)") && has(generated.out, R"("seed":"SU)")) << generated.out;
  const std::string seed_file = (dir.path() / "alice.nk").string();
  const CommandResult written = runCountersign({"keys", "generate", "--out", seed_file, "--json"});
  expectJsonLines(written, "keys generate --out");
  std::string seed_text;
  std::getline(std::ifstream(seed_file), seed_text);
  ASSERT_TRUE(seed_text.starts_with("SU")) << seed_text;
  EXPECT_FALSE(has(written.out, seed_text) || has(written.out, R"("seed":)")) << "the seed goes to the file only: "
                                                                              << written.out;
  const CommandResult shown =
      runCountersign({"keys", "show", "--config", (gateway_->dir() / "countersign.yaml").string(), "--json"});
  expectJsonLines(shown, "keys show");
  EXPECT_TRUE(has(shown.out, gateway_->receiptKey())) << shown.out;
}

TEST_F(CliTest, MistypedCommandGetsASuggestion) {
  const CommandResult r = runCountersign({"aprove", "pay-1"});
  EXPECT_EQ(r.exit_code, 2) << both(r);
  EXPECT_TRUE(has(r.err, "Did you mean \"approve\"?")) << r.err;
  const CommandResult nested = runCountersign({"policy", "chek", "p.yaml"});
  EXPECT_EQ(nested.exit_code, 2) << both(nested);
  EXPECT_TRUE(has(nested.err, "Did you mean \"check\"?")) << nested.err;
  const CommandResult pend = runCountersign({"pendign"});
  EXPECT_TRUE(has(pend.err, "Did you mean \"pending\"?")) << pend.err;
}

TEST_F(CliTest, InvalidFileExitsTheSameInEveryCommand) {
  TempDir dir;
  dir.write("policy.yaml", "version: v1\nrules:\n  - id: a\n    decision: maybe\n");
  const std::string config = dir.write("c.yaml", basicConfig("nats://127.0.0.1:1")).string();
  const CommandResult check = runCountersign({"policy", "check", (dir.path() / "policy.yaml").string()});
  const CommandResult run_check = runCountersign({"run", "--config", config, "--check"});
  const CommandResult explain = runCountersign(
      {"policy", "explain", (dir.path() / "policy.yaml").string(), "--subject", kPayment});
  EXPECT_EQ(check.exit_code, 2) << both(check);
  EXPECT_EQ(run_check.exit_code, 2) << both(run_check);
  EXPECT_EQ(explain.exit_code, 2) << both(explain);
  EXPECT_TRUE(has(check.err, "rules[0].decision")) << check.err;
  EXPECT_TRUE(has(run_check.err, "rules[0].decision")) << run_check.err;
}

TEST_F(CliTest, PendingShowsJobIdsInAlignedColumns) {
  startAll();
  const std::string long_id = "invoice-2026-12-06-" + std::string(60, 'x');
  ASSERT_EQ(cli({"submit", kPayment, payment("p-1")}).exit_code, 0);
  ASSERT_EQ(cli({"submit", kPayment, payment(long_id)}).exit_code, 0);
  // A job id outside the approval-id characters: the approval id is derived, the job id shown.
  ASSERT_EQ(cli({"submit", kPayment, payment("order 42/x")}).exit_code, 0);
  const CommandResult r = cli({"pending"});
  ASSERT_EQ(r.exit_code, 0) << both(r);
  const auto rows = lines(r.out);
  ASSERT_EQ(rows.size(), 4u) << r.out;
  EXPECT_TRUE(rows[0].starts_with("ID ")) << rows[0];
  const auto state_col = rows[0].find("STATE");
  const auto job_col = rows[0].find("JOB ID");
  ASSERT_NE(state_col, std::string::npos);
  ASSERT_NE(job_col, std::string::npos);
  bool saw_derived = false;
  for (std::size_t i = 1; i < rows.size(); ++i) {
    EXPECT_EQ(rows[i].find("pending"), state_col) << "STATE column out of line:\n" << r.out;
    if (rows[i].starts_with("h-")) {
      saw_derived = true;
      EXPECT_EQ(rows[i].find("order 42/x"), job_col) << r.out;
    }
  }
  EXPECT_TRUE(saw_derived) << r.out;
  EXPECT_TRUE(has(r.out, long_id)) << r.out;

  // The audit trail's table too, with a long approver name.
  const std::string approver = "alice.with-a-rather-long-name@finance.example.com";
  ASSERT_EQ(cli({"approve", "p-1", "--as", approver, "--reason", "checked"}).exit_code, 0);
  const CommandResult trail = cli({"audit", "p-1", "--key", gateway_->receiptKey()});
  ASSERT_EQ(trail.exit_code, 0) << both(trail);
  const auto trail_rows = lines(trail.out);
  ASSERT_GE(trail_rows.size(), 3u) << trail.out;
  const auto reason_col = trail_rows[0].find("REASON");
  ASSERT_NE(reason_col, std::string::npos) << trail.out;
  bool saw_approved = false;
  for (const auto& row : trail_rows) {
    if (!has(row, " approved ")) continue;
    saw_approved = true;
    EXPECT_EQ(row.find("checked"), reason_col) << "REASON column out of line:\n" << trail.out;
    EXPECT_TRUE(has(row, approver)) << row;
  }
  EXPECT_TRUE(saw_approved) << trail.out;
}

TEST_F(CliTest, WatchTellsHeldApprovedReleasedInWords) {
  startAll();
  auto watched = std::async(std::launch::async, [&] {
    return cli({"watch", "--count", "3", "--timeout-ms", "20000"});
  });
  std::this_thread::sleep_for(500ms);
  ASSERT_EQ(cli({"submit", kPayment, payment("w-1")}).exit_code, 0);
  const CommandResult approved = cli({"approve", "w-1", "--as", "alice", "--reason", "checked"});
  ASSERT_EQ(approved.exit_code, 0) << both(approved);
  const CommandResult watch = watched.get();
  ASSERT_EQ(watch.exit_code, 0) << both(watch);
  const auto out = lines(watch.out);
  ASSERT_EQ(out.size(), 3u) << watch.out;
  EXPECT_TRUE(has(out[0], "held for approval under rule require-approval-prod-finance")) << out[0];
  EXPECT_TRUE(has(out[0], "w-1")) << out[0];
  EXPECT_TRUE(has(out[1], "approved by alice: checked")) << out[1];
  EXPECT_TRUE(has(out[2], "released to the workers")) << out[2];
}

TEST_F(CliTest, SubmitOnAJetStreamRouteReportsTheDecisionNotThePubAck) {
  server_ = NatsServer::start();
  CountersignOptions options;
  options.config_yaml = routeInJetStreamMode(basicConfig(server_->url()));
  options.policy_yaml = seedPolicy();
  options.nats_url = server_->url();
  gateway_ = CountersignProcess::start(options);

  const CommandResult held = cli({"submit", kPayment, payment("js-1"), "--json"});
  ASSERT_EQ(held.exit_code, 0) << both(held) << gateway_->logs();
  EXPECT_TRUE(has(held.out, R"("status":"approval_required")")) << held.out;
  EXPECT_TRUE(has(held.out, R"("approval_id":"js-1")")) << held.out;
  EXPECT_TRUE(has(held.out, R"("stream":"COUNTERSIGN_JOBS")")) << held.out;
  const CommandResult denied = cli({"submit", kPayment, R"({"id":"js-2"})"});
  EXPECT_EQ(denied.exit_code, 1) << both(denied);
  EXPECT_TRUE(has(denied.out, R"("status":"denied")")) << denied.out;
  const CommandResult allowed = cli({"submit", "agents.jobs.knowledge.read", R"({"id":"js-3"})"});
  EXPECT_EQ(allowed.exit_code, 0) << both(allowed);
  EXPECT_TRUE(has(allowed.out, R"("status":"allowed")")) << allowed.out;
}

TEST_F(CliTest, ConflictsSayWhatToDoNext) {
  startAll();
  ASSERT_EQ(cli({"submit", kPayment, payment("s-1")}).exit_code, 0);
  // A job that is not the one reviewed.
  const CommandResult changed = cli({"approve", "s-1", "--job-hash", "sha256:" + std::string(64, '0')});
  EXPECT_EQ(changed.exit_code, 1) << both(changed);
  EXPECT_TRUE(has(changed.err, "job_changed")) << changed.err;
  EXPECT_TRUE(has(changed.err, "do not approve it")) << changed.err;
  // A change of meaning in the policy (a new rule) gives a new snapshot: the approval under the
  // old one is not applied, and the CLI says what comes next.
  std::ofstream(gateway_->policyPath(), std::ios::app)
      << "  - id: also-allow-docs\n    when: { topic: docs.read }\n    decision: allow\n";
  gateway_->signal(SIGHUP);
  std::this_thread::sleep_for(1s);
  const CommandResult drift = cli({"approve", "s-1"});
  EXPECT_EQ(drift.exit_code, 1) << both(drift) << gateway_->logs();
  EXPECT_TRUE(has(drift.err, "snapshot_changed")) << drift.err;
  EXPECT_TRUE(has(drift.err, "approve or reject it again")) << drift.err;
  // Following the advice works: the job is bound to the policy in force now.
  const CommandResult again = cli({"approve", "s-1"});
  EXPECT_EQ(again.exit_code, 0) << both(again);
  const CommandResult twice = cli({"reject", "s-1"});
  EXPECT_EQ(twice.exit_code, 1) << both(twice);
  EXPECT_TRUE(has(twice.err, "says by whom and when")) << twice.err;
}

// ---- connecting as someone, and never printing their password ----------------------------

std::string authConfig(const std::string& nkey_public) {
  return std::string("authorization {\n  users: [\n") +
         "    { user: countersign, password: \"" + kPassword + "\" }\n" +
         "    { user: alice, password: \"" + kPassword + "\" }\n" +
         "    { nkey: " + nkey_public + " }\n" +
         "    { user: producer, password: \"" + kPassword +
         "\", permissions: { publish: [\"agents.jobs.>\"], subscribe: [\"_INBOX.>\"] } }\n" +
         "  ]\n}\n";
}

std::string withUser(const std::string& url, const std::string& user, const std::string& password) {
  return "nats://" + user + ":" + password + "@" + url.substr(std::string("nats://").size());
}

class CliAuthTest : public CliTest {
 protected:
  void SetUp() override {
    seed_ = nkeys::generateSeed();
    seed_file_ = (dir_.path() / "alice.nk").string();
    ASSERT_TRUE(nkeys::writeSeedFile(seed_file_, seed_));
    server_ = NatsServer::start({.extra_config = authConfig(nkeys::encodePublicKey(nkeys::publicKeyOf(seed_)))});
    CountersignOptions options;
    options.config_yaml = basicConfig("nats://127.0.0.1:1");  // the URL comes from the environment
    options.env["COUNTERSIGN_NATS_URL"] = withUser(server_->url(), "countersign", kPassword);
    options.policy_yaml = seedPolicy();
    options.nats_url = withUser(server_->url(), "countersign", kPassword);
    gateway_ = CountersignProcess::start(options);
  }
  // Runs a command and keeps everything it printed for the final grep.
  CommandResult run(const std::vector<std::string>& args, const std::map<std::string, std::string>& env = {}) {
    CommandResult r = runCountersign(args, env);
    printed_ += r.out + r.err;
    return r;
  }
  void TearDown() override {
    EXPECT_FALSE(has(printed_, kPassword)) << "a password was printed:\n" << printed_;
  }

  TempDir dir_;
  nkeys::Seed seed_{};
  std::string seed_file_;
  std::string printed_;
};

TEST_F(CliAuthTest, UserPasswordFlagsEnvironmentNkeyAndContextConnect) {
  const std::string url = server_->url();
  const CommandResult flags = run({"pending", "-s", url, "--user", "alice", "--password", kPassword});
  EXPECT_EQ(flags.exit_code, 0) << both(flags);
  const CommandResult env = run({"pending", "-s", url}, {{"NATS_USER", "alice"}, {"NATS_PASSWORD", kPassword}});
  EXPECT_EQ(env.exit_code, 0) << both(env);
  const CommandResult nkey = run({"pending", "-s", url, "--nkey", seed_file_});
  EXPECT_EQ(nkey.exit_code, 0) << both(nkey);

  // A `nats` CLI context, found where `nats context add` writes it.
  const std::filesystem::path config_home = dir_.path() / "xdg";
  std::filesystem::create_directories(config_home / "nats" / "context");
  std::ofstream(config_home / "nats" / "context" / "approver.json")
      << R"({"description":"","url":")" << url << R"(","user":"alice","password":")" << kPassword
      << R"(","creds":"","nkey":"","cert":"","key":"","ca":"","nsc":"","jetstream_domain":"","inbox_prefix":""})";
  const CommandResult context =
      run({"pending", "--context", "approver"}, {{"XDG_CONFIG_HOME", config_home.string()}});
  EXPECT_EQ(context.exit_code, 0) << both(context);
  const CommandResult nkey_context = [&] {
    std::ofstream(config_home / "nats" / "context" / "keyed.json")
        << R"({"url":")" << url << R"(","nkey":")" << seed_file_ << R"("})";
    return run({"pending", "--context", "keyed"}, {{"XDG_CONFIG_HOME", config_home.string()}});
  }();
  EXPECT_EQ(nkey_context.exit_code, 0) << both(nkey_context);
}

TEST_F(CliAuthTest, FailuresNeverPrintThePassword) {
  const std::string url = server_->url();
  // Wrong password in the URL, in flags, in the environment: refused, masked.
  const CommandResult in_url = run({"pending", "-s", withUser(url, "alice", std::string(kPassword) + "x")});
  EXPECT_EQ(in_url.exit_code, 3) << both(in_url);
  EXPECT_TRUE(has(in_url.err, "alice:***@")) << in_url.err;
  EXPECT_TRUE(has(in_url.err, "uthorization")) << in_url.err;
  EXPECT_EQ(run({"pending", "-s", url, "--user", "alice", "--password", std::string(kPassword) + "x"}).exit_code, 3);
  EXPECT_EQ(run({"show", "x", "-s", url}, {{"NATS_USER", "alice"}, {"NATS_PASSWORD", std::string(kPassword) + "y"}}).exit_code, 3);
  // No server at all, with the password in the URL (and a list of URLs).
  const CommandResult nothing = run({"approve", "x", "-s", "nats://alice:" + std::string(kPassword) + "@127.0.0.1:1"});
  EXPECT_EQ(nothing.exit_code, 3) << both(nothing);
  EXPECT_TRUE(has(nothing.err, "alice:***@127.0.0.1:1")) << nothing.err;
  run({"pending", "-s", "nats://a:" + std::string(kPassword) + "@127.0.0.1:1,nats://b:" + kPassword + "@127.0.0.1:2"});
  // Connected, but nobody answers on this prefix: "is countersign running?" names the server masked.
  const CommandResult no_answer = run({"pending", "--prefix", "elsewhere", "--timeout-ms", "500", "-s",
                                       withUser(url, "alice", kPassword)});
  EXPECT_EQ(no_answer.exit_code, 3) << both(no_answer);
  EXPECT_TRUE(has(no_answer.err, "is countersign running?")) << no_answer.err;
  EXPECT_TRUE(has(no_answer.err, "alice:***@")) << no_answer.err;
  // submit and watch connect the same way.
  run({"submit", kPayment, "{}", "-s", "nats://alice:" + std::string(kPassword) + "@127.0.0.1:1"});
  run({"watch", "--count", "1", "-s", "nats://alice:" + std::string(kPassword) + "@127.0.0.1:1"});
  // The gateway itself: a start failure and an invalid server URL.
  TempDir dir;
  dir.write("policy.yaml", seedPolicy());
  const std::string config = dir.write("c.yaml", basicConfig("nats://127.0.0.1:1")).string();
  const CommandResult start = run({"run", "--config", config},
                                  {{"COUNTERSIGN_NATS_URL", "nats://countersign:" + std::string(kPassword) + "@127.0.0.1:1"}});
  EXPECT_NE(start.exit_code, 0) << both(start);
  const CommandResult bad_url = run({"run", "--config", config, "--check"},
                                    {{"COUNTERSIGN_NATS_URL", "nats://countersign:" + std::string(kPassword) + " @x:1"}});
  EXPECT_EQ(bad_url.exit_code, 2) << both(bad_url);
  // The gateway's own log, with its password in COUNTERSIGN_NATS_URL.
  printed_ += gateway_->logs();
}

TEST_F(CliAuthTest, PermissionRefusedSaysPermissionNotTimeout) {
  const CommandResult r = run({"pending", "-s", server_->url(), "--user", "producer", "--password", kPassword,
                               "--timeout-ms", "1500"});
  EXPECT_EQ(r.exit_code, 1) << both(r);
  EXPECT_TRUE(has(r.err, "permission")) << r.err;
  EXPECT_TRUE(has(r.err, "countersign.control.list")) << r.err;
  EXPECT_FALSE(has(r.err, "Timeout")) << r.err;
}

// ---- TLS: the `nats` CLI's --tlsca/--tlscert/--tlskey, their variables and a context's ---------

// A CA, a server certificate for 127.0.0.1 and a client certificate (alice), made with the
// openssl command in `dir`.
void makeCertificates(const std::filesystem::path& dir) {
  const std::string d = dir.string();
  std::ofstream(dir / "server.ext") << "subjectAltName=IP:127.0.0.1\n";
  const std::string key = " -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes";
  const std::string script =
      "cd " + d + " && openssl req -x509" + key + " -keyout ca.key -out ca.pem -days 1 -subj /CN=test-ca" +
      " && openssl req" + key + " -keyout server.key -out server.csr -subj /CN=127.0.0.1" +
      " && openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 1 -extfile server.ext"
      " -out server.pem" +
      " && openssl req" + key + " -keyout client.key -out client.csr -subj /CN=alice" +
      " && openssl x509 -req -in client.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 1 -out client.pem";
  ASSERT_EQ(std::system(("(" + script + ") >/dev/null 2>&1").c_str()), 0) << script;
}

// nats-server requires TLS and a client certificate signed by the CA. countersign run connects with
// nats.tls; the CLI with the flags, the NATS_CA/NATS_CERT/NATS_KEY variables or a context; without
// a certificate the server refuses, and the CLI says so (exit 3).
TEST(CliTlsTest, RunAndTheCliConnectWithClientCertificates) {
  TempDir certs;
  makeCertificates(certs.path());
  const auto file = [&](const char* name) { return (certs.path() / name).string(); };
  auto server = NatsServer::start({.extra_config = "tls {\n  cert_file: \"" + file("server.pem") + "\"\n  key_file: \"" +
                                                   file("server.key") + "\"\n  ca_file: \"" + file("ca.pem") +
                                                   "\"\n  verify: true\n  timeout: 2\n}\n"});
  CountersignOptions options;
  std::string config = basicConfig(server->url());
  const std::string nats = "nats:\n";
  config.insert(config.find(nats) + nats.size(), "  tls:\n    ca: " + file("ca.pem") + "\n    cert: " +
                                                    file("client.pem") + "\n    key: " + file("client.key") + "\n");
  options.config_yaml = config;
  options.policy_yaml = seedPolicy();
  options.wait_ready = false;  // the harness's probe speaks no TLS: the banner says ready
  auto gateway = CountersignProcess::start(options);
  ASSERT_TRUE(saysReady(*gateway, 20s)) << gateway->logs();

  const std::string url = server->url();
  const CommandResult flags = runCountersign({"pending", "--json", "-s", url, "--tlsca", file("ca.pem"), "--tlscert",
                                              file("client.pem"), "--tlskey", file("client.key")});
  EXPECT_EQ(flags.exit_code, 0) << both(flags);
  EXPECT_TRUE(has(flags.out, R"("items")")) << flags.out;
  const CommandResult env = runCountersign(
      {"pending", "-s", url},
      {{"NATS_CA", file("ca.pem")}, {"NATS_CERT", file("client.pem")}, {"NATS_KEY", file("client.key")}});
  EXPECT_EQ(env.exit_code, 0) << both(env);
  const std::filesystem::path config_home = certs.path() / "xdg";
  std::filesystem::create_directories(config_home / "nats" / "context");
  std::ofstream(config_home / "nats" / "context" / "tls.json")
      << R"({"url":")" << url << R"(","ca":")" << file("ca.pem") << R"(","cert":")" << file("client.pem")
      << R"(","key":")" << file("client.key") << R"("})";
  const CommandResult context =
      runCountersign({"pending", "--context", "tls"}, {{"XDG_CONFIG_HOME", config_home.string()}});
  EXPECT_EQ(context.exit_code, 0) << both(context);

  // Only the CA: the server asks for a certificate and gets none.
  const CommandResult no_cert = runCountersign({"pending", "-s", url, "--tlsca", file("ca.pem")});
  EXPECT_EQ(no_cert.exit_code, 3) << both(no_cert);
  EXPECT_TRUE(has(no_cert.err, "cannot connect to NATS")) << no_cert.err;
  EXPECT_TRUE(has(no_cert.err, "check --tlsca, --tlscert and --tlskey")) << no_cert.err;
  // No TLS options: the server's certificate is not trusted.
  const CommandResult plain = runCountersign({"pending", "-s", url});
  EXPECT_EQ(plain.exit_code, 3) << both(plain);
  EXPECT_TRUE(has(plain.err, "SSL")) << plain.err;
  EXPECT_TRUE(has(plain.err, "check --tlsca, --tlscert and --tlskey")) << plain.err;
  // A certificate without its key is a usage error, named.
  const CommandResult half = runCountersign({"pending", "-s", url, "--tlscert", file("client.pem")});
  EXPECT_EQ(half.exit_code, 2) << both(half);
  EXPECT_TRUE(has(half.err, "--tlscert and --tlskey go together")) << half.err;
  EXPECT_EQ(gateway->stop(), 0);
}

}  // namespace
}  // namespace countersign::testing

namespace countersign::testing {
namespace {

// On a machine that already runs NATS the embedded default (config/countersign.yaml, as shipped,
// its port set to the running server's) cannot bind its port: it says so, and how to use the
// running server instead, and exits 3.
TEST(DropInDefaultsTest, EmbeddedServerOnATakenPortSaysHowToUseTheRunningOne) {
  auto existing = NatsServer::start();
  TempDir dir;
  dir.write("policy.yaml", seedPolicy());
  std::ifstream in(std::filesystem::path(COUNTERSIGN_SOURCE_DIR) / "config" / "countersign.yaml");
  std::ostringstream shipped;
  shipped << in.rdbuf();
  std::string text = shipped.str();
  const std::string policy = "file: ../policies/approval-policy.yaml";
  ASSERT_NE(text.find(policy), std::string::npos) << text;
  text.replace(text.find(policy), policy.size(), "file: policy.yaml");
  ASSERT_NE(text.find("embedded: true"), std::string::npos) << text;
  const std::string config = dir.write("c.yaml", text).string();
  const CommandResult r = runCountersign({"run", "--config", config},
                                         {{"COUNTERSIGN_NATS_URL", existing->url()},
                                          {"COUNTERSIGN_DATA_DIR", (dir.path() / "data").string()},
                                          {"COUNTERSIGN_ADMIN_LISTEN", ""}});
  EXPECT_EQ(r.exit_code, 3) << both(r);
  // One plain line beside the JSON log lines, naming the address and what to do.
  std::vector<std::string> plain;
  for (const auto& line : lines(r.err)) {
    if (!line.starts_with("{\"ts\":")) plain.push_back(line);
  }
  ASSERT_EQ(plain.size(), 1u) << r.err;
  EXPECT_TRUE(plain[0].starts_with("countersign: embedded nats-server did not start: nats-server "
                                   "cannot listen on 127.0.0.1:" + std::to_string(existing->port())))
      << plain[0];
  EXPECT_TRUE(has(plain[0], "The port is taken")) << plain[0];
  EXPECT_TRUE(has(plain[0], "nats.embedded: false")) << plain[0];
}

}  // namespace
}  // namespace countersign::testing
