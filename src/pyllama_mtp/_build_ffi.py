"""Emit the C source of the cffi extension ``pyllama_mtp._lib`` (run by CMake).

API (out-of-line) mode: the emitted C includes our header and the patched
``llama.h``, so the compiler checks every declaration below against them.
cffi releases the GIL around every call in this mode.

    python pyllama_mtp/_build_ffi.py OUT.c
"""

from __future__ import annotations

import sys

import cffi

CDEF = """
typedef int32_t llama_token;
typedef int32_t llama_pos;
typedef int32_t llama_seq_id;
struct llama_model;
struct llama_context;
struct llama_vocab;

enum llama_mtp_status {
    LLAMA_MTP_OK, LLAMA_MTP_ERR_INVALID_ARG, LLAMA_MTP_ERR_LOAD, LLAMA_MTP_ERR_CONTEXT,
    LLAMA_MTP_ERR_DECODE, LLAMA_MTP_ERR_KV_FULL, LLAMA_MTP_ERR_INTERNAL, LLAMA_MTP_ERR_IO, LLAMA_MTP_ERR_REMOTE, ...
};
enum llama_mtp_split_mode { LLAMA_MTP_SPLIT_NONE, LLAMA_MTP_SPLIT_LAYER, LLAMA_MTP_SPLIT_ROW, ... };

const char * llama_mtp_last_error(void);
void llama_mtp_init(int32_t verbosity);
const char * llama_mtp_llama_commit(void);
const char * llama_mtp_patches(void);
const char * llama_mtp_backends(void);
const char * llama_mtp_devices(void);
bool llama_mtp_local_gpu(void);

struct llama_mtp_tensor_override { const char * pattern; const char * device; };
struct llama_mtp_model_params {
    int32_t n_gpu_layers; bool use_mmap; bool vocab_only;
    const struct llama_mtp_tensor_override * tensor_overrides; int32_t n_tensor_overrides;
    const char * const * rpc_servers; int32_t n_rpc_servers; const char * const * devices; int32_t n_devices;
    int32_t split_mode; int32_t main_device; const float * tensor_split; int32_t n_tensor_split;
};
struct llama_mtp_model_params llama_mtp_model_default_params(void);
int32_t llama_mtp_model_load(const char * path, struct llama_mtp_model_params params, struct llama_model ** out);
const char * llama_mtp_model_devices(const struct llama_model * model);

int32_t llama_mtp_model_tensor_placement(const struct llama_model * model, int32_t i, const char ** name,
                                         const char ** buffer);
int32_t llama_mtp_model_quantize(const char * src, const char * dst, const char * type, int32_t n_threads,
                                 bool allow_requantize);
const char * llama_mtp_quant_type_name(int32_t i);
struct llama_mtp_context_params {
    uint32_t n_ctx; uint32_t n_batch; uint32_t n_ubatch; int32_t n_threads;
    bool embeddings; bool offload_kqv; struct llama_context * ctx_other; int32_t ctx_type; bool swa_full;
    int32_t type_kv; int32_t flash_attn; bool exact;
};
struct llama_mtp_context_params llama_mtp_context_default_params(void);
int32_t llama_mtp_context_create(struct llama_model * model, struct llama_mtp_context_params params,
                                 struct llama_context ** out);
int32_t llama_mtp_decode(struct llama_context * ctx, const llama_token * tokens, int32_t n, llama_pos pos,
                         llama_seq_id seq, int32_t logits_mode);
int32_t llama_mtp_generate_greedy(struct llama_context * ctx, const llama_token * prompt, int32_t n_prompt,
                                  int32_t n_max, llama_token * out, int32_t * n_out);

struct llama_mtp_memory { size_t model; size_t context; size_t compute; };
int32_t llama_mtp_context_memory(const struct llama_context * ctx, struct llama_mtp_memory * out);
int32_t llama_mtp_kv_roundtrip(int32_t type, const float * values, int64_t n, float * out);

#define LLAMA_MTP_MAX_DRAFT 16
enum llama_mtp_pipeline { LLAMA_MTP_PIPELINE_SYNC = 0, LLAMA_MTP_PIPELINE_ASYNC = 1 };
enum llama_mtp_draft_policy { LLAMA_MTP_DRAFT_FIXED = 0, LLAMA_MTP_DRAFT_AUTO = 1 };
struct llama_mtp_session_params {
    int32_t n_draft; int32_t draft_policy; float p_min; uint32_t n_ctx; uint32_t n_batch; int32_t n_threads;
    bool swa_full; bool offload_kqv; bool backend_sampling; bool fused_draft; int32_t pipeline; int32_t speculate_row;
    int32_t type_kv;
    int32_t flash_attn;
    float temperature; int32_t top_k; float top_p; uint32_t seed; bool exact; const char * trace_path;
};
struct llama_mtp_step_result {
    int32_t n_tokens; int32_t n_drafted; int32_t n_accepted; llama_token draft[16]; bool done;
};
struct llama_mtp_stats {
    int64_t n_prompt; int64_t n_prompt_reused; int64_t n_generated; int64_t n_drafted; int64_t n_accepted;
    int64_t n_steps; int64_t n_target_passes; int64_t n_draft_calls; int64_t n_draft_speculative;
    int64_t n_draft_cancelled; int64_t n_sampled_on_backend;
    int64_t t_prompt_us; int64_t t_generate_us;
    int64_t drafted_by_pos[16]; int64_t accepted_by_pos[16]; int64_t steps_by_k[17];
};
struct llama_mtp_session;
struct llama_mtp_session_params llama_mtp_session_default_params(void);
int32_t llama_mtp_session_create(struct llama_model * target, struct llama_model * drafter,
                                 struct llama_mtp_session_params params, struct llama_mtp_session ** out);
void llama_mtp_session_free(struct llama_mtp_session * session);
int32_t llama_mtp_session_start(struct llama_mtp_session * session, const llama_token * prompt, int32_t n_prompt,
                                int32_t n_max);
int32_t llama_mtp_session_step(struct llama_mtp_session * session, llama_token * out, int32_t cap,
                               struct llama_mtp_step_result * result);
int32_t llama_mtp_session_generate(struct llama_mtp_session * session, const llama_token * prompt, int32_t n_prompt,
                                   int32_t n_max, llama_token * out, int32_t * n_out);
void llama_mtp_session_stats(const struct llama_mtp_session * session, struct llama_mtp_stats * out);
int32_t llama_mtp_session_reset(struct llama_mtp_session * session);
struct llama_context * llama_mtp_session_target_context(struct llama_mtp_session * session);
struct llama_context * llama_mtp_session_draft_context(struct llama_mtp_session * session);

int32_t llama_mtp_session_set_sampling(struct llama_mtp_session * session, float temperature, int32_t top_k,
                                       float top_p, uint32_t seed);

struct llama_mtp_chat_template;
struct llama_mtp_chat_message { const char * role; const char * content; };
struct llama_mtp_chat_params { bool add_generation_prompt; bool enable_thinking; };
struct llama_mtp_chat_params llama_mtp_chat_default_params(void);
int32_t llama_mtp_chat_template_init(const struct llama_model * model, const char * template_override,
                                     struct llama_mtp_chat_template ** out);
void llama_mtp_chat_template_free(struct llama_mtp_chat_template * tmpl);
int32_t llama_mtp_chat_template_apply(struct llama_mtp_chat_template * tmpl,
                                      const struct llama_mtp_chat_message * messages, int32_t n_messages,
                                      struct llama_mtp_chat_params params);
const char * llama_mtp_chat_template_prompt(const struct llama_mtp_chat_template * tmpl);
int32_t llama_mtp_chat_template_n_stops(const struct llama_mtp_chat_template * tmpl);
const char * llama_mtp_chat_template_stop(const struct llama_mtp_chat_template * tmpl, int32_t i);

struct llama_segmentation;
#define LLAMA_SEGMENTATION_MAX_FRAMES ...
#define LLAMA_SEGMENTATION_MAX_WINDOWS ...
struct llama_mtp_segmenter_params { int32_t n_threads; bool use_gpu; bool fused_lstm; };
struct llama_mtp_segmenter_params llama_mtp_segmenter_default_params(void);
int32_t llama_mtp_segmenter_load(const char * path, struct llama_mtp_segmenter_params params,
                                 struct llama_segmentation ** out);
void llama_mtp_segmenter_free(struct llama_segmentation * seg);
void llama_mtp_segmenter_info(const struct llama_segmentation * seg, int32_t * sample_rate, int32_t * n_classes);
int64_t llama_mtp_segmenter_n_frames(const struct llama_segmentation * seg, int64_t n_samples);
int32_t llama_mtp_segmenter_run(struct llama_segmentation * seg, const float * samples, int64_t n_total,
                                int64_t n_samples, int64_t step, int64_t n_windows, float * out, int64_t n_out);

/* llama.h, used as is */
void llama_model_free(struct llama_model * model);
void llama_free(struct llama_context * ctx);
const struct llama_vocab * llama_model_get_vocab(const struct llama_model * model);
int32_t llama_vocab_n_tokens(const struct llama_vocab * vocab);
llama_token llama_vocab_bos(const struct llama_vocab * vocab);
llama_token llama_vocab_eos(const struct llama_vocab * vocab);
bool llama_vocab_is_eog(const struct llama_vocab * vocab, llama_token token);
int32_t llama_model_n_embd(const struct llama_model * model);
int32_t llama_model_n_embd_out(const struct llama_model * model);
int32_t llama_model_n_layer(const struct llama_model * model);
int32_t llama_model_n_layer_nextn(const struct llama_model * model);
int32_t llama_model_meta_count(const struct llama_model * model);
int32_t llama_model_meta_key_by_index(const struct llama_model * model, int32_t i, char * buf, size_t buf_size);
int32_t llama_model_meta_val_str_by_index(const struct llama_model * model, int32_t i, char * buf, size_t buf_size);
int32_t llama_model_desc(const struct llama_model * model, char * buf, size_t buf_size);
uint64_t llama_model_size(const struct llama_model * model);
int32_t llama_tokenize(const struct llama_vocab * vocab, const char * text, int32_t text_len, llama_token * tokens,
                       int32_t n_tokens_max, bool add_special, bool parse_special);
int32_t llama_token_to_piece(const struct llama_vocab * vocab, llama_token token, char * buf, int32_t length,
                             int32_t lstrip, bool special);
int32_t llama_detokenize(const struct llama_vocab * vocab, const llama_token * tokens, int32_t n_tokens, char * text,
                         int32_t text_len_max, bool remove_special, bool unparse_special);
const struct llama_model * llama_get_model(const struct llama_context * ctx);
uint32_t llama_n_ctx(const struct llama_context * ctx);
float * llama_get_logits_ith(struct llama_context * ctx, int32_t i);
float * llama_get_embeddings_ith(struct llama_context * ctx, int32_t i);
size_t llama_state_get_size(struct llama_context * ctx);
const char * llama_print_system_info(void);
"""

# llama_memory_* take an opaque handle typedef'd as a pointer; declare it the same way.
CDEF += """
typedef struct llama_memory_i * llama_memory_t;
llama_memory_t llama_get_memory(const struct llama_context * ctx);
void llama_memory_clear(llama_memory_t mem, bool data);
bool llama_memory_seq_rm(llama_memory_t mem, llama_seq_id seq_id, llama_pos p0, llama_pos p1);
llama_pos llama_memory_seq_pos_max(llama_memory_t mem, llama_seq_id seq_id);
void llama_memory_seq_add(llama_memory_t mem, llama_seq_id seq_id, llama_pos p0, llama_pos p1, llama_pos delta);
bool llama_memory_can_shift(llama_memory_t mem);
"""


def builder() -> cffi.FFI:
    ffi = cffi.FFI()
    ffi.cdef(CDEF)
    ffi.set_source("pyllama_mtp._lib", '#include "llama_mtp.h"\n#include "llama-segmentation.h"\n')
    return ffi


if __name__ == "__main__":
    builder().emit_c_code(sys.argv[1])
