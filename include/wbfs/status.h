// Status and Result<T>: how errors travel through wbfs.
//
// The engine and the tools never throw; every fallible call returns a Status
// (or a Result<T>, a Status plus a value). Both are [[nodiscard]], so an
// ignored error is a compiler warning. Only src/cli and src/fuse turn a
// Status into an exit code or an errno.
#ifndef WBFS_STATUS_H_
#define WBFS_STATUS_H_

#include <optional>
#include <string>
#include <utility>

namespace wbfs {

class [[nodiscard]] Status {
 public:
  enum class Code {
    kOk,
    kInvalidArgument,  // bad input from the user or a caller
    kOutOfRange,       // an I/O beyond the end of the image
    kNotPermitted,     // an operation the image does not support
    kCorruption,       // on-disk bytes that do not decode
    kIOError,          // a device call failed; errno is kept
    kBusy,             // the cache or backing is in use by another mount
    kFailed,           // the engine stopped accepting writes after an error
    kNotFound,
  };

  Status() = default;
  static Status OK() { return Status(); }
  static Status InvalidArgument(std::string msg) { return Status(Code::kInvalidArgument, 0, std::move(msg)); }
  static Status OutOfRange(std::string msg) { return Status(Code::kOutOfRange, 0, std::move(msg)); }
  static Status NotPermitted(std::string msg) { return Status(Code::kNotPermitted, 0, std::move(msg)); }
  static Status Corruption(std::string msg) { return Status(Code::kCorruption, 0, std::move(msg)); }
  static Status IOError(std::string msg, int err) { return Status(Code::kIOError, err, std::move(msg)); }
  static Status Busy(std::string msg) { return Status(Code::kBusy, 0, std::move(msg)); }
  static Status Failed(std::string msg) { return Status(Code::kFailed, 0, std::move(msg)); }
  static Status NotFound(std::string msg) { return Status(Code::kNotFound, 0, std::move(msg)); }

  bool ok() const { return code_ == Code::kOk; }
  Code code() const { return code_; }
  // The errno saved by IOError (0 for other codes).
  int err() const { return errno_; }
  const std::string& message() const { return msg_; }
  std::string ToString() const;

  // Prefixes the message with context ("cache /x: " + message).
  Status WithContext(const std::string& what) const {
    Status s = *this;
    if (!s.ok()) s.msg_ = what + ": " + s.msg_;
    return s;
  }

 private:
  Status(Code code, int err, std::string msg) : code_(code), errno_(err), msg_(std::move(msg)) {}
  Code code_ = Code::kOk;
  int errno_ = 0;
  std::string msg_;
};

// Builds an IOError from errno after a failed system call.
Status PosixError(const std::string& context, int err);

template <typename T>
class [[nodiscard]] Result {
 public:
  Result(T value) : value_(std::move(value)) {}  // NOLINT: implicit by design
  Result(Status status) : status_(std::move(status)) {}  // NOLINT
  bool ok() const { return status_.ok(); }
  const Status& status() const { return status_; }
  T& value() { return *value_; }
  const T& value() const { return *value_; }
  T& operator*() { return *value_; }
  T* operator->() { return &*value_; }

 private:
  Status status_;
  std::optional<T> value_;
};

#define WBFS_RETURN_IF_ERROR(expr)     \
  do {                                 \
    ::wbfs::Status _st = (expr);       \
    if (!_st.ok()) return _st;         \
  } while (0)

}  // namespace wbfs

#endif  // WBFS_STATUS_H_
