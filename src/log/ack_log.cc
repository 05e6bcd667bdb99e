// The ack log's region; the layout and the crash rules are in ack_log.h.
#include "log/ack_log.h"

#include <atomic>
#include <bit>
#include <cstring>
#include <string>

#include "util/coding.h"
#include "util/crc32c.h"

namespace wbfs::log {

namespace {

// Header offsets.
constexpr size_t kMagicAt = 0, kVersionAt = 8, kNonceAt = 16, kSlotsAt = 24, kHeadAt = 32,
                 kCrcAt = 40;
constexpr size_t kHeaderCrcBytes = 32;  // magic, version, reserved, nonce, nr_slots
// Slot header offsets.
constexpr size_t kSeqAt = 0, kKindAt = 8, kRecCrcAt = 12, kOffsetAt = 16, kLengthAt = 24,
                 kTagAt = 32, kMaskAt = 40;
constexpr size_t kSectorBytes = 512;
constexpr int kDataSteps = static_cast<int>(kAckBlockSize / kSectorBytes);

uint64_t LoadWord(const uint8_t* p) {
  return std::atomic_ref<uint64_t>(*reinterpret_cast<uint64_t*>(const_cast<uint8_t*>(p)))
      .load(std::memory_order_acquire);
}
void StoreWord(uint8_t* p, uint64_t v) {
  std::atomic_ref<uint64_t>(*reinterpret_cast<uint64_t*>(p)).store(v, std::memory_order_release);
}
size_t RoundUp(size_t n, size_t to) { return (n + to - 1) / to * to; }

}  // namespace

size_t AckLog::BytesFor(uint64_t nr_slots) {
  return kHeaderBytes + RoundUp(nr_slots * kSlotHeaderBytes, kAckBlockSize) +
         nr_slots * kAckBlockSize;
}

uint64_t AckLog::SlotsFor(size_t bytes) {
  if (bytes < BytesFor(1)) return 0;
  uint64_t n = (bytes - kHeaderBytes) / (kSlotHeaderBytes + kAckBlockSize);
  while (n > 0 && BytesFor(n) > bytes) n--;  // the rounding of the slot headers
  return n;
}

Status AckLog::Attach() {
  if (reinterpret_cast<uintptr_t>(base_) % kAckBlockSize != 0) {
    return Status::InvalidArgument("the shared ack log region is not 4096-aligned");
  }
  if (size_ < kHeaderBytes) {
    return Status::InvalidArgument("the shared ack log region is " + std::to_string(size_) +
                                   " bytes, too small");
  }
  formatted_ = false;
  const uint64_t magic = DecodeFixed64(base_ + kMagicAt);
  if (magic == 0) return Status::OK();  // never formatted (or a format died before its last store)
  if (magic != kMagic)
    return Status::Corruption("the shared ack log region holds no ack log (bad magic)");
  uint8_t h[kHeaderCrcBytes];
  std::memcpy(h, base_, sizeof(h));
  if (crc32c::Value(h, sizeof(h)) != DecodeFixed32(base_ + kCrcAt)) {
    return Status::Corruption("the shared ack log's header does not match its checksum");
  }
  const uint32_t version = DecodeFixed32(base_ + kVersionAt);
  if (version != kVersion) {
    return Status::Corruption("the shared ack log has version " + std::to_string(version) +
                              ", not " + std::to_string(kVersion));
  }
  const uint64_t n = DecodeFixed64(base_ + kSlotsAt);
  if (n == 0 || n > size_ / kAckBlockSize || BytesFor(n) > size_) {
    return Status::Corruption("the shared ack log claims " + std::to_string(n) +
                              " slots, which do not fit its " + std::to_string(size_) + " bytes");
  }
  nonce_ = DecodeFixed64(base_ + kNonceAt);
  nr_slots_ = n;
  data_off_ = kHeaderBytes + RoundUp(n * kSlotHeaderBytes, kAckBlockSize);
  head_ = tail_ = LoadWord(base_ + kHeadAt);
  formatted_ = true;
  return Status::OK();
}

Status AckLog::Format(uint64_t nonce) {
  const uint64_t n = SlotsFor(size_);
  if (n == 0) {
    return Status::InvalidArgument("the shared ack log region is " + std::to_string(size_) +
                                   " bytes; it must be at least " + std::to_string(BytesFor(1)));
  }
  StoreWord(base_ + kMagicAt, 0);  // not a log until the end
  nr_slots_ = n;
  nonce_ = nonce;
  data_off_ = kHeaderBytes + RoundUp(n * kSlotHeaderBytes, kAckBlockSize);
  for (uint64_t s = 0; s < n; s++) StoreWord(SlotHeader(s), 0);
  EncodeFixed32(base_ + kVersionAt, kVersion);
  EncodeFixed32(base_ + kVersionAt + 4, 0);
  EncodeFixed64(base_ + kNonceAt, nonce);
  EncodeFixed64(base_ + kSlotsAt, n);
  head_ = tail_ = 1;
  StoreWord(base_ + kHeadAt, 1);
  uint8_t h[kHeaderCrcBytes];
  std::memcpy(h, base_, sizeof(h));
  EncodeFixed64(h + kMagicAt, kMagic);
  EncodeFixed32(base_ + kCrcAt, crc32c::Value(h, sizeof(h)));
  StoreWord(base_ + kMagicAt, kMagic);  // native == little-endian here (static_assert below)
  formatted_ = true;
  return Status::OK();
}

static_assert(std::endian::native == std::endian::little,
              "the header's magic is stored as a native word and read as little-endian");

uint32_t AckLog::RecordCrc(uint64_t seq, uint32_t kind, uint64_t offset, uint64_t length,
                           uint32_t mask, uint64_t tag, const uint8_t* data) const {
  uint8_t b[48];
  EncodeFixed64(b, seq);
  EncodeFixed32(b + 8, kind);
  EncodeFixed64(b + 12, offset);
  EncodeFixed64(b + 20, length);
  EncodeFixed32(b + 28, mask);
  EncodeFixed64(b + 32, tag);
  EncodeFixed64(b + 40, nonce_);
  uint32_t crc = crc32c::Value(b, sizeof(b));
  if (data != nullptr) crc = crc32c::Extend(crc, data, kAckBlockSize);
  return crc;
}

bool AckLog::Valid(uint64_t seq) const {
  const uint8_t* h = SlotHeader(seq);
  if (LoadWord(h + kSeqAt) != seq) return false;
  const uint32_t kind = DecodeFixed32(h + kKindAt);
  if (kind != AckRecord::kWrite && kind != AckRecord::kDiscard) return false;
  return RecordCrc(seq, kind, DecodeFixed64(h + kOffsetAt), DecodeFixed64(h + kLengthAt),
                   DecodeFixed32(h + kMaskAt), DecodeFixed64(h + kTagAt),
                   kind == AckRecord::kWrite ? SlotData(seq) : nullptr) ==
         DecodeFixed32(h + kRecCrcAt);
}

void AckLog::Scan(std::vector<AckRecord>* out) {
  out->clear();
  uint64_t s = head_;
  for (; s - head_ < nr_slots_ && Valid(s); s++) {
    const uint8_t* h = SlotHeader(s);
    AckRecord r;
    r.kind = static_cast<AckRecord::Kind>(DecodeFixed32(h + kKindAt));
    r.seq = s;
    r.offset = DecodeFixed64(h + kOffsetAt);
    r.length = DecodeFixed64(h + kLengthAt);
    r.tag = DecodeFixed64(h + kTagAt);
    r.mask = DecodeFixed32(h + kMaskAt);
    if (r.kind == AckRecord::kWrite) r.data.assign(SlotData(s), SlotData(s) + kAckBlockSize);
    out->push_back(std::move(r));
  }
  tail_ = s;
}

void AckLog::StoreHead(uint64_t head) {
  head_ = head;
  StoreWord(base_ + kHeadAt, head);
}

void AckLog::Reset() {
  StoreHead(tail_);
  // A record past the end the scan found (there is none unless the region
  // was damaged) must never follow a later record: clear every seq.
  for (uint64_t s = 0; s < nr_slots_; s++) StoreWord(SlotHeader(s), 0);
}

uint64_t AckLog::OldestTag() const { return DecodeFixed64(SlotHeader(head_) + kTagAt); }

uint64_t AckLog::Append(AckRecord::Kind kind, uint64_t offset, uint64_t length, uint32_t mask,
                        uint64_t tag, const uint8_t* data, const StepHook* hook) {
  const uint64_t seq = tail_;
  uint8_t* h = SlotHeader(seq);
  uint8_t* d = SlotData(seq);
  if (hook == nullptr) {
    if (data != nullptr) std::memcpy(d, data, kAckBlockSize);
  } else {
    for (int i = 0; i < kDataSteps; i++) {
      if (!(*hook)(i)) return 0;
      const size_t at = static_cast<size_t>(i) * kSectorBytes;
      if (data != nullptr) std::memcpy(d + at, data + at, kSectorBytes);
    }
    if (!(*hook)(kDataSteps)) return 0;
  }
  EncodeFixed32(h + kKindAt, kind);
  EncodeFixed64(h + kOffsetAt, offset);
  EncodeFixed64(h + kLengthAt, length);
  EncodeFixed64(h + kTagAt, tag);
  EncodeFixed32(h + kMaskAt, mask);
  if (hook != nullptr && !(*hook)(kDataSteps + 1)) return 0;
  // Over the bytes as they now are in the region (what a scan will check).
  EncodeFixed32(h + kRecCrcAt,
                RecordCrc(seq, kind, offset, length, mask, tag, data != nullptr ? d : nullptr));
  if (hook != nullptr && !(*hook)(kDataSteps + 2)) return 0;
  StoreWord(h + kSeqAt, seq);
  tail_ = seq + 1;
  return seq;
}

void AckLog::Trim(uint64_t tag) {
  uint64_t h = head_;
  while (h < tail_ && DecodeFixed64(SlotHeader(h) + kTagAt) <= tag) h++;
  if (h != head_) StoreHead(h);
}

}  // namespace wbfs::log
