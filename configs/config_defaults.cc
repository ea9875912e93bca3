// Default values for every field of the schema. A field added to moefold.proto gets its default
// here (tests/configs checks that no scalar field is left unset).
#include "configs/config_defaults.h"

namespace moefold::config {

int DefaultWarmupSteps(int steps) { return steps / 10; }

ExperimentConfig DefaultConfig() {
  ExperimentConfig c;
  c.set_name("");  // "" = the YAML file's stem

  ModelConfig* m = c.mutable_model();
  m->set_vocab_size(257);  // the byte tokenizer: 256 bytes + end-of-document
  m->set_hidden_size(256);
  m->set_num_layers(4);
  m->set_num_heads(4);
  m->set_num_kv_heads(4);
  m->set_head_dim(0);  // hidden_size / num_heads
  m->set_ffn_hidden_size(768);
  m->set_rope_theta(10000.0f);
  m->set_norm_eps(1e-5f);
  m->set_tie_embeddings(false);
  m->set_init_std(0.02f);
  m->set_init_from("");

  MoeConfig* moe = m->mutable_moe();
  moe->set_num_experts(0);  // dense unless the experiment asks for experts
  moe->set_top_k(2);
  moe->set_expert_ffn_hidden_size(0);  // must be set with num_experts (Validate says so)
  moe->set_num_shared_experts(0);
  moe->set_shared_expert_ffn_hidden_size(0);
  moe->set_first_dense_layers(0);
  moe->set_layer_freq(1);
  moe->set_score_function("softmax");
  moe->set_normalize_topk(false);
  moe->set_scaling_factor(1.0f);
  moe->set_num_groups(0);
  moe->set_group_topk(0);
  moe->set_aux_loss_type("batch");
  moe->set_aux_loss_coeff(1e-2f);
  moe->set_z_loss_coeff(0.0f);
  moe->set_capacity_factor(0.0f);  // dropless
  moe->set_expert_bias(false);
  moe->set_expert_bias_rate(1e-3f);  // DeepSeek-V3's bias update speed
  moe->set_drop_policy("probs");
  moe->set_pad_to_capacity(false);
  moe->set_force_balanced_routing(false);
  moe->set_dispatch_chunks(0);  // auto: 2 under expert parallelism

  ParallelConfig* p = c.mutable_parallel();
  p->set_tp(1);
  p->set_cp(1);
  p->set_dp(0);  // derived: world / (tp · cp · pp)
  p->set_pp(1);
  p->set_etp(1);
  p->set_ep(1);
  p->set_order("tp-cp-ep-dp-pp");  // Megatron-Core's default
  p->set_sequence_parallel(false);
  p->set_virtual_stages(1);
  p->set_zero1(false);
  p->set_schedule("auto");
  p->set_first_stage_layers(0);
  p->set_last_stage_layers(0);
  p->set_grad_bucket_elements(1 << 22);  // 16 MiB of f32 gradients
  p->set_comm_timeout_s(300);

  TrainConfig* t = c.mutable_train();
  t->set_steps(100);
  t->set_global_batch_size(8);
  t->set_micro_batch_size(1);
  t->set_seq_len(256);
  t->set_seed(1234);
  t->set_device("cpu");
  t->set_max_loss_spike(0.0f);  // off
  t->set_eval_every(0);         // off
  t->set_eval_iters(10);
  t->set_peak_tflops(0);        // from the device
  t->set_hang_timeout_s(60);
  t->set_verify_every(0);       // off
  t->set_on_mismatch("stop");

  OptimizerConfig* o = c.mutable_optimizer();
  o->set_name("adamw");
  o->set_lr(3e-4f);
  o->set_min_lr(3e-5f);
  o->set_beta1(0.9f);
  o->set_beta2(0.95f);
  o->set_eps(1e-8f);
  o->set_weight_decay(0.1f);
  o->set_grad_clip(1.0f);
  o->set_schedule("cosine");
  o->set_warmup_steps(DefaultWarmupSteps(t->steps()));
  o->set_decay_fraction(0.2f);  // wsd only
  o->set_spam_reset_interval(500);
  o->set_spam_theta(5000.0f);
  o->set_spam_clip_delay(20);
  o->set_spam_warmup_steps(150);
  o->set_spam_gamma1(0.7f);
  o->set_spam_gamma2(0.9f);
  o->set_spam_gamma3(0.999f);

  PrecisionConfig* pr = c.mutable_precision();
  pr->set_compute_dtype("f32");
  pr->set_fp8_recipe("none");
  pr->set_amax_history(16);
  pr->set_fp8_grad_format("e5m2");
  pr->set_pow2_scales(false);
  pr->set_fp8_fused_producers(true);
  pr->set_fp8_dispatch(true);
  pr->set_fp8_gather(true);

  MemoryConfig* mem = c.mutable_memory();
  mem->set_activation_policy("keep");
  mem->set_swap_fraction(1.0f);  // with policy "swap": every token's activations
  mem->set_recompute("selective");
  mem->set_swap_auto(false);
  mem->set_host_budget_gb(0.0f);
  mem->set_resident_layers(1);
  mem->set_host_link_gbps(0.0f);

  CompressionConfig* comp = c.mutable_compression();
  comp->set_method("none");
  comp->set_compressor("int8");  // per-block absmax int8, the safe choice once ef21 is on
  comp->set_topk_fraction(0.01f);
  comp->set_block_size(128);
  comp->set_warm_start_steps(10);
  comp->set_reanchor_every(0);  // 0 = anchor once, at warm_start_steps

  ReweightingConfig* rw = c.mutable_reweighting();
  rw->set_strategy("none");
  rw->set_temperature(1.0f);
  rw->set_warmup_steps(0);
  rw->set_warmup_temperature(0.0f);  // 0 = uniform weights during the warm-up
  rw->set_population("global");

  DataConfig* d = c.mutable_data();
  d->set_path("");  // the built-in corpus
  d->set_tokenizer("byte");
  d->set_seed(1234);
  d->set_cache_dir("");
  d->set_split("");  // all sequences train
  d->set_tokenizer_path("");

  LoggingConfig* log = c.mutable_logging();
  log->set_log_every(1);
  log->set_progress("auto");
  log->set_tensorboard(false);
  log->set_trace_steps("");

  CheckpointConfig* ck = c.mutable_checkpoint();
  ck->set_dir("");
  ck->set_every(0);  // never
  ck->set_resume(false);
  ck->set_keep_last(0);  // keep all
  ck->set_on_error("stop");
  ck->set_async(true);
  return c;
}

}  // namespace moefold::config
