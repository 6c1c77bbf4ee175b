#include "nats/child_process.hpp"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <rapidjson/document.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <deque>
#include <fstream>
#include <thread>

extern char** environ;

namespace countersign::natsio {
namespace {

std::string errnoText(int error) {
  return std::strerror(error);
}

// Owns a file descriptor in the parent.
class Fd {
 public:
  explicit Fd(int fd = -1) : fd_(fd) {}
  ~Fd() { reset(); }
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
  int get() const { return fd_; }
  void reset(int fd = -1) {
    if (fd_ >= 0) ::close(fd_);
    fd_ = fd;
  }

 private:
  int fd_;
};

Result<int> openOutput(const std::string& path) {
  const char* target = path.empty() ? "/dev/null" : path.c_str();
  int fd = ::open(target, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
  if (fd < 0) return fail(Errc::io, "cannot open " + std::string(target) + ": " + errnoText(errno));
  return fd;
}

// Everything below runs in the forked child of a possibly multi-threaded parent: only
// async-signal-safe calls, no allocation. On failure, the errno goes back through `report`.
[[noreturn]] void childFail(int report) {
  int error = errno;
  ssize_t ignored = ::write(report, &error, sizeof error);
  (void)ignored;
  ::_exit(127);
}

void closeInheritedDescriptors(int keep, int max_fd) {
  // close_range exists since Linux 5.9; fall back to a loop on older kernels. keep >= 10.
  bool done = true;
  if (::close_range(3, static_cast<unsigned>(keep - 1), 0) != 0) done = false;
  if (done && ::close_range(static_cast<unsigned>(keep + 1), ~0U, 0) != 0) done = false;
  if (done) return;
  for (int fd = 3; fd < max_fd; ++fd) {
    if (fd != keep) ::close(fd);
  }
}

[[noreturn]] void runChild(pid_t parent, int death_signal, int report, int out_fd, int err_fd,
                           int null_fd, const char* working_dir, const char* path,
                           char* const* argv, char* const* envp, int max_fd) {
  if (::prctl(PR_SET_PDEATHSIG, death_signal) != 0) childFail(report);
  // The parent may have died between fork and prctl: then nobody would send the signal.
  if (::getppid() != parent) ::_exit(127);
  if (::setpgid(0, 0) != 0) childFail(report);

  sigset_t none;
  sigemptyset(&none);
  if (::sigprocmask(SIG_SETMASK, &none, nullptr) != 0) childFail(report);
  struct sigaction dfl {};
  dfl.sa_handler = SIG_DFL;
  sigemptyset(&dfl.sa_mask);
  for (int sig = 1; sig < NSIG; ++sig) {
    if (sig != SIGKILL && sig != SIGSTOP) ::sigaction(sig, &dfl, nullptr);
  }

  // A parent started with stdio closed may hold these very descriptors in 0..2: move them out
  // of the way first, so that the dup2s below cannot clobber one another.
  report = ::fcntl(report, F_DUPFD_CLOEXEC, 10);
  if (report < 0) ::_exit(127);
  null_fd = ::fcntl(null_fd, F_DUPFD_CLOEXEC, 10);
  out_fd = ::fcntl(out_fd, F_DUPFD_CLOEXEC, 10);
  err_fd = ::fcntl(err_fd, F_DUPFD_CLOEXEC, 10);
  if (null_fd < 0 || out_fd < 0 || err_fd < 0) childFail(report);
  if (::dup2(null_fd, STDIN_FILENO) < 0) childFail(report);
  if (::dup2(out_fd, STDOUT_FILENO) < 0) childFail(report);
  if (::dup2(err_fd, STDERR_FILENO) < 0) childFail(report);
  closeInheritedDescriptors(report, max_fd);
  if (working_dir != nullptr && ::chdir(working_dir) != 0) childFail(report);
  ::execve(path, argv, envp);
  childFail(report);
}

std::vector<char*> pointers(std::vector<std::string>& strings) {
  std::vector<char*> result;
  result.reserve(strings.size() + 1);
  for (auto& text : strings) result.push_back(text.data());
  result.push_back(nullptr);
  return result;
}

}  // namespace

Result<std::string> findExecutable(const std::string& name) {
  if (name.empty()) return fail(Errc::invalid_argument, "empty program name");
  if (name.find('/') != std::string::npos) {
    if (::access(name.c_str(), X_OK) != 0) {
      return fail(Errc::not_found, name + ": " + errnoText(errno));
    }
    return name;
  }
  const char* path_env = std::getenv("PATH");
  std::string search = path_env != nullptr ? path_env : "/usr/local/bin:/usr/bin:/bin";
  std::size_t start = 0;
  while (start <= search.size()) {
    std::size_t end = search.find(':', start);
    if (end == std::string::npos) end = search.size();
    std::string dir = search.substr(start, end - start);
    if (dir.empty()) dir = ".";
    std::string candidate = dir + "/" + name;
    struct stat info {};
    if (::stat(candidate.c_str(), &info) == 0 && S_ISREG(info.st_mode) &&
        ::access(candidate.c_str(), X_OK) == 0) {
      return candidate;
    }
    start = end + 1;
  }
  return fail(Errc::not_found, name + ": not found on PATH");
}

Result<pid_t> spawnProcess(const SpawnOptions& options) {
  if (options.argv.empty()) return fail(Errc::invalid_argument, "spawn: empty argv");
  auto path = findExecutable(options.argv.front());
  if (!path) return std::unexpected(path.error());

  // Prepare everything the child needs before fork: it must not allocate.
  std::vector<std::string> argv_strings = options.argv;
  std::vector<char*> argv = pointers(argv_strings);
  std::vector<std::string> env_strings;
  if (options.env) {
    env_strings = *options.env;
  } else {
    for (char** entry = environ; entry != nullptr && *entry != nullptr; ++entry) {
      env_strings.emplace_back(*entry);
    }
  }
  std::vector<char*> envp = pointers(env_strings);

  auto out = openOutput(options.stdout_path);
  if (!out) return std::unexpected(out.error());
  Fd out_fd(*out);
  Fd err_fd;
  if (options.stderr_path == options.stdout_path) {
    err_fd.reset(::fcntl(out_fd.get(), F_DUPFD_CLOEXEC, 0));
  } else {
    auto err = openOutput(options.stderr_path);
    if (!err) return std::unexpected(err.error());
    err_fd.reset(*err);
  }
  if (err_fd.get() < 0) return fail(Errc::io, "spawn: dup failed: " + errnoText(errno));
  Fd null_fd(::open("/dev/null", O_RDONLY | O_CLOEXEC));
  if (null_fd.get() < 0) return fail(Errc::io, "cannot open /dev/null: " + errnoText(errno));

  int report_pipe[2];
  if (::pipe2(report_pipe, O_CLOEXEC) != 0) {
    return fail(Errc::io, "spawn: pipe failed: " + errnoText(errno));
  }
  Fd report_read(report_pipe[0]);
  Fd report_write(report_pipe[1]);

  struct rlimit limit {};
  int max_fd = 1024;
  if (::getrlimit(RLIMIT_NOFILE, &limit) == 0 && limit.rlim_cur != RLIM_INFINITY) {
    max_fd = static_cast<int>(std::min<rlim_t>(limit.rlim_cur, 65536));
  }
  const char* working_dir = options.working_dir.empty() ? nullptr : options.working_dir.c_str();

  pid_t parent = ::getpid();
  pid_t pid = ::fork();
  if (pid < 0) return fail(Errc::io, "fork failed: " + errnoText(errno));
  if (pid == 0) {
    runChild(parent, options.death_signal, report_write.get(), out_fd.get(), err_fd.get(),
             null_fd.get(), working_dir, path->c_str(), argv.data(), envp.data(), max_fd);
  }

  report_write.reset();
  int child_error = 0;
  ssize_t got;
  do {
    got = ::read(report_read.get(), &child_error, sizeof child_error);
  } while (got < 0 && errno == EINTR);
  if (got > 0) {
    // exec did not happen: the child exits with 127, reap it.
    (void)waitProcess(pid, std::chrono::seconds(5));
    return fail(Errc::io, "cannot start " + *path + ": " + errnoText(child_error));
  }
  return pid;
}

std::optional<int> waitProcess(pid_t pid, std::chrono::milliseconds timeout) {
  auto deadline = std::chrono::steady_clock::now() + timeout;
  auto pause = std::chrono::milliseconds(1);
  for (;;) {
    int status = 0;
    pid_t done = ::waitpid(pid, &status, WNOHANG);
    if (done == pid) {
      if (WIFEXITED(status)) return WEXITSTATUS(status);
      if (WIFSIGNALED(status)) return 128 + WTERMSIG(status);
      return -1;
    }
    if (done < 0 && errno != EINTR) return -1;
    if (std::chrono::steady_clock::now() >= deadline) return std::nullopt;
    std::this_thread::sleep_for(pause);
    pause = std::min(pause * 2, std::chrono::milliseconds(20));
  }
}

int stopProcess(pid_t pid, std::chrono::milliseconds grace) {
  if (pid <= 0) return -1;
  ::kill(pid, SIGTERM);
  if (auto status = waitProcess(pid, grace)) return *status;
  ::kill(pid, SIGKILL);
  return waitProcess(pid, std::chrono::seconds(30)).value_or(-1);
}

std::optional<int> readNatsPortsFile(const std::filesystem::path& dir, pid_t pid) {
  std::error_code ec;
  const std::string suffix = "_" + std::to_string(pid) + ".ports";
  for (const auto& entry : std::filesystem::directory_iterator(dir, ec)) {
    const std::string name = entry.path().filename().string();
    if (name.size() <= suffix.size() ||
        name.compare(name.size() - suffix.size(), suffix.size(), suffix) != 0) {
      continue;
    }
    std::ifstream in(entry.path());
    std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    rapidjson::Document doc;
    // The server may still be writing it: an incomplete file is "not yet".
    if (doc.Parse(text.c_str()).HasParseError() || !doc.IsObject()) return std::nullopt;
    auto urls = doc.FindMember("nats");
    if (urls == doc.MemberEnd() || !urls->value.IsArray() || urls->value.Empty() ||
        !urls->value[0].IsString()) {
      return std::nullopt;
    }
    std::string url = urls->value[0].GetString();
    std::size_t colon = url.rfind(':');
    if (colon == std::string::npos) return std::nullopt;
    try {
      return std::stoi(url.substr(colon + 1));
    } catch (...) {
      return std::nullopt;
    }
  }
  return std::nullopt;
}

bool tcpConnects(const std::string& host, int port) {
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  addrinfo* found = nullptr;
  if (::getaddrinfo(host.c_str(), std::to_string(port).c_str(), &hints, &found) != 0) {
    return false;
  }
  bool ok = false;
  for (addrinfo* ai = found; ai != nullptr && !ok; ai = ai->ai_next) {
    int fd = ::socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC, ai->ai_protocol);
    if (fd < 0) continue;
    ok = ::connect(fd, ai->ai_addr, ai->ai_addrlen) == 0;
    ::close(fd);
  }
  ::freeaddrinfo(found);
  return ok;
}

std::string tailFile(const std::filesystem::path& path, std::size_t lines) {
  std::ifstream in(path);
  std::deque<std::string> last;
  std::string line;
  while (std::getline(in, line)) {
    last.push_back(line);
    if (last.size() > lines) last.pop_front();
  }
  std::string text;
  for (const auto& kept : last) text += kept + "\n";
  return text;
}

}  // namespace countersign::natsio
