// What a librbd transfer's return value means (io/rbd_status.h): every
// answer but the full length (or 0 for a write) is an error, with errno.
#include <doctest/doctest.h>

#include <cerrno>

#include "io/rbd_status.h"

using namespace wbfs;

TEST_CASE("rbd: a transfer is OK only when librbd answered it whole") {
  CHECK(RbdTransferStatus("rbd:p/i", false, 4096, 8192, 8192).ok());
  CHECK(RbdTransferStatus("rbd:p/i", true, 4096, 8192, 8192).ok());
  CHECK(RbdTransferStatus("rbd:p/i", true, 4096, 8192, 0).ok());  // an aio write's completion
}

TEST_CASE("rbd: a short transfer, or a read of nothing, is an I/O error, never a silent success") {
  Status s = RbdTransferStatus("rbd:p/i", false, 4096, 8192, 4096);
  CHECK(s.code() == Status::Code::kIOError);
  CHECK(s.err() == EIO);
  CHECK(s.message().find("short read at offset 4096 (4096 of 8192 bytes)") != std::string::npos);
  CHECK(RbdTransferStatus("rbd:p/i", false, 0, 4096, 0).code() == Status::Code::kIOError);
  CHECK(RbdTransferStatus("rbd:p/i", true, 0, 4096, 100).code() == Status::Code::kIOError);
}

TEST_CASE("rbd: a failed aio (a lost cluster: the op timeout) keeps its errno") {
  Status s = RbdTransferStatus("rbd:p/i", true, 1 << 20, 4096, -ETIMEDOUT);
  CHECK(s.code() == Status::Code::kIOError);
  CHECK(s.err() == ETIMEDOUT);
  CHECK(s.message() == "rbd:p/i: write at offset 1048576: Connection timed out");
  CHECK(RbdTransferStatus("rbd:p/i", false, 0, 4096, -ESHUTDOWN).err() == ESHUTDOWN);  // blocklisted (fenced)
  CHECK(RbdTransferStatus("rbd:p/i", false, 0, 4096, -100000).err() == EIO);  // not an errno
}
