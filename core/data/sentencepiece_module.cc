// The SentencePiece support module (libmoefold_spm.so), loaded at run time by
// sentencepiece_backend.cc with dlmopen into a link-map namespace of its own: Debian's
// libsentencepiece exports its own copy of protobuf-lite, whose symbols clash with the system
// libprotobuf the configs use (a crash at start-up when both are linked), and RTLD_DEEPBIND is not
// enough (libsentencepiece then writes to an uninitialised std::cerr). In its own namespace the
// module has its own libstdc++ and libc, so only C types cross: memory the module returns is
// released by the module (moefold_spm_release).
#include <sentencepiece_processor.h>
#include <sentencepiece_trainer.h>

#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

namespace {

void SetError(const std::string& message, char* error, size_t capacity) {
  if (capacity == 0) return;
  const size_t n = std::min(message.size(), capacity - 1);
  std::memcpy(error, message.data(), n);
  error[n] = '\0';
}

}  // namespace

extern "C" {

void* moefold_spm_load(const char* path, char* error, size_t error_capacity) {
  auto* processor = new sentencepiece::SentencePieceProcessor();
  const auto status = processor->Load(path);
  if (!status.ok()) {
    SetError(status.ToString(), error, error_capacity);
    delete processor;
    return nullptr;
  }
  return processor;
}

void moefold_spm_free(void* model) {
  delete static_cast<sentencepiece::SentencePieceProcessor*>(model);
}

void moefold_spm_release(void* memory) { std::free(memory); }

// *ids (malloc'ed by the module, *count entries) on success.
int moefold_spm_encode(const void* model, const char* text, size_t length, int** ids,
                       size_t* count, char* error, size_t error_capacity) {
  std::vector<int> out;
  const auto status = static_cast<const sentencepiece::SentencePieceProcessor*>(model)->Encode(
      std::string(text, length), &out);
  if (!status.ok()) {
    SetError(status.ToString(), error, error_capacity);
    return 0;
  }
  *count = out.size();
  *ids = static_cast<int*>(std::malloc(sizeof(int) * (out.empty() ? 1 : out.size())));
  std::memcpy(*ids, out.data(), sizeof(int) * out.size());
  return 1;
}

// *text (malloc'ed by the module, *length bytes) on success.
int moefold_spm_decode(const void* model, const int* ids, size_t count, char** text,
                       size_t* length, char* error, size_t error_capacity) {
  std::string out;
  const auto status = static_cast<const sentencepiece::SentencePieceProcessor*>(model)->Decode(
      std::vector<int>(ids, ids + count), &out);
  if (!status.ok()) {
    SetError(status.ToString(), error, error_capacity);
    return 0;
  }
  *length = out.size();
  *text = static_cast<char*>(std::malloc(out.empty() ? 1 : out.size()));
  std::memcpy(*text, out.data(), out.size());
  return 1;
}

int moefold_spm_piece_size(const void* model) {
  return static_cast<const sentencepiece::SentencePieceProcessor*>(model)->GetPieceSize();
}

int moefold_spm_eos_id(const void* model) {
  return static_cast<const sentencepiece::SentencePieceProcessor*>(model)->eos_id();
}

int moefold_spm_train(const char* flags, char* error, size_t error_capacity) {
  const auto status = sentencepiece::SentencePieceTrainer::Train(flags);
  if (!status.ok()) SetError(status.ToString(), error, error_capacity);
  return status.ok() ? 1 : 0;
}

}  // extern "C"
