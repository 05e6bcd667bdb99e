// The CLI's parts of the control protocol (src/ctl/protocol.h) apart from
// the socket: the daemon's request handler, the reading and printing of a
// status reply, and what status, message and umount share (their command
// line, the connection to the daemon).
#ifndef WBFS_CLI_CONTROL_H_
#define WBFS_CLI_CONTROL_H_

#include <boost/program_options.hpp>
#include <cstdio>
#include <functional>
#include <string>
#include <vector>

#include "cli/config.h"
#include "ctl/ctl.h"
#include "ctl/protocol.h"
#include "wbfs/engine.h"

namespace wbfs::cli {

struct ControlContext {
  const MountConfig* config;  // must outlive the server
  std::string log_target;     // "syslog", "stderr" or the log file (for status)
  std::function<void(int prio, const std::string& msg)> log;  // syslog priorities
};

// Maps one request line (see ctl::kVerbs), any bytes at all, to one JSON
// reply line. Never throws: a failure is answered with {"error": ...} and
// logged.
std::string HandleControlRequest(Engine* e, const ControlContext& ctx, const std::string& request);

// Prints a status reply (an untrusted line from the daemon) to `out`, as
// JSON (the line as it came) or as text; a malformed reply is one sentence
// on stderr. Returns the exit code.
int PrintStatusReply(const std::string& reply, bool json, FILE* out);

// The command line of an online command (status, message, umount):
// `options` besides --help (-h), and from min_words to max_words words
// (MOUNTPOINT and what follows it). A word such as -5 is a word (a value),
// not an option.
class CommandLine {
 public:
  // `usage`: the synopsis and what the command does; --help prints it and
  // the options.
  CommandLine(const char* cmd, std::string usage, size_t min_words, size_t max_words);
  // Adds the command's options (as po::options_description::add_options).
  boost::program_options::options_description_easy_init Options() { return options_.add_options(); }
  // -1 to go on, else the exit code: 0 after --help, 2 on bad usage (one
  // sentence, or the usage when the words are too few or too many).
  int Parse(const std::vector<std::string>& args);
  // The usage on stderr; returns the exit code for bad usage.
  int UsageError() const;

  bool Has(const char* option) const { return vm_.count(option) > 0; }
  template <typename T>
  const T& Get(const char* option) const { return vm_[option].as<T>(); }
  const std::vector<std::string>& words() const { return words_; }

 private:
  const char* cmd_;
  std::string usage_;
  size_t min_words_, max_words_;
  boost::program_options::options_description options_;
  boost::program_options::variables_map vm_;
  std::vector<std::string> words_;
};

// Connects to the daemon of a mountpoint (resolved); the failure says what
// to check.
Status ConnectToDaemon(ctl::Client* client, const std::string& mountpoint);
// Asks for the status; a refusal or a malformed reply is a sentence.
Result<ctl::StatusReply> AskStatus(ctl::Client& client);

}  // namespace wbfs::cli

#endif  // WBFS_CLI_CONTROL_H_
