// Loads the SentencePiece support module (sentencepiece_module.cc) once, into a link-map
// namespace of its own, and forwards to its C entry points.
#include "core/data/sentencepiece_backend.h"

#include <dlfcn.h>

#include <cstdlib>
#include <mutex>

namespace moefold::data::spm {
namespace {

constexpr size_t kErrorCapacity = 1024;

struct Module {
  void* handle = nullptr;
  std::string error;
  void* (*load)(const char*, char*, size_t) = nullptr;
  void (*free)(void*) = nullptr;
  void (*release)(void*) = nullptr;
  int (*encode)(const void*, const char*, size_t, int**, size_t*, char*, size_t) = nullptr;
  int (*decode)(const void*, const int*, size_t, char**, size_t*, char*, size_t) = nullptr;
  int (*piece_size)(const void*) = nullptr;
  int (*eos_id)(const void*) = nullptr;
  int (*train)(const char*, char*, size_t) = nullptr;
};

// $MOEFOLD_SPM_MODULE, else the module built beside this library (compiled-in path).
const Module& GetModule() {
  static Module module;
  static std::once_flag once;
  std::call_once(once, [] {
    const char* env = std::getenv("MOEFOLD_SPM_MODULE");
    const std::string path = env != nullptr ? env : MOEFOLD_SPM_MODULE;
    module.handle = dlmopen(LM_ID_NEWLM, path.c_str(), RTLD_NOW | RTLD_LOCAL);
    if (module.handle == nullptr) {
      module.error = std::string("cannot load the SentencePiece module ") + path + ": " + dlerror();
      return;
    }
    auto sym = [&](const char* name) { return dlsym(module.handle, name); };
    module.load = reinterpret_cast<decltype(module.load)>(sym("moefold_spm_load"));
    module.free = reinterpret_cast<decltype(module.free)>(sym("moefold_spm_free"));
    module.release = reinterpret_cast<decltype(module.release)>(sym("moefold_spm_release"));
    module.encode = reinterpret_cast<decltype(module.encode)>(sym("moefold_spm_encode"));
    module.decode = reinterpret_cast<decltype(module.decode)>(sym("moefold_spm_decode"));
    module.piece_size = reinterpret_cast<decltype(module.piece_size)>(sym("moefold_spm_piece_size"));
    module.eos_id = reinterpret_cast<decltype(module.eos_id)>(sym("moefold_spm_eos_id"));
    module.train = reinterpret_cast<decltype(module.train)>(sym("moefold_spm_train"));
    if (!module.load || !module.free || !module.release || !module.encode || !module.decode ||
        !module.piece_size || !module.eos_id || !module.train) {
      module.error = "the SentencePiece module " + path + " lacks an entry point";
      module.handle = nullptr;
    }
  });
  return module;
}

}  // namespace

struct Model {
  void* processor = nullptr;
  ~Model() {
    if (processor != nullptr) GetModule().free(processor);
  }
};

std::shared_ptr<const Model> Load(const std::string& path, std::string* error) {
  const Module& m = GetModule();
  if (m.handle == nullptr) {
    *error = m.error;
    return nullptr;
  }
  char message[kErrorCapacity] = "";
  auto model = std::make_shared<Model>();
  model->processor = m.load(path.c_str(), message, sizeof(message));
  if (model->processor == nullptr) {
    *error = message;
    return nullptr;
  }
  return model;
}

bool Encode(const Model& model, const std::string& text, std::vector<int>* ids,
            std::string* error) {
  const Module& m = GetModule();
  char message[kErrorCapacity] = "";
  int* out = nullptr;
  size_t count = 0;
  if (!m.encode(model.processor, text.data(), text.size(), &out, &count, message,
                sizeof(message))) {
    *error = message;
    return false;
  }
  ids->assign(out, out + count);
  m.release(out);
  return true;
}

bool Decode(const Model& model, const std::vector<int>& ids, std::string* text,
            std::string* error) {
  const Module& m = GetModule();
  char message[kErrorCapacity] = "";
  char* out = nullptr;
  size_t length = 0;
  if (!m.decode(model.processor, ids.data(), ids.size(), &out, &length, message,
                sizeof(message))) {
    *error = message;
    return false;
  }
  text->assign(out, length);
  m.release(out);
  return true;
}

int PieceSize(const Model& model) { return GetModule().piece_size(model.processor); }
int EosId(const Model& model) { return GetModule().eos_id(model.processor); }

bool Train(const std::string& flags, std::string* error) {
  const Module& m = GetModule();
  if (m.handle == nullptr) {
    *error = m.error;
    return false;
  }
  char message[kErrorCapacity] = "";
  if (!m.train(flags.c_str(), message, sizeof(message))) {
    *error = message;
    return false;
  }
  return true;
}

}  // namespace moefold::data::spm
