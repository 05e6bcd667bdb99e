// The subcommands' command line (see command_line.h).
#include "cli/command_line.h"

#include <iostream>

#include "cli/commands.h"

namespace wbfs::cli {
namespace {

namespace po = boost::program_options;

// "-5": a value (wbfs message MP KEY -5), not the option 5.
std::vector<po::option> NumberWord(std::vector<std::string>& args) {
  const std::string& a = args.front();
  if (a.size() < 2 || a[0] != '-' || a[1] < '0' || a[1] > '9') return {};
  po::option word;  // no key: a positional word
  word.value.push_back(a);
  word.original_tokens.push_back(a);
  args.erase(args.begin());
  return {word};
}

}  // namespace

CommandLine::CommandLine(const char* cmd, std::string usage, size_t min_words, size_t max_words)
    : cmd_(cmd), usage_(std::move(usage)), min_words_(min_words), max_words_(max_words),
      options_("options") {
  options_.add_options()("help,h", "show this help");
}

int CommandLine::Parse(const std::vector<std::string>& args) {
  po::options_description words;
  words.add_options()("word", po::value<std::vector<std::string>>(), "");
  po::options_description all;
  all.add(options_).add(words);
  po::positional_options_description pos;
  pos.add("word", -1);
  try {
    po::store(po::command_line_parser(args).options(all).positional(pos).extra_style_parser(NumberWord).run(), vm_);
    po::notify(vm_);
  } catch (const po::error& e) {
    return Fail(kExitUsage, std::string(cmd_) + ": " + e.what() + "; see 'wbfs " + cmd_ + " --help'");
  }
  if (Has("help")) {
    std::cout << usage_ << "\n" << options_ << "\n";
    return kExitOk;
  }
  if (Has("word")) words_ = Get<std::vector<std::string>>("word");
  if (words_.size() < min_words_ || words_.size() > max_words_) return UsageError();
  return -1;
}

int CommandLine::UsageError() const {
  std::cerr << usage_;
  return kExitUsage;
}

}  // namespace wbfs::cli
