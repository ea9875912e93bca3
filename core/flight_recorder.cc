// The flight recorder's ring of ops and the position, under one mutex (a few hundred ns per op:
// collectives cost microseconds at least).
#include "core/flight_recorder.h"

#include <algorithm>
#include <chrono>

#include "nlohmann/json.hpp"

namespace moefold {

FlightRecorder& FlightRecorder::Get() {
  static FlightRecorder* recorder = new FlightRecorder();  // never destroyed: read at exit
  return *recorder;
}

double FlightRecorder::Now() {
  return std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch())
      .count();
}

void FlightRecorder::SetCapacity(size_t entries) {
  std::lock_guard<std::mutex> lock(mu_);
  capacity_ = entries < 1 ? 1 : entries;
  ring_.clear();
  next_id_ = 1;
}

int64_t FlightRecorder::Issued(const char* op, const std::string& group, int64_t bytes,
                               int peer) {
  std::lock_guard<std::mutex> lock(mu_);
  FlightEntry e;
  e.id = next_id_++;
  e.op = op;
  e.group = group;
  e.bytes = bytes;
  e.peer = peer;
  e.issued_s = Now();
  e.step = position_.step;
  e.phase = position_.phase;
  e.micro_batch = position_.micro_batch;
  e.layer = position_.layer;
  const size_t slot = static_cast<size_t>(e.id - 1) % capacity_;
  if (ring_.size() <= slot) ring_.resize(slot + 1);
  ring_[slot] = std::move(e);
  return next_id_ - 1;
}

void FlightRecorder::Completed(int64_t id, bool ok) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    const size_t slot = static_cast<size_t>(id - 1) % capacity_;
    // An op older than the ring (a long-lived one) is no longer recorded.
    if (slot < ring_.size() && ring_[slot].id == id && ring_[slot].completed_s == 0) {
      ring_[slot].completed_s = Now();
      ring_[slot].failed = !ok;
    }
  }
  progress_.fetch_add(1, std::memory_order_relaxed);
}

void FlightRecorder::SetStep(int64_t step) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    position_.step = step;
    position_.micro_batch = -1;
    position_.layer = -1;
  }
  progress_.fetch_add(1, std::memory_order_relaxed);
}

void FlightRecorder::SetPhase(const char* phase) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    position_.phase = phase;
  }
  progress_.fetch_add(1, std::memory_order_relaxed);
}

void FlightRecorder::EnterStepPhase(const char* phase) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    position_.phase = phase;
    position_.micro_batch = -1;
    position_.layer = -1;
  }
  progress_.fetch_add(1, std::memory_order_relaxed);
}

void FlightRecorder::SetMicroBatch(int micro_batch) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    position_.micro_batch = micro_batch;
  }
  progress_.fetch_add(1, std::memory_order_relaxed);
}

void FlightRecorder::SetLayer(int layer) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    position_.layer = layer;
  }
  progress_.fetch_add(1, std::memory_order_relaxed);
}

FlightPosition FlightRecorder::position() const {
  std::lock_guard<std::mutex> lock(mu_);
  return position_;
}

std::vector<FlightEntry> FlightRecorder::Entries() const {
  std::lock_guard<std::mutex> lock(mu_);
  std::vector<FlightEntry> out;
  const int64_t first = std::max<int64_t>(1, next_id_ - static_cast<int64_t>(capacity_));
  for (int64_t id = first; id < next_id_; ++id) {
    const FlightEntry& e = ring_[static_cast<size_t>(id - 1) % capacity_];
    if (e.id == id) out.push_back(e);
  }
  return out;
}

std::string FlightRecorder::ToJson(int rank) const {
  const FlightPosition pos = position();
  nlohmann::json j;
  j["rank"] = rank;
  j["time_s"] = Now();
  j["progress"] = progress();
  j["position"] = {{"step", pos.step},
                   {"phase", pos.phase},
                   {"micro_batch", pos.micro_batch},
                   {"layer", pos.layer}};
  nlohmann::json ops = nlohmann::json::array();
  for (const FlightEntry& e : Entries()) {
    ops.push_back({{"id", e.id},
                   {"op", e.op},
                   {"group", e.group},
                   {"bytes", e.bytes},
                   {"peer", e.peer},
                   {"issued_s", e.issued_s},
                   {"completed_s", e.completed_s},
                   {"failed", e.failed},
                   {"step", e.step},
                   {"phase", e.phase},
                   {"micro_batch", e.micro_batch},
                   {"layer", e.layer}});
  }
  j["ops"] = std::move(ops);
  return j.dump();
}

FlightPhase::FlightPhase(const char* phase)
    : previous_(FlightRecorder::Get().position().phase) {
  FlightRecorder::Get().SetPhase(phase);
}

FlightPhase::~FlightPhase() { FlightRecorder::Get().SetPhase(previous_.c_str()); }

}  // namespace moefold
