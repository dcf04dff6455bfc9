// pyllama-mtp C shim: the only C surface the Python binding sees.
// llama.cpp style: plain params structs from *_default_params(), opaque handles,
// explicit free functions, int return codes (0 = ok) and a per-thread last error.
#pragma once

#include "llama.h"

#ifdef __cplusplus
extern "C" {
#endif

// Error codes returned by llama_mtp_* functions.
enum llama_mtp_status {
    LLAMA_MTP_OK              = 0,
    LLAMA_MTP_ERR_INVALID_ARG = 1,  // a bad argument (null, out of range)
    LLAMA_MTP_ERR_LOAD        = 2,  // a model file could not be loaded
    LLAMA_MTP_ERR_CONTEXT     = 3,  // a context could not be created
    LLAMA_MTP_ERR_DECODE      = 4,  // llama_decode failed (see last error)
    LLAMA_MTP_ERR_KV_FULL     = 5,  // no KV slot for the batch
    LLAMA_MTP_ERR_INTERNAL    = 6,  // a C++ exception or an unexpected failure
    LLAMA_MTP_ERR_IO          = 7,  // a file we write could not be opened
    LLAMA_MTP_ERR_REMOTE      = 8,  // an RPC server could not be reached or stopped answering
};

// Message of the last failure on this thread ("" if none); valid until the next call.
LLAMA_API const char * llama_mtp_last_error(void);

// Initialise backends once per process and route llama.cpp's log through our filter.
// verbosity: 0 = silent, 1 = errors and warnings to stderr, 2 = everything.
LLAMA_API void llama_mtp_init(int32_t verbosity);

// Build facts: the pinned llama.cpp commit, the patches applied (comma separated),
// the compiled backends (comma separated).
LLAMA_API const char * llama_mtp_llama_commit(void);
LLAMA_API const char * llama_mtp_patches(void);
LLAMA_API const char * llama_mtp_backends(void);
// The devices ggml sees now, one "name: description" per line.
LLAMA_API const char * llama_mtp_devices(void);
// Whether a local GPU can take layers (llama_supports_gpu_offload also says yes for any build
// with the RPC backend, which every build of this package has).
LLAMA_API bool llama_mtp_local_gpu(void);

// Place the tensors whose in-memory name matches pattern (ECMAScript regex, searched) on a
// device's buffer type: "CPU" or a ggml device name ("CUDA0", "Metal", ...). A drafter's tensors
// are named "mtp.<name in the file>", so "^mtp\\." addresses the drafter alone.
struct llama_mtp_tensor_override {
    const char * pattern;
    const char * device;
};

// How a model's layers are spread over its devices (llama_split_mode's first three values).
enum llama_mtp_split_mode {
    LLAMA_MTP_SPLIT_NONE  = 0,  // the whole model on main_device
    LLAMA_MTP_SPLIT_LAYER = 1,  // whole layers (and their KV) per device, in device order
    LLAMA_MTP_SPLIT_ROW   = 2,  // matrices split by rows across devices where the backend can
};

struct llama_mtp_model_params {
    int32_t n_gpu_layers;  // layers to offload; -1 = all (default -1)
    bool    use_mmap;      // map the file (auto load mode) instead of reading it (default true)
    bool    vocab_only;    // load only the vocabulary (default false)
    // placement rules, first match wins (default NULL, 0); copied, need not outlive the call
    const struct llama_mtp_tensor_override * tensor_overrides;
    int32_t                                  n_tensor_overrides;
    // The devices the offloaded layers go to, in layer order: first the devices of each RPC server
    // ("host:port" of a running `rpc-server`), then the local devices named in `devices`
    // ("CUDA0", "CPU", ...; NULL, 0 = every local GPU, or the CPU where there is none). The layers
    // not offloaded are the first ones and stay on the CPU. The remote devices come first so that
    // the last layers, the output and the KV a drafter shares stay local. Without rpc_servers and
    // devices, llama.cpp picks the devices. (default NULL, 0 and NULL, 0)
    const char * const * rpc_servers;
    int32_t              n_rpc_servers;
    const char * const * devices;
    int32_t              n_devices;
    int32_t              split_mode;   // enum llama_mtp_split_mode (default LLAMA_MTP_SPLIT_LAYER)
    int32_t              main_device;  // index in the device list above, for SPLIT_NONE (default 0)
    // share of the offloaded layers per device, in device order (default NULL, 0: with rpc_servers,
    // the remote devices share the first layers equally and the local ones keep the last two layers
    // that hold KV, everything after them and the output, so a drafter sharing that KV runs
    // locally; without, by free memory)
    const float * tensor_split;
    int32_t       n_tensor_split;
};

LLAMA_API struct llama_mtp_model_params llama_mtp_model_default_params(void);

// Load a GGUF model. On failure returns non-zero, *out = NULL, and the last error names the reason:
// LLAMA_MTP_ERR_REMOTE when an RPC server cannot be reached, LLAMA_MTP_ERR_INVALID_ARG for an
// unknown device, a malformed endpoint or a bad split.
LLAMA_API int32_t llama_mtp_model_load(const char * path, struct llama_mtp_model_params params,
                                       struct llama_model ** out);

// The model's devices, in layer order, one "name: description" per line ("" when the model runs
// on the CPU alone). Valid until the next call on this thread.
LLAMA_API const char * llama_mtp_model_devices(const struct llama_model * model);

// The model's i-th tensor, as named in memory, and the buffer it lives in ("CPU", "CUDA0", ...;
// "" when not allocated). Both strings live as long as the model. LLAMA_MTP_ERR_INVALID_ARG
// when i is out of range.
LLAMA_API int32_t llama_mtp_model_tensor_placement(const struct llama_model * model, int32_t i, const char ** name,
                                                   const char ** buffer);

// Write src's weights quantized as `type` ("Q4_K_M", "Q8_0", ...: llama-quantize's names, see
// llama_mtp_quant_type_name) to dst, with n_threads threads (<= 0: all). dst appears only when
// the whole model is written. A src whose weights are already quantized is refused unless
// allow_requantize (as llama-quantize's --allow-requantize: each step loses precision).
// LLAMA_MTP_ERR_INVALID_ARG for an unknown type, LLAMA_MTP_ERR_LOAD when src cannot be read or
// quantized, LLAMA_MTP_ERR_IO when dst cannot be written.
LLAMA_API int32_t llama_mtp_model_quantize(const char * src, const char * dst, const char * type, int32_t n_threads,
                                           bool allow_requantize);

// The i-th quantization type name llama_mtp_model_quantize accepts; NULL past the last.
LLAMA_API const char * llama_mtp_quant_type_name(int32_t i);

struct llama_mtp_context_params {
    uint32_t               n_ctx;        // context size in tokens; 0 = from the model (default 512)
    uint32_t               n_batch;      // logical batch size (default 512)
    uint32_t               n_ubatch;     // physical batch size (default 512)
    int32_t                n_threads;    // threads for generation; <= 0 = hardware threads (default 0)
    bool                   embeddings;   // output embeddings instead of logits (default false)
    bool                   offload_kqv;  // keep the KV cache on the GPU (default true)
    struct llama_context * ctx_other;    // for draft contexts: the target context (default NULL)
    int32_t                ctx_type;     // enum llama_context_type (default LLAMA_CONTEXT_TYPE_DEFAULT)
    bool                   swa_full;     // full-size sliding-window cache (default true, as llama.cpp)
    int32_t                type_kv;      // KV cache element type, an enum ggml_type (default GGML_TYPE_F16)
    int32_t                flash_attn;   // enum llama_flash_attn_type: -1 auto, 0 off, 1 on (default -1)
    // each row of a batch of up to 32 tokens bitwise equal to a one-token decode of it
    // (llama_set_batch_invariant); LLAMA_MTP_ERR_CONTEXT where a backend cannot (default false)
    bool exact;
};

LLAMA_API struct llama_mtp_context_params llama_mtp_context_default_params(void);

// Create a context. On failure returns non-zero and *out = NULL.
LLAMA_API int32_t llama_mtp_context_create(struct llama_model * model, struct llama_mtp_context_params params,
                                           struct llama_context ** out);

// Decode n tokens of one sequence starting at pos. logits_mode: 0 = last token only,
// 1 = every token. Returns LLAMA_MTP_OK, LLAMA_MTP_ERR_KV_FULL or LLAMA_MTP_ERR_DECODE.
LLAMA_API int32_t llama_mtp_decode(struct llama_context * ctx, const llama_token * tokens, int32_t n, llama_pos pos,
                                   llama_seq_id seq, int32_t logits_mode);

// Greedy generation on the target alone (the baseline the MTP loop must equal): decodes the
// prompt, then up to n_max tokens, stopping at an end-of-generation token.
// Writes the generated ids to out and their count to *n_out.
LLAMA_API int32_t llama_mtp_generate_greedy(struct llama_context * ctx, const llama_token * prompt, int32_t n_prompt,
                                            int32_t n_max, llama_token * out, int32_t * n_out);

// Memory a context holds, summed over its buffer types (bytes).
struct llama_mtp_memory {
    size_t model;    // weights
    size_t context;  // KV cache and other per-context state
    size_t compute;  // compute buffers
};

LLAMA_API int32_t llama_mtp_context_memory(const struct llama_context * ctx, struct llama_mtp_memory * out);

// Stores n values (a multiple of the type's block size) as a KV cache of type (an enum ggml_type)
// would and reads them back into out: the rounding a cache type adds to a model's keys and values.
LLAMA_API int32_t llama_mtp_kv_roundtrip(int32_t type, const float * values, int64_t n, float * out);

//
// Draft-MTP sessions: the draft -> batch verify -> accept loop, in C++.
//
// A session owns a target context and, unless n_draft == 0, an MTP draft context created
// with ctx_type = LLAMA_CONTEXT_TYPE_MTP and ctx_other = the target context, so a
// gemma4_assistant drafter reads the target's KV cache and hidden rows. The drafting itself
// is upstream's draft-mtp implementation (common/speculative.cpp). The models must outlive
// the session. A session is not thread-safe; separate sessions may run on separate threads.
// With fused_draft (patch 0009), a gemma4-assistant drafts all n_draft tokens of a step in one
// graph, each step's argmax feeding the next on the backend, and one read-back returns the ids;
// off, or with p_min > 0, drafting is upstream's loop (one decode per draft token). The greedy
// drafts are the same either way.
//

#define LLAMA_MTP_MAX_DRAFT 16

// How a session's draft and verify passes follow each other.
enum llama_mtp_pipeline {
    // draft, then verify, then accept: each step waits for the previous one
    LLAMA_MTP_PIPELINE_SYNC = 0,
    // depth 2 (patch 0012): while the target verifies step t, the draft for step t+1 is queued
    // behind it on the device from the row predicted to be the last accepted one, and cancelled
    // when the verification ends elsewhere. Same tokens, drafts and acceptance as SYNC. Needs a
    // fused gemma4-assistant drafter and backend_sampling; the session's drafter context then
    // runs its decodes on a worker thread of its own.
    LLAMA_MTP_PIPELINE_ASYNC = 1,
};

// How many of the drafts a step verifies.
enum llama_mtp_draft_policy {
    LLAMA_MTP_DRAFT_FIXED = 0,  // always n_draft (fewer only where the context or token budget ends)
    // each step verifies the k in [0, n_draft] that maximises expected tokens per second, from the
    // session's own measured draft and verify times and its running acceptance by draft position;
    // k = 0 skips the drafter. Output is unchanged: every emitted token is the target's own sample.
    LLAMA_MTP_DRAFT_AUTO = 1,
};

struct llama_mtp_session_params {
    int32_t  n_draft;  // tokens drafted per step (AUTO: at most), 0..LLAMA_MTP_MAX_DRAFT; 0 = target alone (default 3)
    int32_t  draft_policy;      // enum llama_mtp_draft_policy (default LLAMA_MTP_DRAFT_FIXED)
    float    p_min;             // stop drafting below this draft probability (default 0)
    uint32_t n_ctx;             // context size in tokens (default 2048)
    uint32_t n_batch;           // logical batch size (default 512)
    int32_t  n_threads;         // <= 0 = hardware threads (default 0)
    bool     swa_full;          // full-size sliding-window cache for the target (default false)
    bool     offload_kqv;       // KV cache on the GPU (default true)
    bool     backend_sampling;  // sample verify rows and draft top-k on the backend (default true)
    bool     fused_draft;       // gemma4-assistant: all n_draft steps in one graph (default true)
    int32_t  pipeline;          // enum llama_mtp_pipeline (default LLAMA_MTP_PIPELINE_SYNC)
    // ASYNC: queue every next draft from this verify row instead of the predicted one, to test
    // or measure cancellations (default -1: predicted)
    int32_t  speculate_row;
    int32_t  type_kv;      // KV cache element type, an enum ggml_type (default GGML_TYPE_F16)
    int32_t  flash_attn;   // enum llama_flash_attn_type: -1 auto, 0 off, 1 on (default -1)
    float    temperature;  // <= 0 = greedy (default 0)
    int32_t  top_k;        // <= 0 = off (default 0)
    float    top_p;        // >= 1 = off (default 1)
    uint32_t seed;         // sampling seed (default LLAMA_DEFAULT_SEED)
    // verify rows bitwise equal to one-token decodes, so drafting cannot change the output
    // (llama_set_batch_invariant); LLAMA_MTP_ERR_CONTEXT where a backend cannot (default false)
    bool exact;
    // NDJSON acceptance trace, one line per drafted token (default NULL: the environment
    // variable LLAMA_MTP_ACC_TRACE, if set, else off). Written as the session runs.
    const char * trace_path;
};

struct llama_mtp_step_result {
    int32_t     n_tokens;                    // tokens emitted by this step (accepted drafts + 1)
    int32_t     n_drafted;                   // draft tokens proposed this step
    int32_t     n_accepted;                  // of those, accepted by the target
    llama_token draft[LLAMA_MTP_MAX_DRAFT];  // the proposed draft tokens
    bool        done;                        // end of generation or token budget reached
};

struct llama_mtp_stats {
    int64_t n_prompt;                              // prompt tokens given
    int64_t n_prompt_reused;                       // ... of which were already in the KV (not decoded)
    int64_t n_generated;                           // tokens emitted
    int64_t n_drafted;                             // draft tokens proposed
    int64_t n_accepted;                            // draft tokens accepted
    int64_t n_steps;                               // draft -> verify -> accept steps (one verify pass each)
    int64_t n_target_passes;                       // target decode calls (prompt chunks + verify batches)
    int64_t n_draft_calls;                         // drafter calls (one per step that drafted)
    int64_t n_draft_speculative;                   // async: drafts queued behind a verify pass
    int64_t n_draft_cancelled;                     // ... of which the verification made useless
    int64_t n_sampled_on_backend;                  // emitted tokens sampled in the target's graph
    int64_t t_prompt_us;                           // time spent on prompts
    int64_t t_generate_us;                         // time spent in steps
    int64_t drafted_by_pos[LLAMA_MTP_MAX_DRAFT];   // draft tokens proposed at each draft position
    int64_t accepted_by_pos[LLAMA_MTP_MAX_DRAFT];  // ... and accepted
    int64_t steps_by_k[LLAMA_MTP_MAX_DRAFT + 1];   // steps that verified k drafts (k = 0: the target alone)
};

struct llama_mtp_session;

LLAMA_API struct llama_mtp_session_params llama_mtp_session_default_params(void);

// drafter: a gemma4_assistant (or other nextn) model, or NULL to draft with the target's own
// MTP head. Fails with LLAMA_MTP_ERR_INVALID_ARG when the pair does not fit together.
LLAMA_API int32_t llama_mtp_session_create(struct llama_model * target, struct llama_model * drafter,
                                           struct llama_mtp_session_params params, struct llama_mtp_session ** out);
LLAMA_API void    llama_mtp_session_free(struct llama_mtp_session * session);

// Decode a prompt (n_prompt >= 1); at most n_max tokens follow. The longest prefix of the prompt
// that is already in the KV (from the previous prompt and its generated tokens) is kept, not
// decoded again; the rest of the KV is dropped.
// The sampler's random stream continues across generations; llama_mtp_session_reset rewinds it.
LLAMA_API int32_t llama_mtp_session_start(struct llama_mtp_session * session, const llama_token * prompt,
                                          int32_t n_prompt, int32_t n_max);

// One draft -> verify -> accept step. Writes up to cap tokens to out (cap must be >= n_draft + 1).
LLAMA_API int32_t llama_mtp_session_step(struct llama_mtp_session * session, llama_token * out, int32_t cap,
                                         struct llama_mtp_step_result * result);

// start + steps until done, for callers that want no streaming. out holds n_max tokens.
LLAMA_API int32_t llama_mtp_session_generate(struct llama_mtp_session * session, const llama_token * prompt,
                                             int32_t n_prompt, int32_t n_max, llama_token * out, int32_t * n_out);

// Counters since creation or the last llama_mtp_session_reset.
LLAMA_API void llama_mtp_session_stats(const struct llama_mtp_session * session, struct llama_mtp_stats * out);

// Clear both contexts and the counters, and rewind the sampler to its seed.
LLAMA_API int32_t llama_mtp_session_reset(struct llama_mtp_session * session);

// Replace the target's sampler between generations (a server serving requests with their own
// temperature and seed on one session): the same chain session_create builds from these fields,
// in the target's graph when the session samples on the backend. The random stream restarts at
// seed. LLAMA_MTP_ERR_INVALID_ARG for values session_create would refuse.
LLAMA_API int32_t llama_mtp_session_set_sampling(struct llama_mtp_session * session, float temperature, int32_t top_k,
                                                 float top_p, uint32_t seed);

LLAMA_API struct llama_context * llama_mtp_session_target_context(struct llama_mtp_session * session);
LLAMA_API struct llama_context * llama_mtp_session_draft_context(struct llama_mtp_session * session);

//
// Chat templates: a conversation rendered by the template the GGUF carries (tokenizer.chat_template)
// through llama.cpp's chat layer and jinja engine, as llama-server renders /v1/chat/completions.
//

struct llama_mtp_chat_template;

struct llama_mtp_chat_message {
    const char * role;     // "system", "user", "assistant", ...
    const char * content;  // UTF-8 text
};

struct llama_mtp_chat_params {
    bool add_generation_prompt;  // end with the opening of the assistant's turn (default true)
    bool enable_thinking;        // the template's enable_thinking variable (default false)
};

LLAMA_API struct llama_mtp_chat_params llama_mtp_chat_default_params(void);

// template_override: jinja source, or NULL to use the model's own. LLAMA_MTP_ERR_INVALID_ARG when
// the model has none and no override is given, or the source does not parse.
LLAMA_API int32_t llama_mtp_chat_template_init(const struct llama_model * model, const char * template_override,
                                               struct llama_mtp_chat_template ** out);
LLAMA_API void    llama_mtp_chat_template_free(struct llama_mtp_chat_template * tmpl);

// Render messages; the prompt and the template's extra stop strings are then read with the calls
// below, valid until the next apply. LLAMA_MTP_ERR_INVALID_ARG when the template rejects them.
LLAMA_API int32_t      llama_mtp_chat_template_apply(struct llama_mtp_chat_template *      tmpl,
                                                     const struct llama_mtp_chat_message * messages, int32_t n_messages,
                                                     struct llama_mtp_chat_params params);
LLAMA_API const char * llama_mtp_chat_template_prompt(const struct llama_mtp_chat_template * tmpl);
LLAMA_API int32_t      llama_mtp_chat_template_n_stops(const struct llama_mtp_chat_template * tmpl);
LLAMA_API const char * llama_mtp_chat_template_stop(const struct llama_mtp_chat_template * tmpl, int32_t i);

// --- speaker segmentation (llama-segmentation.h in the patched tree), with our error reporting ---

struct llama_segmentation;

struct llama_mtp_segmenter_params {
    int32_t n_threads;   // <= 0: every hardware thread
    bool    use_gpu;     // the first GPU device when the build has one
    bool    fused_lstm;  // on the CPU, each LSTM layer's recurrence as one op (false: ggml ops per step)
};

LLAMA_API struct llama_mtp_segmenter_params llama_mtp_segmenter_default_params(void);

// LLAMA_MTP_ERR_LOAD when the file is missing, not a segmentation GGUF, or its layout is refused.
LLAMA_API int32_t llama_mtp_segmenter_load(const char * path, struct llama_mtp_segmenter_params params,
                                           struct llama_segmentation ** out);
LLAMA_API void    llama_mtp_segmenter_free(struct llama_segmentation * seg);
LLAMA_API void    llama_mtp_segmenter_info(const struct llama_segmentation * seg, int32_t * sample_rate,
                                           int32_t * n_classes);
// Frames for a window of n_samples (0: too short).
LLAMA_API int64_t llama_mtp_segmenter_n_frames(const struct llama_segmentation * seg, int64_t n_samples);
// n_windows windows of n_samples each (1 .. LLAMA_SEGMENTATION_MAX_WINDOWS), window i starting at
// sample i * step of samples (n_total long; each window starts inside it, and what the last ones
// read past its end is zeros), run as one batch. out: n_windows * n_frames * n_classes
// log-probabilities, window-major then frame-major; n_out its capacity in floats.
// LLAMA_MTP_ERR_INVALID_ARG (out not written) when the samples hold a NaN or an infinity.
LLAMA_API int32_t llama_mtp_segmenter_run(struct llama_segmentation * seg, const float * samples, int64_t n_total,
                                          int64_t n_samples, int64_t step, int64_t n_windows, float * out,
                                          int64_t n_out);

#ifdef __cplusplus
}
#endif
