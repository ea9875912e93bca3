// libsentencepiece behind plain std types, loaded at run time: its header declares
// `absl::string_view` as std::string_view (Debian's abseil has its own class), and the library
// exports its own protobuf-lite, which clashes with the system libprotobuf when both are linked
// into one process (a crash at start-up). So only the module sentencepiece_module.cc includes
// its headers and links it, and this backend dlmopens that module into a link-map namespace of
// its own (RTLD_DEEPBIND is not enough: libsentencepiece then logs to an unconstructed std::cerr).
#pragma once

#include <memory>
#include <string>
#include <vector>

namespace moefold::data::spm {

struct Model;  // a loaded SentencePieceProcessor

// nullptr with *error set when the file is not a model or the module cannot be loaded.
std::shared_ptr<const Model> Load(const std::string& path, std::string* error);
bool Encode(const Model& model, const std::string& text, std::vector<int>* ids,
            std::string* error);
bool Decode(const Model& model, const std::vector<int>& ids, std::string* text,
            std::string* error);
int PieceSize(const Model& model);
int EosId(const Model& model);
// SentencePieceTrainer::Train with a flag string ("--input=… --model_prefix=… --vocab_size=…").
bool Train(const std::string& flags, std::string* error);

}  // namespace moefold::data::spm
