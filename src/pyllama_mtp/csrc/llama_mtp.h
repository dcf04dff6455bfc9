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

struct llama_mtp_model_params {
    int32_t n_gpu_layers;  // layers to offload; -1 = all (default -1)
    bool    use_mmap;      // map the file (auto load mode) instead of reading it (default true)
    bool    vocab_only;    // load only the vocabulary (default false)
};

LLAMA_API struct llama_mtp_model_params llama_mtp_model_default_params(void);

// Load a GGUF model. On failure returns non-zero, *out = NULL, and the last error names the reason.
LLAMA_API int32_t llama_mtp_model_load(const char * path, struct llama_mtp_model_params params,
                                       struct llama_model ** out);

struct llama_mtp_context_params {
    uint32_t               n_ctx;        // context size in tokens; 0 = from the model (default 512)
    uint32_t               n_batch;      // logical batch size (default 512)
    uint32_t               n_ubatch;     // physical batch size (default 512)
    int32_t                n_threads;    // threads for generation; <= 0 = hardware threads (default 0)
    bool                   embeddings;   // output embeddings instead of logits (default false)
    bool                   offload_kqv;  // keep the KV cache on the GPU (default true)
    struct llama_context * ctx_other;    // for draft contexts: the target context (default NULL)
    int32_t                ctx_type;     // enum llama_context_type (default LLAMA_CONTEXT_TYPE_DEFAULT)
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

#ifdef __cplusplus
}
#endif
