#include "util/crc32c.h"

#include <array>
#include <cstring>

namespace wbfs::crc32c {
namespace {

constexpr uint32_t kPoly = 0x82F63B78;  // reflected Castagnoli polynomial

struct Tables {
  uint32_t t[8][256];
  constexpr Tables() : t{} {
    for (uint32_t i = 0; i < 256; i++) {
      uint32_t c = i;
      for (int k = 0; k < 8; k++) c = (c >> 1) ^ ((c & 1) ? kPoly : 0);
      t[0][i] = c;
    }
    for (uint32_t i = 0; i < 256; i++) {
      for (int s = 1; s < 8; s++) t[s][i] = (t[s - 1][i] >> 8) ^ t[0][t[s - 1][i] & 0xff];
    }
  }
};
constexpr Tables kTables;

uint32_t ExtendPortable(uint32_t raw, const uint8_t* p, size_t n) {
  while (n >= 8) {
    uint64_t w;
    std::memcpy(&w, p, 8);
    w ^= raw;  // little-endian hosts only (x86-64, aarch64)
    raw = kTables.t[7][w & 0xff] ^ kTables.t[6][(w >> 8) & 0xff] ^
          kTables.t[5][(w >> 16) & 0xff] ^ kTables.t[4][(w >> 24) & 0xff] ^
          kTables.t[3][(w >> 32) & 0xff] ^ kTables.t[2][(w >> 40) & 0xff] ^
          kTables.t[1][(w >> 48) & 0xff] ^ kTables.t[0][w >> 56];
    p += 8;
    n -= 8;
  }
  while (n--) raw = (raw >> 8) ^ kTables.t[0][(raw ^ *p++) & 0xff];
  return raw;
}

#if defined(__x86_64__)
__attribute__((target("sse4.2"))) uint32_t ExtendHardware(uint32_t raw, const uint8_t* p,
                                                           size_t n) {
  uint64_t c = raw;
  while (n >= 8) {
    uint64_t w;
    std::memcpy(&w, p, 8);
    c = __builtin_ia32_crc32di(c, w);
    p += 8;
    n -= 8;
  }
  uint32_t c32 = static_cast<uint32_t>(c);
  while (n--) c32 = __builtin_ia32_crc32qi(c32, *p++);
  return c32;
}
const bool kHaveHardware = __builtin_cpu_supports("sse4.2");
#endif

}  // namespace

uint32_t Extend(uint32_t crc, const void* data, size_t n) {
  const auto* p = static_cast<const uint8_t*>(data);
  uint32_t raw = ~crc;
#if defined(__x86_64__)
  if (kHaveHardware) return ~ExtendHardware(raw, p, n);
#endif
  return ~ExtendPortable(raw, p, n);
}

}  // namespace wbfs::crc32c
