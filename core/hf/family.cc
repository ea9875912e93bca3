// Family tables: refusals, naming, expected tensors and config.json fields, written from the
// families' definitions in transformers (modeling_mixtral.py, modeling_qwen2_moe.py,
// modeling_glm4_moe.py): module names, shapes, config keys and their defaults, routing.
#include "core/hf/family.h"

#include <charconv>
#include <cstdlib>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_replace.h"
#include "core/status.h"
#include "nlohmann/json.hpp"

namespace moefold::hf {
namespace {

using nlohmann::json;
using model::ModelSpec;
using ops::ScoreFunction;

// A float as the shortest decimal that reads back as the same float ("1e-05", not
// 9.99999974737875e-06), so config.json shows the number the experiment was written with.
double Pretty(float x) {
  char buf[32];
  const auto r = std::to_chars(buf, buf + sizeof(buf), x);
  return std::strtod(std::string(buf, r.ptr).c_str(), nullptr);
}

int64_t SharedFfn(const ModelSpec& spec) {
  const auto& m = spec.moe;
  return static_cast<int64_t>(m.num_shared_experts) * (m.shared_ffn > 0 ? m.shared_ffn : m.expert_ffn);
}

int LeadingDenseLayers(const ModelSpec& spec) {
  int n = 0;
  while (n < spec.num_layers && !spec.moe_layer[n]) ++n;
  return n;
}

bool HasDenseLayer(const ModelSpec& spec) {
  for (bool moe : spec.moe_layer) {
    if (!moe) return true;
  }
  return false;
}

// Renormalised softmax top-k: softmax then top-k then divide by the sum equals the softmax over
// the k largest logits (softmax is monotone), so kSoftmaxPost and kSoftmaxPre + normalize agree.
bool RenormalisedSoftmax(const ModelSpec& spec) {
  const auto& t = spec.moe.topk;
  return t.score == ScoreFunction::kSoftmaxPost ||
         (t.score == ScoreFunction::kSoftmaxPre && (t.normalize || t.k == 1));
}

// One config.json key that determines the model: the value moefold writes, the moefold setting it
// comes from, transformers' default when the key is absent (null: no default, the key is
// required), whether it is compared as a float, and whether it matters for this model.
struct Field {
  std::string key;
  json value;
  std::string ours;
  json hf_default;
  bool is_float = false;
  bool checked = true;
};

std::vector<Field> Fields(const ModelSpec& spec, Family family) {
  const auto& m = spec.moe;
  std::vector<Field> f = {
      {"vocab_size", spec.vocab, "model.vocab_size", nullptr},
      {"hidden_size", spec.hidden, "model.hidden_size", nullptr},
      {"num_hidden_layers", spec.num_layers, "model.num_layers", nullptr},
      {"num_attention_heads", spec.num_heads, "model.num_heads", nullptr},
      {"num_key_value_heads", spec.num_kv_heads, "model.num_kv_heads",
       family == Family::kQwen2Moe ? 16 : 8},
      // Absent, every family takes hidden_size / num_attention_heads (compared above).
      {"head_dim", spec.head_dim, "model.head_dim", spec.hidden / std::max(1, spec.num_heads)},
      {"hidden_act", "silu", "the SwiGLU activation (silu)", "silu"},
      {"rms_norm_eps", Pretty(spec.norm_eps), "model.norm_eps",
       family == Family::kQwen2Moe ? 1e-6 : 1e-5, true},
      {"rope_theta", Pretty(spec.rope_theta), "model.rope_theta", nullptr, true},
      {"tie_word_embeddings", spec.tie_embeddings, "model.tie_embeddings", false},
      {"num_experts_per_tok", m.top_k, "model.moe.top_k",
       family == Family::kMixtral ? 2 : family == Family::kQwen2Moe ? 4 : 8},
  };
  const bool dense = HasDenseLayer(spec);
  switch (family) {
    case Family::kMixtral:
      f.push_back({"num_local_experts", m.num_experts, "model.moe.num_experts", 8});
      f.push_back({"intermediate_size", m.expert_ffn, "model.moe.expert_ffn_hidden_size", 14336});
      f.push_back({"sliding_window", nullptr, "full causal attention (no sliding window)", nullptr});
      break;
    case Family::kQwen2Moe:
      f.push_back({"num_experts", m.num_experts, "model.moe.num_experts", 60});
      f.push_back({"moe_intermediate_size", m.expert_ffn, "model.moe.expert_ffn_hidden_size", 1408});
      f.push_back({"intermediate_size", spec.ffn, "model.ffn_hidden_size", 5632, false, dense});
      f.push_back({"shared_expert_intermediate_size", 0, "model.moe.num_shared_experts (none)", 5632});
      f.push_back({"norm_topk_prob", RenormalisedSoftmax(spec), "model.moe.score_function/normalize_topk",
                   false});
      f.push_back({"qkv_bias", false, "attention without biases", true});
      f.push_back({"use_sliding_window", false, "full causal attention (no sliding window)", false});
      break;
    case Family::kGlm4Moe:
      f.push_back({"n_routed_experts", m.num_experts, "model.moe.num_experts", 128});
      f.push_back({"moe_intermediate_size", m.expert_ffn, "model.moe.expert_ffn_hidden_size", 1408});
      f.push_back({"intermediate_size", spec.ffn, "model.ffn_hidden_size", 10944, false, dense});
      f.push_back({"n_shared_experts", m.num_shared_experts, "model.moe.num_shared_experts", 1});
      f.push_back({"first_k_dense_replace", LeadingDenseLayers(spec), "model.moe.first_dense_layers", 1});
      f.push_back({"routed_scaling_factor", Pretty(m.topk.scaling_factor), "model.moe.scaling_factor",
                   1.0, true});
      f.push_back({"n_group", m.topk.num_groups > 0 ? m.topk.num_groups : 1, "model.moe.num_groups", 1});
      f.push_back({"topk_group", m.topk.num_groups > 0 ? m.topk.group_topk : 1, "model.moe.group_topk", 1});
      f.push_back({"norm_topk_prob", m.topk.normalize, "model.moe.normalize_topk", true});
      f.push_back({"attention_bias", false, "attention without biases", false});
      f.push_back({"use_qk_norm", false, "attention without q/k norms", false});
      f.push_back({"partial_rotary_factor", 1.0, "RoPE over the whole head", 0.5, true});
      break;
  }
  return f;
}

// The value of `key` in a config.json: RoPE settings may sit in rope_parameters (transformers 5)
// or at the top level (transformers 4). Null when absent.
json Lookup(const json& cfg, const std::string& key) {
  if (cfg.contains(key)) return cfg[key];
  if ((key == "rope_theta" || key == "partial_rotary_factor") && cfg.contains("rope_parameters") &&
      cfg["rope_parameters"].is_object() && cfg["rope_parameters"].contains(key)) {
    return cfg["rope_parameters"][key];
  }
  return json();
}

bool SameValue(const Field& field, const json& hf) {
  if (field.is_float) {
    return hf.is_number() && static_cast<float>(hf.get<double>()) ==
                                 static_cast<float>(field.value.get<double>());
  }
  return hf == field.value;
}

// The MoE layers a Qwen2-MoE config makes: layer l is sparse unless listed in mlp_only_layers, and
// when (l + 1) % decoder_sparse_step == 0.
absl::StatusOr<std::vector<bool>> Qwen2MoeLayers(const json& cfg, int layers) {
  int64_t step = 1;
  const json s = Lookup(cfg, "decoder_sparse_step");
  if (!s.is_null()) {
    if (!s.is_number_integer() || s.get<int64_t>() < 1) {
      return absl::InvalidArgumentError("decoder_sparse_step is not a positive integer");
    }
    step = s.get<int64_t>();
  }
  std::vector<bool> moe(layers);
  for (int l = 0; l < layers; ++l) moe[l] = (l + 1) % step == 0;
  const json only = Lookup(cfg, "mlp_only_layers");
  if (!only.is_null()) {
    if (!only.is_array()) return absl::InvalidArgumentError("mlp_only_layers is not a list");
    for (const json& l : only) {
      if (!l.is_number_integer()) return absl::InvalidArgumentError("mlp_only_layers holds a non-integer");
      const int64_t i = l.get<int64_t>();
      if (i >= 0 && i < layers) moe[i] = false;
    }
  }
  return moe;
}

std::string LayerList(const std::vector<bool>& moe, bool want) {
  std::vector<int> l;
  for (size_t i = 0; i < moe.size(); ++i) {
    if (moe[i] == want) l.push_back(static_cast<int>(i));
  }
  return absl::StrCat("[", absl::StrJoin(l, ", "), "]");
}

}  // namespace

absl::string_view FamilyName(Family family) {
  switch (family) {
    case Family::kMixtral: return "mixtral";
    case Family::kQwen2Moe: return "qwen2_moe";
    case Family::kGlm4Moe: return "glm4_moe";
  }
  return "?";
}

absl::string_view Architecture(Family family) {
  switch (family) {
    case Family::kMixtral: return "MixtralForCausalLM";
    case Family::kQwen2Moe: return "Qwen2MoeForCausalLM";
    case Family::kGlm4Moe: return "Glm4MoeForCausalLM";
  }
  return "?";
}

absl::StatusOr<Family> ParseFamily(absl::string_view name) {
  for (Family f : kAllFamilies) {
    if (FamilyName(f) == name) return f;
  }
  return absl::InvalidArgumentError(
      absl::StrCat("unknown Hugging Face family '", name, "' (auto, mixtral, qwen2_moe, glm4_moe)"));
}

std::vector<std::string> FamilyRefusals(const ModelSpec& spec, Family family) {
  const auto& m = spec.moe;
  const auto& t = m.topk;
  std::vector<std::string> r;
  const std::string fam(FamilyName(family));
  bool any_moe = false;
  for (bool moe : spec.moe_layer) any_moe |= moe;
  if (!any_moe || m.num_experts <= 0) {
    r.push_back("the model has no MoE layer (model.moe.num_experts / layer_freq); export a dense "
                "model as Llama is not built");
  }
  if (m.expert_bias) {
    r.push_back("model.moe.expert_bias: the aux-loss-free bias is router state outside the weights "
                "and is not exported");
  }
  if (m.force_balanced_routing) {
    r.push_back("model.moe.force_balanced_routing: the benchmark routing ignores the router, which no "
                "family can express");
  }
  if (family != Family::kGlm4Moe && t.scaling_factor != 1.0f) {
    r.push_back(absl::StrCat("model.moe.scaling_factor ", t.scaling_factor, ": ", fam,
                             " does not scale the routing weights"));
  }
  if (family != Family::kGlm4Moe && t.num_groups > 0) {
    r.push_back(absl::StrCat("model.moe.num_groups ", t.num_groups, ": ", fam,
                             " has no group-limited routing"));
  }
  switch (family) {
    case Family::kMixtral:
      if (!RenormalisedSoftmax(spec)) {
        r.push_back("model.moe.score_function: Mixtral routes by softmax, top-k, renormalised "
                    "(softmax, or softmax_pre with normalize_topk)");
      }
      if (m.num_shared_experts > 0) r.push_back("model.moe.num_shared_experts: Mixtral has no shared experts");
      if (HasDenseLayer(spec)) {
        r.push_back(absl::StrCat("dense layers ", LayerList(spec.moe_layer, false),
                                 " (model.moe.first_dense_layers/layer_freq): every Mixtral layer is MoE"));
      }
      break;
    case Family::kQwen2Moe:
      if (t.score == ScoreFunction::kSigmoid) {
        r.push_back("model.moe.score_function sigmoid: Qwen2-MoE routes by softmax");
      }
      if (m.num_shared_experts > 0) {
        r.push_back("model.moe.num_shared_experts: Qwen2-MoE scales its shared expert by "
                    "sigmoid(shared_expert_gate·x), moefold's shared experts are ungated");
      }
      break;
    case Family::kGlm4Moe:
      if (t.score != ScoreFunction::kSigmoid) {
        r.push_back("model.moe.score_function: GLM-4-MoE (DeepSeek-style) routes by sigmoid");
      }
      if (t.normalize && t.k == 1) {
        r.push_back("model.moe.normalize_topk with top_k 1: GLM-4-MoE renormalises a single weight "
                    "to 1, moefold keeps it");
      }
      if (t.num_groups > 0 && (t.group_topk <= 0 || t.k != 2 * t.group_topk)) {
        r.push_back(absl::StrCat("model.moe.num_groups with top_k ", t.k, " / group_topk ",
                                 t.group_topk, ": GLM-4-MoE scores a group by its top 2 experts, "
                                 "moefold by its top top_k/group_topk"));
      }
      if (t.num_groups == 0 && m.num_experts < 2) {
        r.push_back("model.moe.num_experts < 2: GLM-4-MoE's group score needs two experts");
      }
      if (m.num_shared_experts > 0 && m.shared_ffn > 0 && m.shared_ffn != m.expert_ffn) {
        r.push_back(absl::StrCat("model.moe.shared_expert_ffn_hidden_size ", m.shared_ffn,
                                 " != expert_ffn_hidden_size ", m.expert_ffn,
                                 ": GLM-4-MoE's shared experts are n_shared_experts × moe_intermediate_size wide"));
      }
      for (int l = LeadingDenseLayers(spec); l < spec.num_layers; ++l) {
        if (!spec.moe_layer[l]) {
          r.push_back(absl::StrCat("dense layers ", LayerList(spec.moe_layer, false),
                                   ": GLM-4-MoE has dense layers only first (first_k_dense_replace)"));
          break;
        }
      }
      break;
  }
  return r;
}

absl::StatusOr<Family> ChooseFamily(const ModelSpec& spec, absl::string_view family) {
  if (family != "auto") {
    MF_ASSIGN_OR_RETURN(const Family f, ParseFamily(family));
    const std::vector<std::string> r = FamilyRefusals(spec, f);
    if (r.empty()) return f;
    return absl::InvalidArgumentError(absl::StrCat("the model cannot be exported as ", FamilyName(f),
                                                   " (", Architecture(f), "):\n  ",
                                                   absl::StrJoin(r, "\n  ")));
  }
  std::vector<std::string> all;
  for (Family f : kAllFamilies) {
    const std::vector<std::string> r = FamilyRefusals(spec, f);
    if (r.empty()) return f;
    all.push_back(absl::StrCat(FamilyName(f), ": ", absl::StrJoin(r, "; ")));
  }
  return absl::InvalidArgumentError(absl::StrCat(
      "no Hugging Face family represents the model:\n  ", absl::StrJoin(all, "\n  ")));
}

std::string ToFamilyName(Family family, const std::string& name) {
  if (family != Family::kMixtral) return name;
  if (absl::EndsWith(name, ".mlp.gate.weight")) {
    return absl::StrReplaceAll(name, {{".mlp.gate.weight", ".block_sparse_moe.gate.weight"}});
  }
  const size_t at = name.find(".mlp.experts.");
  if (at == std::string::npos) return name;
  std::string tail = name.substr(at + 5);  // "experts.E.gate_proj.weight"
  tail = absl::StrReplaceAll(tail, {{".gate_proj.", ".w1."}, {".up_proj.", ".w3."}, {".down_proj.", ".w2."}});
  return absl::StrCat(name.substr(0, at), ".block_sparse_moe.", tail);
}

std::vector<std::pair<std::string, Tensor>> FamilyExtras(const ModelSpec& spec, Family family) {
  std::vector<std::pair<std::string, Tensor>> out;
  const int64_t h = spec.hidden;
  for (int l = 0; l < spec.num_layers; ++l) {
    if (!spec.moe_layer[l]) continue;
    const std::string p = absl::StrCat("model.layers.", l, ".mlp.");
    if (family == Family::kQwen2Moe) {
      out.push_back({p + "shared_expert.gate_proj.weight", Tensor::Zeros({0, h}, DType::kF32)});
      out.push_back({p + "shared_expert.up_proj.weight", Tensor::Zeros({0, h}, DType::kF32)});
      out.push_back({p + "shared_expert.down_proj.weight", Tensor::Zeros({h, 0}, DType::kF32)});
      out.push_back({p + "shared_expert_gate.weight", Tensor::Zeros({1, h}, DType::kF32)});
    } else if (family == Family::kGlm4Moe) {
      out.push_back({p + "gate.e_score_correction_bias",
                     Tensor::Zeros({spec.moe.num_experts}, DType::kF32)});
      if (spec.moe.num_shared_experts == 0) {
        out.push_back({p + "shared_experts.gate_proj.weight", Tensor::Zeros({0, h}, DType::kF32)});
        out.push_back({p + "shared_experts.up_proj.weight", Tensor::Zeros({0, h}, DType::kF32)});
        out.push_back({p + "shared_experts.down_proj.weight", Tensor::Zeros({h, 0}, DType::kF32)});
      }
    }
  }
  return out;
}

std::vector<std::pair<std::string, Shape>> ExpectedTensors(const ModelSpec& spec, Family family) {
  const int64_t h = spec.hidden, d = spec.head_dim, v = spec.vocab;
  const int64_t q = static_cast<int64_t>(spec.num_heads) * d, kv = static_cast<int64_t>(spec.num_kv_heads) * d;
  std::vector<std::pair<std::string, Shape>> out;
  auto add = [&](const std::string& name, Shape shape) {
    out.push_back({ToFamilyName(family, name), std::move(shape)});
  };
  auto mlp = [&](const std::string& p, int64_t f) {
    add(p + "gate_proj.weight", {f, h});
    add(p + "up_proj.weight", {f, h});
    add(p + "down_proj.weight", {h, f});
  };
  add("model.embed_tokens.weight", {v, h});
  for (int l = 0; l < spec.num_layers; ++l) {
    const std::string p = absl::StrCat("model.layers.", l, ".");
    add(p + "input_layernorm.weight", {h});
    add(p + "self_attn.q_proj.weight", {q, h});
    add(p + "self_attn.k_proj.weight", {kv, h});
    add(p + "self_attn.v_proj.weight", {kv, h});
    add(p + "self_attn.o_proj.weight", {h, q});
    add(p + "post_attention_layernorm.weight", {h});
    if (!spec.moe_layer[l]) {
      mlp(p + "mlp.", spec.ffn);
      continue;
    }
    add(p + "mlp.gate.weight", {spec.moe.num_experts, h});
    for (int e = 0; e < spec.moe.num_experts; ++e) {
      mlp(absl::StrCat(p, "mlp.experts.", e, "."), spec.moe.expert_ffn);
    }
    if (spec.moe.num_shared_experts > 0) mlp(p + "mlp.shared_experts.", SharedFfn(spec));
  }
  add("model.norm.weight", {h});
  if (!spec.tie_embeddings) add("lm_head.weight", {v, h});
  for (const auto& [name, value] : FamilyExtras(spec, family)) out.push_back({name, value.shape()});
  return out;
}

std::string ConfigJson(const ModelSpec& spec, Family family, int64_t max_positions, DType dtype) {
  json cfg = json::object();
  cfg["architectures"] = {std::string(Architecture(family))};
  cfg["model_type"] = std::string(FamilyName(family));
  for (const Field& f : Fields(spec, family)) cfg[f.key] = f.value;
  // Both spellings of the RoPE settings: transformers 5 reads rope_parameters, 4 the top level.
  cfg["rope_parameters"] = {{"rope_type", "default"}, {"rope_theta", Pretty(spec.rope_theta)}};
  if (family == Family::kGlm4Moe) {
    cfg["rope_parameters"]["partial_rotary_factor"] = 1.0;
    cfg["num_mtp_layers"] = 0;
  }
  if (family == Family::kQwen2Moe) {
    cfg["decoder_sparse_step"] = 1;
    std::vector<int> dense;
    for (int l = 0; l < spec.num_layers; ++l) {
      if (!spec.moe_layer[l]) dense.push_back(l);
    }
    cfg["mlp_only_layers"] = dense;
  }
  cfg["max_position_embeddings"] = max_positions;
  cfg["torch_dtype"] = dtype == DType::kBF16 ? "bfloat16" : "float32";
  cfg["initializer_range"] = Pretty(spec.init_std);
  cfg["attention_dropout"] = 0.0;
  cfg["use_cache"] = true;
  return cfg.dump(2) + "\n";
}

absl::StatusOr<Family> CheckConfigJson(const std::string& path, const std::string& text,
                                       const ModelSpec& spec, int64_t seq_len) {
  const json cfg = json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (cfg.is_discarded() || !cfg.is_object()) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": not a JSON object"));
  }
  const json type = Lookup(cfg, "model_type");
  if (!type.is_string()) return absl::InvalidArgumentError(absl::StrCat(path, ": no model_type"));
  absl::StatusOr<Family> family = ParseFamily(type.get<std::string>());
  if (!family.ok()) {
    return absl::InvalidArgumentError(absl::StrCat(path, " model_type '", type.get<std::string>(),
                                                   "' is not a family moefold reads (mixtral, qwen2_moe, glm4_moe)"));
  }
  const std::vector<std::string> refusals = FamilyRefusals(spec, *family);
  if (!refusals.empty()) {
    return absl::InvalidArgumentError(absl::StrCat(path, " is a ", FamilyName(*family),
                                                   " model, which the experiment's model is not:\n  ",
                                                   absl::StrJoin(refusals, "\n  ")));
  }
  std::vector<std::string> problems;
  for (const Field& f : Fields(spec, *family)) {
    if (!f.checked) continue;
    json hf = Lookup(cfg, f.key);
    if (hf.is_null() && !(f.key == "sliding_window")) {
      if (f.hf_default.is_null()) {
        problems.push_back(absl::StrCat(path, " has no ", f.key, " (", f.ours, " is ", f.value.dump(), ")"));
        continue;
      }
      hf = f.hf_default;
    }
    if (!SameValue(f, hf)) {
      problems.push_back(absl::StrCat(path, " ", f.key, " ", hf.dump(), " != ", f.ours, " ", f.value.dump()));
    }
  }
  for (const char* key : {"rope_parameters", "rope_scaling"}) {
    const json rope = Lookup(cfg, key);
    if (!rope.is_object()) continue;
    for (const char* type_key : {"rope_type", "type"}) {
      if (rope.contains(type_key) && rope[type_key] != "default") {
        problems.push_back(absl::StrCat(path, " ", key, ".", type_key, " ", rope[type_key].dump(),
                                        " != moefold's plain RoPE \"default\""));
      }
    }
  }
  if (*family == Family::kQwen2Moe) {
    absl::StatusOr<std::vector<bool>> moe = Qwen2MoeLayers(cfg, spec.num_layers);
    if (!moe.ok()) {
      problems.push_back(absl::StrCat(path, " ", moe.status().message()));
    } else if (*moe != spec.moe_layer) {
      problems.push_back(absl::StrCat(path, " mlp_only_layers/decoder_sparse_step make layers ",
                                      LayerList(*moe, false), " dense != model.moe.first_dense_layers/",
                                      "layer_freq ", LayerList(spec.moe_layer, false)));
    }
  }
  const json max_pos = Lookup(cfg, "max_position_embeddings");
  if (max_pos.is_number_integer() && max_pos.get<int64_t>() < seq_len) {
    problems.push_back(absl::StrCat(path, " max_position_embeddings ", max_pos.get<int64_t>(),
                                    " < train.seq_len ", seq_len));
  }
  if (!problems.empty()) {
    return absl::InvalidArgumentError(absl::StrCat("config.json disagrees with the experiment:\n  ",
                                                   absl::StrJoin(problems, "\n  ")));
  }
  return *family;
}

}  // namespace moefold::hf
