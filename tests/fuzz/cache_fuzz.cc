// libFuzzer target: arbitrary cache bytes through the three readers of the
// log: check's (records, scan with every chunk's data, synced-loss search,
// replay fold), dump's (record slots, segment walks) and mount's (the
// engine's replay), then a little I/O on whatever mount accepted. Must never crash, hang or allocate without
// bound; a cache is either accepted as a valid log or refused.
//
// Input: first byte even = patches over a valid cache built by a short
// workload (so the fuzzer explores near-valid headers and chains):
// repeated [offset: 3 bytes, little-endian, scaled into the cache][len: 1
// byte][len bytes]. First byte odd = the rest overwrites the start of that
// valid cache (a fuzzed superblock and records in front of real segments).
#include <cstdint>
#include <cstring>
#include <vector>

#include "log/check.h"
#include "log/log_reader.h"
#include "support/mem_device.h"
#include "wbfs/engine.h"
#include "wbfs/format.h"

using namespace wbfs;
using namespace wbfs::test;

namespace {

constexpr size_t kBacking = 1 << 20;

const std::vector<uint8_t>& BaseCache() {
  static const std::vector<uint8_t> base = [] {
    auto backing = std::make_shared<MemDisk>(kBacking);
    auto cache = std::make_shared<MemDisk>(format::kMinCacheSize);
    EngineOptions o;
    o.nr_ram_buffers = 2;
    auto e = Engine::Open(o, Dev(backing), Dev(cache));
    std::vector<uint8_t> buf(20000, 0x5a);
    for (int i = 0; i < 40; i++) {
      (void)e.value()->Write(uint64_t(i) * 12345 % (kBacking - 20000), buf.data(), 700 + i * 300);
      if (i % 7 == 0) (void)e.value()->Flush();
    }
    (void)e.value()->Close();
    return cache->data;
  }();
  return base;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  auto cache = std::make_shared<MemDisk>(format::kMinCacheSize, "cache");
  cache->data = BaseCache();
  if (data[0] % 2 == 0) {
    size_t i = 1;
    while (i + 4 <= size) {
      uint32_t off = uint32_t(data[i]) | uint32_t(data[i + 1]) << 8 | uint32_t(data[i + 2]) << 16;
      size_t len = data[i + 3];
      i += 4;
      len = std::min(len, size - i);
      uint64_t at = uint64_t(off) * (cache->data.size() - 256) >> 24;
      std::memcpy(cache->data.data() + at, data + i, len);
      i += len;
    }
  } else {
    std::memcpy(cache->data.data(), data + 1, std::min(size - 1, cache->data.size()));
  }
  cache->durable = cache->data;

  // check's path: the records, every chunk's data read and verified, the
  // search for synced chunks the chain cannot reach, the replay fold.
  {
    log::CheckReport rep;
    (void)log::CheckCache(*Dev(cache), &rep);
  }
  // dump's path: both record slots, and the segment walk of every slot
  // (as the ids of the record's lap and of the next one).
  log::CacheMeta meta;
  if (log::ReadCacheMeta(*Dev(cache), &meta).ok() && !meta.blank) {
    log::SegmentDump d;
    uint64_t err = 0;
    const uint64_t first = meta.record.tail_segment_id;
    for (uint64_t id = first; id < first + 2 * meta.sb.nr_segments && id > 0; id++) {
      (void)log::DumpSegment(*Dev(cache), meta.sb, id, &d, &err);
    }
  }
  // mount's path.
  auto backing = std::make_shared<MemDisk>(kBacking, "backing");
  EngineOptions o;
  o.nr_ram_buffers = 2;
  o.format_blank_cache = false;
  // No threads: the engine's prefetchers, flusher and background thread
  // were most of an execution's time (the mount path is the same code).
  o.threads = false;
  o.background = false;
  auto r = Engine::Open(o, Dev(backing), Dev(cache));
  if (!r.ok()) return 0;
  std::vector<uint8_t> img(kBacking);
  (void)r.value()->Read(0, img.data(), img.size());
  (void)r.value()->Write(4096, img.data(), 8192 + 100);
  (void)r.value()->Flush();
  (void)r.value()->Close();
  return 0;
}
