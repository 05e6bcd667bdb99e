// The command line of every subcommand but the mount helper: options
// (Boost.Program_options) besides --help (-h), and a number of words
// (positional arguments). One parser, so that every command spells its
// errors and its --help the same way.
#ifndef WBFS_CLI_COMMAND_LINE_H_
#define WBFS_CLI_COMMAND_LINE_H_

#include <boost/program_options.hpp>
#include <string>
#include <vector>

namespace wbfs::cli {

// From min_words to max_words words (e.g. MOUNTPOINT and what follows it,
// or the CACHE of an offline tool). A word such as -5 is a word (a value),
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
  // A string option's value, "" when it was not given.
  std::string Value(const char* option) const { return Has(option) ? Get<std::string>(option) : ""; }
  const std::vector<std::string>& words() const { return words_; }

 private:
  const char* cmd_;
  std::string usage_;
  size_t min_words_, max_words_;
  boost::program_options::options_description options_;
  boost::program_options::variables_map vm_;
  std::vector<std::string> words_;
};

}  // namespace wbfs::cli

#endif  // WBFS_CLI_COMMAND_LINE_H_
