// wbfs message: dm-writeboost's `dmsetup message` words for a mount.
#include <signal.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <thread>

#include "cli/commands.h"
#include "cli/command_line.h"
#include "cli/control.h"
#include "wbfs/tunables.h"

namespace wbfs::cli {
namespace {

volatile sig_atomic_t g_interrupted = 0;
void OnInterrupt(int) { g_interrupted = 1; }

// Waits until no dirty block or pending discard remains, showing progress: a bar on a
// terminal, a plain line every 5 s otherwise. Ctrl-C stops the waiting,
// not the writeback. Replies are untrusted input: one that is not a status
// ends the wait with a message.
int WaitForClean(ctl::Client& client) {
  struct sigaction sa {};
  sa.sa_handler = OnInterrupt;
  sigaction(SIGINT, &sa, nullptr);
  const bool tty = ::isatty(STDOUT_FILENO);
  using Clock = std::chrono::steady_clock;
  const auto start = Clock::now();
  auto last_line = start - std::chrono::seconds(10);
  uint64_t first_dirty = 0;  // bytes
  bool have_first = false;
  for (;;) {
    auto reply = AskStatus(client);
    if (!reply.ok()) return Fail(kExitFailure, reply.status().message());
    const EngineStats& s = reply.value().stats;
    if (s.failed) {
      if (tty) std::printf("\n");
      return Fail(kExitFailure, "the cache failed: " + s.error);
    }
    const uint64_t dirty = s.dirty_bytes;
    if (!have_first) {
      first_dirty = dirty;
      have_first = true;
    }
    const double secs = std::chrono::duration<double>(Clock::now() - start).count();
    const uint64_t done = first_dirty > dirty ? first_dirty - dirty : 0;
    const double rate = secs > 0 ? static_cast<double>(done) / secs : 0;
    const std::string left = HumanBytes(dirty);
    const std::string note =
        s.writeback_failing
            ? "  (writeback failing, retrying: " + (s.writeback_error.empty() ? std::string("see the log") : s.writeback_error) + ")"
            : "";
    // Discards not yet punched on the backing are dirty state too.
    if (dirty == 0 && s.pending_discards == 0) {
      if (tty) std::printf("\r\033[K");
      std::printf("drop_caches: every dirty block is on the backing (%s in %.1f s)\n", HumanBytes(done).c_str(),
                  secs);
      return kExitOk;
    }
    if (g_interrupted) {
      if (tty) std::printf("\n");
      std::printf("drop_caches: stopped waiting; writeback goes on (%s left)\n", left.c_str());
      return 130;
    }
    if (tty) {
      const int width = 30;
      const int filled = first_dirty ? static_cast<int>(static_cast<double>(width) * static_cast<double>(done) /
                                                        static_cast<double>(first_dirty))
                                     : 0;
      std::printf("\r\033[Kdrop_caches [%s%s] %s left, %s/s%s", std::string(filled, '#').c_str(),
                  std::string(width - filled, '.').c_str(), left.c_str(), HumanBytes(static_cast<uint64_t>(rate)).c_str(), note.c_str());
      std::fflush(stdout);
    } else if (Clock::now() - last_line >= std::chrono::seconds(5)) {
      std::printf("drop_caches: %s left, %s/s%s\n", left.c_str(), HumanBytes(static_cast<uint64_t>(rate)).c_str(), note.c_str());
      std::fflush(stdout);
      last_line = Clock::now();
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(250));
  }
}

// `text` broken into lines of at most `width` characters at spaces.
std::string Wrap(const std::string& text, size_t width) {
  std::string out, line;
  size_t start = 0;
  while (start < text.size()) {
    size_t end = text.find(' ', start);
    if (end == std::string::npos) end = text.size();
    const std::string word = text.substr(start, end - start);
    if (!line.empty() && line.size() + 1 + word.size() > width) {
      out += line + "\n";
      line.clear();
    }
    line += (line.empty() ? "" : " ") + word;
    start = end + 1;
  }
  return out + line + "\n";
}

// The usage: the messages of the protocol's table (and, for KEY VALUE, the
// online tunables of theirs), so that it cannot go stale.
std::string Usage() {
  std::string synopsis, what;
  for (const ctl::VerbDef& d : ctl::kVerbs) {
    if (d.help == nullptr) continue;
    const std::string words = d.verb == ctl::Verb::kSet ? d.args : d.name;
    synopsis += (synopsis.empty() ? "usage: " : "       ") + std::string("wbfs message MOUNTPOINT ") + words + "\n";
    std::string text = words + " " + d.help;
    if (d.verb == ctl::Verb::kSet) {
      std::string online;
      for (const TunableDef& t : kTunableDefs) {
        if (t.online) online += (online.empty() ? "" : ", ") + std::string(t.key);
      }
      text += " (" + online + ")";
    }
    what += Wrap(text + ".", 78);
  }
  return synopsis + "\n" + what;
}

// The request for a message (the words after MOUNTPOINT), checked as far as
// the CLI can; a usage error is a sentence.
Result<ctl::Request> MessageRequest(const std::vector<std::string>& words) {
  ctl::Request req;
  if (words.size() == 2) {
    const std::string& key = words[0];
    const TunableDef* d = FindTunable(key);
    if (d == nullptr) return Status::InvalidArgument("unknown tunable '" + key + "'");
    errno = 0;
    char* end = nullptr;
    const long long v = std::strtoll(words[1].c_str(), &end, 10);
    if (words[1].empty() || *end != '\0' || errno != 0) {
      return Status::InvalidArgument(key + ": '" + words[1] + "' is not an integer");
    }
    Tunables scratch;
    WBFS_RETURN_IF_ERROR(SetTunable(&scratch, key, v));
    if (!d->online) {
      return Status::InvalidArgument(key + " cannot be changed on a mounted cache; remount with -o " + key +
                                     "=" + words[1]);
    }
    req.verb = ctl::Verb::kSet;
    req.key = key;
    req.value = v;
    return req;
  }
  const ctl::VerbDef* d = ctl::FindVerb(words[0]);
  if (d == nullptr || d->help == nullptr || d->verb == ctl::Verb::kSet) {
    return Status::InvalidArgument("unknown message '" + words[0] + "'; see 'wbfs message --help'");
  }
  req.verb = d->verb;
  return req;
}

}  // namespace

int CmdMessage(const std::vector<std::string>& args) {
  CommandLine cl("message", Usage(), 2, 3);
  if (int rc = cl.Parse(args); rc >= 0) return rc;
  const std::vector<std::string> words(cl.words().begin() + 1, cl.words().end());
  auto req = MessageRequest(words);
  if (!req.ok()) return Fail(kExitUsage, "message: " + req.status().message());
  ctl::Client client;
  Status st = ConnectToDaemon(&client, MountpointPath(cl.words()[0]));
  if (!st.ok()) return Fail(kExitFailure, st.message());
  auto reply = client.Call(ctl::EncodeRequest(req.value()));
  if (!reply.ok()) return Fail(kExitFailure, "message: " + reply.status().message());
  st = ctl::DecodeReply(reply.value());
  if (!st.ok()) {
    return Fail(st.code() == Status::Code::kInvalidArgument ? kExitUsage : kExitFailure, "message: " + st.message());
  }
  if (req.value().verb == ctl::Verb::kDropCaches) return WaitForClean(client);
  return kExitOk;
}

}  // namespace wbfs::cli
