// Child processes for the embedded nats-server (and the integration-test harness): spawn with
// fork+execve, wait with a deadline, stop with SIGTERM then SIGKILL. POSIX/Linux only.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <csignal>
#include <filesystem>
#include <optional>
#include <string>
#include <vector>

#include "countersign/result.hpp"

namespace countersign::natsio {

struct SpawnOptions {
  // argv[0] is a path (contains '/') or a name searched on PATH.
  std::vector<std::string> argv;
  // "NAME=value" entries; nullopt: the child inherits this process's environment.
  std::optional<std::vector<std::string>> env;
  std::string working_dir;  // empty: this process's working directory
  // Files the child's stdout / stderr are appended to (created if missing); empty: /dev/null.
  // The same path for both gives one interleaved file.
  std::string stdout_path;
  std::string stderr_path;
  // Sent to the child when the thread that spawned it exits (PR_SET_PDEATHSIG), so that no
  // child outlives a crashed parent. Linux ties this to the spawning *thread*: spawn from a
  // thread that lives as long as the child should (main, in countersign).
  int death_signal = SIGTERM;
};

// Starts the child in its own process group (a terminal's Ctrl-C reaches only the parent, which
// decides when the child stops), with default signal dispositions, an empty signal mask, stdin
// on /dev/null and every other inherited descriptor closed. Fails if the program cannot be
// executed (the exec error is reported back through a close-on-exec pipe).
Result<pid_t> spawnProcess(const SpawnOptions& options);

// Waits for the child to exit and reaps it. Returns its status the way a shell shows it: the
// exit code, or 128 + the signal that killed it. nullopt: still running after `timeout`
// (0 polls once). A pid that is not our child gives -1.
std::optional<int> waitProcess(pid_t pid, std::chrono::milliseconds timeout);

// SIGTERM, waits up to `grace`, then SIGKILL and waits. Returns the exit status as above.
int stopProcess(pid_t pid, std::chrono::milliseconds grace);

// Resolves a program name like execvp would (PATH search; names with '/' are taken as is).
Result<std::string> findExecutable(const std::string& name);

// The client port from nats-server's ports file in `dir` (written by --ports_file_dir as
// <executable>_<pid>.ports, JSON {"nats":["nats://host:port"], ...}); nullopt while missing.
std::optional<int> readNatsPortsFile(const std::filesystem::path& dir, pid_t pid);

// True when a TCP connection to host:port succeeds right now.
bool tcpConnects(const std::string& host, int port);

// The last `lines` lines of a text file (empty if it cannot be read), for error messages.
std::string tailFile(const std::filesystem::path& path, std::size_t lines);

}  // namespace countersign::natsio
