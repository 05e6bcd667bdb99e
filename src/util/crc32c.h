// CRC-32C (Castagnoli), the checksum of every wbfs on-disk structure.
// Standard init (~0) and final XOR; Value("123456789") == 0xE3069283.
#ifndef WBFS_UTIL_CRC32C_H_
#define WBFS_UTIL_CRC32C_H_

#include <cstddef>
#include <cstdint>

namespace wbfs::crc32c {

// Extends a finished crc over more bytes: Extend(Value(a), b) == Value(a+b).
uint32_t Extend(uint32_t crc, const void* data, size_t n);
inline uint32_t Value(const void* data, size_t n) { return Extend(0, data, n); }

}  // namespace wbfs::crc32c

#endif  // WBFS_UTIL_CRC32C_H_
