// pyllama-mtp C shim over llama.h: error capture, checked loading, and the
// loops that must not run per token in Python.
#include "llama_mtp.h"

#include <algorithm>
#include <cstdio>
#include <mutex>
#include <regex>
#include <string>
#include <vector>

#include "ggml-backend.h"
#include "llama-ext.h"
#include "shim_internal.h"

#ifndef PYLLAMA_MTP_LLAMA_COMMIT
#    define PYLLAMA_MTP_LLAMA_COMMIT "unknown"
#endif
#ifndef PYLLAMA_MTP_PATCHES
#    define PYLLAMA_MTP_PATCHES ""
#endif

using llama_mtp_internal::guarded;
using llama_mtp_internal::set_error;
using llama_mtp_internal::set_error_with_log;

namespace {

std::string g_backends;
std::string g_devices;

}  // namespace

llama_context_params llama_mtp_internal::to_llama_params(const llama_mtp_context_params & params) {
    llama_context_params cp = llama_context_default_params();
    cp.n_ctx                = params.n_ctx;
    cp.n_batch              = params.n_batch;
    cp.n_ubatch             = params.n_ubatch;
    cp.n_threads            = default_threads(params.n_threads);
    cp.n_threads_batch      = cp.n_threads;
    cp.embeddings           = params.embeddings;
    cp.offload_kqv          = params.offload_kqv;
    cp.ctx_other            = params.ctx_other;
    cp.ctx_type             = static_cast<llama_context_type>(params.ctx_type);
    cp.swa_full             = params.swa_full;
    cp.type_k               = static_cast<ggml_type>(params.type_kv);
    cp.type_v               = static_cast<ggml_type>(params.type_kv);
    cp.flash_attn_type      = static_cast<llama_flash_attn_type>(params.flash_attn);
    return cp;
}

extern "C" {

const char * llama_mtp_last_error(void) {
    return llama_mtp_internal::g_last_error.c_str();
}

void llama_mtp_init(int32_t verbosity) {
    static std::once_flag once;
    llama_mtp_internal::set_verbosity(verbosity);
    std::call_once(once, [] {
        llama_log_set(llama_mtp_internal::log_callback, nullptr);
        llama_backend_init();
        ggml_backend_load_all();
    });
}

const char * llama_mtp_llama_commit(void) {
    return PYLLAMA_MTP_LLAMA_COMMIT;
}

const char * llama_mtp_patches(void) {
    return PYLLAMA_MTP_PATCHES;
}

const char * llama_mtp_backends(void) {
    g_backends.clear();
    for (size_t i = 0; i < ggml_backend_reg_count(); ++i) {
        g_backends += (i ? "," : "") + std::string(ggml_backend_reg_name(ggml_backend_reg_get(i)));
    }
    return g_backends.c_str();
}

const char * llama_mtp_devices(void) {
    g_devices.clear();
    for (size_t i = 0; i < ggml_backend_dev_count(); ++i) {
        ggml_backend_dev_t dev = ggml_backend_dev_get(i);
        g_devices += std::string(ggml_backend_dev_name(dev)) + ": " + ggml_backend_dev_description(dev) + "\n";
    }
    return g_devices.c_str();
}

struct llama_mtp_model_params llama_mtp_model_default_params(void) {
    return {-1, true, false, nullptr, 0};
}

namespace {

// The buffer type a placement rule names, or NULL with the last error set.
ggml_backend_buffer_type_t override_buft(const char * device) {
    if (device == nullptr) {
        set_error("a tensor override has no device");
        return nullptr;
    }
    if (std::string(device) == "CPU") {
        return ggml_backend_cpu_buffer_type();
    }
    ggml_backend_dev_t dev = ggml_backend_dev_by_name(device);
    if (dev == nullptr) {
        std::string known;
        for (size_t i = 0; i < ggml_backend_dev_count(); ++i) {
            known += std::string(known.empty() ? "" : ", ") + ggml_backend_dev_name(ggml_backend_dev_get(i));
        }
        set_error(std::string("unknown device '") + device + "' in a tensor override (devices: " + known + ")");
        return nullptr;
    }
    return ggml_backend_dev_buffer_type(dev);
}

}  // namespace

int32_t llama_mtp_model_load(const char * path, struct llama_mtp_model_params params, struct llama_model ** out) {
    if (out == nullptr) {
        set_error("out is NULL");
        return LLAMA_MTP_ERR_INVALID_ARG;
    }
    *out = nullptr;
    return guarded("model load", [&]() -> int32_t {
        if (path == nullptr) {
            set_error("path is NULL");
            return LLAMA_MTP_ERR_INVALID_ARG;
        }
        llama_model_params mp = llama_model_default_params();
        mp.n_gpu_layers       = params.n_gpu_layers;
        if (!params.use_mmap) {
            mp.load_mode = LLAMA_LOAD_MODE_NONE;
        }
        mp.vocab_only = params.vocab_only;
        if (params.n_tensor_overrides < 0 || (params.n_tensor_overrides > 0 && params.tensor_overrides == nullptr)) {
            set_error("tensor_overrides is NULL or n_tensor_overrides is negative");
            return LLAMA_MTP_ERR_INVALID_ARG;
        }
        std::vector<llama_model_tensor_buft_override> rules;
        for (int32_t i = 0; i < params.n_tensor_overrides; ++i) {
            const llama_mtp_tensor_override & o = params.tensor_overrides[i];
            if (o.pattern == nullptr) {
                set_error("a tensor override has no pattern");
                return LLAMA_MTP_ERR_INVALID_ARG;
            }
            try {
                std::regex check(o.pattern);
            } catch (const std::regex_error & e) {
                set_error(std::string("tensor override pattern '") + o.pattern + "' is not a valid regex: " + e.what());
                return LLAMA_MTP_ERR_INVALID_ARG;
            }
            ggml_backend_buffer_type_t buft = override_buft(o.device);
            if (buft == nullptr) {
                return LLAMA_MTP_ERR_INVALID_ARG;
            }
            rules.push_back({o.pattern, buft});
        }
        if (!rules.empty()) {
            rules.push_back({nullptr, nullptr});
            mp.tensor_buft_overrides = rules.data();
        }
        *out = llama_model_load_from_file(path, mp);
        if (*out == nullptr) {
            set_error_with_log(std::string("failed to load model from ") + path);
            return LLAMA_MTP_ERR_LOAD;
        }
        return LLAMA_MTP_OK;
    });
}

int32_t llama_mtp_model_tensor_placement(const struct llama_model * model, int32_t i, const char ** name,
                                         const char ** buffer) {
    if (model == nullptr || name == nullptr || buffer == nullptr) {
        set_error("model, name and buffer must not be NULL");
        return LLAMA_MTP_ERR_INVALID_ARG;
    }
    if (!llama_model_tensor_placement(model, i, name, buffer)) {
        set_error("tensor index " + std::to_string(i) + " is out of range");
        return LLAMA_MTP_ERR_INVALID_ARG;
    }
    return LLAMA_MTP_OK;
}

namespace {

// The llama_ftype of each quantization name llama-quantize accepts that a Gemma 4 pair uses.
struct quant_type {
    const char * name;
    llama_ftype  ftype;
};

constexpr quant_type k_quant_types[] = {
    {"F16", LLAMA_FTYPE_MOSTLY_F16},       {"BF16", LLAMA_FTYPE_MOSTLY_BF16},     {"Q8_0", LLAMA_FTYPE_MOSTLY_Q8_0},
    {"Q6_K", LLAMA_FTYPE_MOSTLY_Q6_K},     {"Q5_K_M", LLAMA_FTYPE_MOSTLY_Q5_K_M}, {"Q4_K_M", LLAMA_FTYPE_MOSTLY_Q4_K_M},
    {"Q4_K_S", LLAMA_FTYPE_MOSTLY_Q4_K_S}, {"Q4_0", LLAMA_FTYPE_MOSTLY_Q4_0},
};

}  // namespace

const char * llama_mtp_quant_type_name(int32_t i) {
    const int32_t n = static_cast<int32_t>(sizeof(k_quant_types) / sizeof(k_quant_types[0]));
    return i >= 0 && i < n ? k_quant_types[i].name : nullptr;
}

int32_t llama_mtp_model_quantize(const char * src, const char * dst, const char * type, int32_t n_threads) {
    if (src == nullptr || dst == nullptr || type == nullptr) {
        set_error("src, dst and type must not be NULL");
        return LLAMA_MTP_ERR_INVALID_ARG;
    }
    const quant_type * chosen = nullptr;
    std::string        known;
    for (const quant_type & q : k_quant_types) {
        known += std::string(known.empty() ? "" : ", ") + q.name;
        if (std::string(q.name) == type) {
            chosen = &q;
        }
    }
    if (chosen == nullptr) {
        set_error(std::string("unknown quantization type '") + type + "'; known: " + known);
        return LLAMA_MTP_ERR_INVALID_ARG;
    }
    return guarded("quantize", [&]() -> int32_t {
        // written beside dst and renamed at the end: a failed run leaves no half-written model
        const std::string           part = std::string(dst) + ".part";
        llama_model_quantize_params qp   = llama_model_quantize_default_params();
        qp.nthread                       = n_threads;
        qp.ftype                         = chosen->ftype;
        if (FILE * probe = std::fopen(part.c_str(), "wb")) {  // a bad dst is an I/O error, not a bad model
            std::fclose(probe);
        } else {
            set_error(std::string("cannot write ") + dst);
            return LLAMA_MTP_ERR_IO;
        }
        if (llama_model_quantize(src, part.c_str(), &qp) != 0) {
            std::remove(part.c_str());
            set_error_with_log(std::string("cannot quantize ") + src);
            return LLAMA_MTP_ERR_LOAD;
        }
        if (std::rename(part.c_str(), dst) != 0) {
            std::remove(part.c_str());
            set_error(std::string("cannot write ") + dst);
            return LLAMA_MTP_ERR_IO;
        }
        return LLAMA_MTP_OK;
    });
}

struct llama_mtp_context_params llama_mtp_context_default_params(void) {
    llama_mtp_context_params p{};
    p.n_ctx       = 512;
    p.n_batch     = 512;
    p.n_ubatch    = 512;
    p.n_threads   = 0;
    p.embeddings  = false;
    p.offload_kqv = true;
    p.ctx_other   = nullptr;
    p.ctx_type    = LLAMA_CONTEXT_TYPE_DEFAULT;
    p.swa_full    = true;
    p.type_kv     = GGML_TYPE_F16;
    p.flash_attn  = LLAMA_FLASH_ATTN_TYPE_AUTO;
    return p;
}

int32_t llama_mtp_context_create(struct llama_model * model, struct llama_mtp_context_params params,
                                 struct llama_context ** out) {
    if (out == nullptr || model == nullptr) {
        set_error("model and out must not be NULL");
        return LLAMA_MTP_ERR_INVALID_ARG;
    }
    *out = nullptr;
    return guarded("context create", [&]() -> int32_t {
        const llama_context_params cp = llama_mtp_internal::to_llama_params(params);
        *out                          = llama_init_from_model(model, cp);
        if (*out == nullptr) {
            set_error_with_log("failed to create context");
            return LLAMA_MTP_ERR_CONTEXT;
        }
        return LLAMA_MTP_OK;
    });
}

int32_t llama_mtp_decode(struct llama_context * ctx, const llama_token * tokens, int32_t n, llama_pos pos,
                         llama_seq_id seq, int32_t logits_mode) {
    if (ctx == nullptr || tokens == nullptr || n <= 0) {
        set_error("decode needs a context and at least one token");
        return LLAMA_MTP_ERR_INVALID_ARG;
    }
    return guarded("decode", [&]() -> int32_t {
        const llama_vocab * vocab   = llama_model_get_vocab(llama_get_model(ctx));
        const int32_t       n_vocab = llama_vocab_n_tokens(vocab);
        const uint32_t      n_ctx   = llama_n_ctx(ctx);
        for (int32_t i = 0; i < n; ++i) {
            if (tokens[i] < 0 || tokens[i] >= n_vocab) {
                set_error("token id " + std::to_string(tokens[i]) + " at index " + std::to_string(i) +
                          " is outside the vocabulary [0, " + std::to_string(n_vocab) + ")");
                return LLAMA_MTP_ERR_INVALID_ARG;
            }
        }
        if (pos < 0 || static_cast<int64_t>(pos) + n > static_cast<int64_t>(n_ctx)) {
            set_error("positions " + std::to_string(pos) + ".." + std::to_string(pos + n) +
                      " exceed the context size " + std::to_string(n_ctx));
            return LLAMA_MTP_ERR_KV_FULL;
        }
        // llama_decode asserts on batches larger than n_batch: split here instead.
        const int32_t n_batch = static_cast<int32_t>(llama_n_batch(ctx));
        if (logits_mode == 1 && n > n_batch) {
            set_error("logits for every token need n <= n_batch (" + std::to_string(n_batch) + "), got " +
                      std::to_string(n));
            return LLAMA_MTP_ERR_INVALID_ARG;
        }
        llama_batch batch = llama_batch_init(std::min(n, n_batch), 0, 1);
        for (int32_t start = 0; start < n; start += n_batch) {
            const int32_t len = std::min(n_batch, n - start);
            for (int32_t i = 0; i < len; ++i) {
                const int32_t j    = start + i;
                batch.token[i]     = tokens[j];
                batch.pos[i]       = pos + j;
                batch.n_seq_id[i]  = 1;
                batch.seq_id[i][0] = seq;
                batch.logits[i]    = logits_mode == 1 || j == n - 1;
            }
            batch.n_tokens  = len;
            const int32_t r = llama_decode(ctx, batch);
            if (r == 1) {
                llama_batch_free(batch);
                set_error_with_log("no KV cache slot for the batch");
                return LLAMA_MTP_ERR_KV_FULL;
            }
            if (r != 0) {
                llama_batch_free(batch);
                set_error_with_log("llama_decode returned " + std::to_string(r));
                return LLAMA_MTP_ERR_DECODE;
            }
        }
        llama_batch_free(batch);
        return LLAMA_MTP_OK;
    });
}

int32_t llama_mtp_generate_greedy(struct llama_context * ctx, const llama_token * prompt, int32_t n_prompt,
                                  int32_t n_max, llama_token * out, int32_t * n_out) {
    if (n_out == nullptr || out == nullptr || n_max < 0) {
        set_error("generate needs an output buffer");
        return LLAMA_MTP_ERR_INVALID_ARG;
    }
    *n_out     = 0;
    int32_t rc = llama_mtp_decode(ctx, prompt, n_prompt, 0, 0, 0);
    if (rc != LLAMA_MTP_OK) {
        return rc;
    }
    return guarded("generate", [&]() -> int32_t {
        const llama_vocab * vocab   = llama_model_get_vocab(llama_get_model(ctx));
        const int32_t       n_vocab = llama_vocab_n_tokens(vocab);
        llama_pos           pos     = n_prompt;
        for (int32_t i = 0; i < n_max; ++i) {
            const float * logits = llama_get_logits_ith(ctx, -1);
            llama_token   best   = 0;
            for (int32_t t = 1; t < n_vocab; ++t) {
                if (logits[t] > logits[best]) {
                    best = t;
                }
            }
            out[(*n_out)++] = best;
            if (llama_vocab_is_eog(vocab, best) || i + 1 == n_max) {
                break;
            }
            const int32_t r = llama_mtp_decode(ctx, &best, 1, pos++, 0, 0);
            if (r != LLAMA_MTP_OK) {
                return r;
            }
        }
        return LLAMA_MTP_OK;
    });
}

int32_t llama_mtp_context_memory(const struct llama_context * ctx, struct llama_mtp_memory * out) {
    if (ctx == nullptr || out == nullptr) {
        set_error("context and out must not be NULL");
        return LLAMA_MTP_ERR_INVALID_ARG;
    }
    return guarded("context memory", [&]() -> int32_t {
        *out = {};
        for (const auto & [buft, mb] : llama_get_memory_breakdown(ctx)) {
            out->model += mb.model;
            out->context += mb.context;
            out->compute += mb.compute;
        }
        return LLAMA_MTP_OK;
    });
}

}  // extern "C"
