// AioBatch: librbd transfers in flight together (rbd_device.cc only; it
// needs librbd's header).
#ifndef WBFS_IO_RBD_AIO_H_
#define WBFS_IO_RBD_AIO_H_

#include <rbd/librbd.h>

#include <string>
#include <vector>

#include "io/rbd_status.h"
#include "wbfs/status.h"

namespace wbfs {

// Asynchronous transfers in flight together. Wait() waits for every one
// started (their buffers are the caller's, also after a failure) and
// returns the first failure, in the order they were started.
class AioBatch {
 public:
  AioBatch(rbd_image_t img, const std::string& uri) : img_(img), uri_(uri) {}
  AioBatch(const AioBatch&) = delete;
  AioBatch& operator=(const AioBatch&) = delete;
  ~AioBatch() { (void)Wait(); }

  // Starts one; false (the failure kept for Wait) when librbd refused it.
  bool Start(bool write, uint64_t off, char* p, size_t len) {
    rbd_completion_t c = nullptr;
    int r = rbd_aio_create_completion(nullptr, nullptr, &c);
    if (r == 0) {
      r = write ? rbd_aio_write(img_, off, len, p, c) : rbd_aio_read(img_, off, len, p, c);
      if (r < 0) rbd_aio_release(c);
    }
    if (r < 0) {
      if (st_.ok()) st_ = RbdTransferStatus(uri_, write, off, len, r);
      return false;
    }
    ops_.push_back({c, write, off, len});
    return true;
  }

  Status Wait() {
    for (const Op& x : ops_) {
      rbd_aio_wait_for_complete(x.c);
      const ssize_t r = rbd_aio_get_return_value(x.c);
      rbd_aio_release(x.c);
      if (st_.ok()) st_ = RbdTransferStatus(uri_, x.write, x.off, x.len, r);
    }
    ops_.clear();
    return st_;
  }

 private:
  struct Op {
    rbd_completion_t c;
    bool write;
    uint64_t off;
    size_t len;
  };
  const rbd_image_t img_;
  const std::string& uri_;
  std::vector<Op> ops_;
  Status st_;
};

}  // namespace wbfs

#endif  // WBFS_IO_RBD_AIO_H_
