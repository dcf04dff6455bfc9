// Error plumbing shared by the shim's translation units (not part of the C API).
#pragma once

#include <cstdint>
#include <cstdio>
#include <exception>
#include <string>
#include <thread>

#include "ggml.h"
#include "llama_mtp.h"

namespace llama_mtp_internal {

inline thread_local std::string g_last_error;
inline thread_local std::string g_log_errors;  // error lines logged by llama.cpp during the current call
inline int                      g_verbosity = 1;

inline void set_verbosity(int32_t v) {
    g_verbosity = v;
}

inline void set_error(const std::string & msg) {
    g_last_error = msg;
}

// Error text for a failed call: our message, then what llama.cpp logged at error level.
inline void set_error_with_log(const std::string & msg) {
    std::string full = msg;
    if (!g_log_errors.empty()) {
        full += ": " + g_log_errors;
        while (!full.empty() && (full.back() == '\n' || full.back() == ' ')) {
            full.pop_back();
        }
    }
    set_error(full);
}

inline void log_callback(ggml_log_level level, const char * text, void * /*user_data*/) {
    if (level == GGML_LOG_LEVEL_ERROR && g_log_errors.size() < 4096) {
        g_log_errors += text;
    }
    const bool show =
        g_verbosity >= 2 || (g_verbosity == 1 && (level == GGML_LOG_LEVEL_ERROR || level == GGML_LOG_LEVEL_WARN));
    if (show) {
        fputs(text, stderr);
    }
}

// Threads for n_threads <= 0: every hardware thread. llama.cpp's own default is a fixed 4, which
// oversubscribes small machines (4 spinning threads on 2 cores made each decode ~5x slower).
inline int32_t default_threads(int32_t requested) {
    if (requested > 0) {
        return requested;
    }
    const unsigned n = std::thread::hardware_concurrency();
    return n > 0 ? static_cast<int32_t>(n) : 4;
}

// The first of the target layers whose KV a gemma4_assistant drafter attends to: upstream's share
// callback takes the last two layers (n_layer - 1, n_layer - 2), or, where the target's last
// shared_kv_layers reuse earlier layers' KV, the last two layers that hold KV of their own.
inline int32_t first_drafter_kv_layer(int64_t n_layer, int64_t shared_kv_layers) {
    const int64_t n_kv = shared_kv_layers > 0 && shared_kv_layers < n_layer ? n_layer - shared_kv_layers : n_layer;
    return static_cast<int32_t>(n_kv >= 2 ? n_kv - 2 : 0);
}

// A metadata value of the model as a string ("" when the key is absent).
inline std::string model_meta(const llama_model * model, const std::string & key) {
    char buf[256];
    return llama_model_meta_val_str(model, key.c_str(), buf, sizeof(buf)) >= 0 ? std::string(buf) : std::string();
}

// Whether any of the model's devices is an RPC server's.
bool has_rpc_device(const llama_model * model);
// LLAMA_MTP_ERR_REMOTE with the last error set when one of the model's RPC servers was lost (its
// answers since then were zeros, not results), LLAMA_MTP_OK otherwise. Call after the outputs of a
// decode were read, before handing them out.
int32_t check_remote(const llama_model * model);

// llama.cpp's context parameters for ours (defined in llama_mtp.cpp; shared by contexts and sessions).
llama_context_params to_llama_params(const llama_mtp_context_params & params);

// Turns batch invariance on for ctx; false (last error set) where a backend of ctx cannot.
bool set_exact(llama_context * ctx, bool exact);

// false (with the last error set) when a device holding ctx's KV cache cannot write rows of its
// type there: the scheduler would abort at the first decode instead
bool kv_cache_type_supported(llama_context * ctx, ggml_type type);

// Runs f, turning C++ exceptions into LLAMA_MTP_ERR_INTERNAL: nothing may cross the C boundary.
template <typename F>
int32_t guarded(const char * what, F && f) {
    g_last_error.clear();
    g_log_errors.clear();
    try {
        return f();
    } catch (const std::exception & e) {
        set_error(std::string(what) + ": " + e.what());
    } catch (...) {
        set_error(std::string(what) + ": unknown C++ exception");
    }
    return LLAMA_MTP_ERR_INTERNAL;
}

}  // namespace llama_mtp_internal
