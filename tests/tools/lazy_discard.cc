// LD_PRELOAD library for the end-to-end tests: a block device whose
// discard is only a hint. ioctl(BLKDISCARD) succeeds and does nothing, so
// the old data stays readable, as many SSDs, thin-provisioned LUNs and
// SCSI disks without LBPRZ allow. A loop device turns a discard into a
// punched hole of its file (zeros), which would hide a caller that
// expects zeros after BLKDISCARD; with this preloaded it cannot.
// Every other ioctl goes to the C library.
#include <dlfcn.h>
#include <linux/fs.h>

#include <cstdarg>

extern "C" int ioctl(int fd, unsigned long request, ...) {
  va_list ap;
  va_start(ap, request);
  void* arg = va_arg(ap, void*);
  va_end(ap);
  if (request == BLKDISCARD) return 0;
  using Fn = int (*)(int, unsigned long, ...);
  static Fn next = reinterpret_cast<Fn>(dlsym(RTLD_NEXT, "ioctl"));
  return next(fd, request, arg);
}
