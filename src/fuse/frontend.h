// The FUSE front end: one directory holding one regular file, the image,
// served by an Engine. It knows the Engine's public calls and nothing of
// segments or the log.
#ifndef WBFS_FUSE_FRONTEND_H_
#define WBFS_FUSE_FRONTEND_H_

#include <memory>
#include <string>

#include "wbfs/engine.h"
#include "wbfs/status.h"

struct fuse_session;

namespace wbfs::fuse {

struct FrontendOptions {
  std::string mountpoint;  // absolute
  std::string image_name = "image";
  std::string fsname = "wbfs";  // shown by mount/findmnt
  bool allow_other = false;
  unsigned max_threads = 8;
};

class Frontend {
 public:
  Frontend(Engine* engine, FrontendOptions opts);
  ~Frontend();
  // Creates the session and mounts it: the image is usable on return.
  Status Mount();
  // Serves requests until the file system is unmounted or a SIGTERM,
  // SIGINT or SIGHUP arrives; then unmounts (if still mounted).
  Status Run();

 private:
  Engine* engine_;
  FrontendOptions opts_;
  struct fuse_session* se_ = nullptr;
  bool mounted_ = false;
};

// The one mapping from Status to errno at the FUSE edge.
int ErrnoFor(const Status& st);

}  // namespace wbfs::fuse

#endif  // WBFS_FUSE_FRONTEND_H_
