// A heap buffer aligned for O_DIRECT (4 KiB).
#ifndef WBFS_UTIL_ALIGNED_BUFFER_H_
#define WBFS_UTIL_ALIGNED_BUFFER_H_

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <new>

namespace wbfs {

class AlignedBuffer {
 public:
  AlignedBuffer() = default;
  explicit AlignedBuffer(size_t size) { Reset(size); }
  ~AlignedBuffer() { std::free(data_); }
  AlignedBuffer(const AlignedBuffer&) = delete;
  AlignedBuffer& operator=(const AlignedBuffer&) = delete;
  AlignedBuffer(AlignedBuffer&& o) noexcept : data_(o.data_), size_(o.size_) {
    o.data_ = nullptr;
    o.size_ = 0;
  }

  // Reallocates (contents are lost) and zero-fills.
  void Reset(size_t size) {
    ResetUninitialized(size);
    if (size > 0) std::memset(data_, 0, size);
  }
  // Reallocates without filling: for a buffer every byte of which is
  // written before it is read (writeback's units and windows: zeroing
  // them was most of writeback's instructions, measured with callgrind).
  void ResetUninitialized(size_t size) {
    std::free(data_);
    data_ = nullptr;
    size_ = 0;
    if (size == 0) return;
    void* p = nullptr;
    if (::posix_memalign(&p, 4096, (size + 4095) / 4096 * 4096) != 0) throw std::bad_alloc();
    data_ = static_cast<uint8_t*>(p);
    size_ = size;
  }
  uint8_t* data() { return data_; }
  const uint8_t* data() const { return data_; }
  size_t size() const { return size_; }

 private:
  uint8_t* data_ = nullptr;
  size_t size_ = 0;
};

}  // namespace wbfs

#endif  // WBFS_UTIL_ALIGNED_BUFFER_H_
