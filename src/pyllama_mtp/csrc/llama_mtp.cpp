// pyllama-mtp C shim over llama.h: error capture, checked loading, and the
// loops that must not run per token in Python.
#include "llama_mtp.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#if !defined(_WIN32)
#    include <dlfcn.h>
#endif
#include <mutex>
#include <regex>
#include <string>
#include <utility>
#include <vector>

#include "ggml-backend.h"
#include "gguf.h"
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

// The folder this library was loaded from ("" when unknown).
std::string library_dir() {
#if !defined(_WIN32)
    Dl_info info{};
    if (dladdr(reinterpret_cast<void *>(&library_dir), &info) != 0 && info.dli_fname != nullptr) {
        const std::string path  = info.dli_fname;
        const size_t      slash = path.rfind('/');
        if (slash != std::string::npos) {
            return path.substr(0, slash);
        }
    }
#endif
    return "";
}

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

bool llama_mtp_internal::set_exact(llama_context * ctx, bool exact) {
    if (!exact) {
        return true;
    }
    // expert products (MUL_MAT_ID) keep their batched kernels under batch invariance: refuse
    // rather than promise what a mixture-of-experts target would not keep
    const llama_model * model = llama_get_model(ctx);
    if (std::atoi(model_meta(model, model_meta(model, "general.architecture") + ".expert_count").c_str()) > 0) {
        set_error("exact: a mixture-of-experts model's expert products are not computed batch-invariantly yet");
        return false;
    }
    if (llama_set_batch_invariant(ctx, true)) {
        return true;
    }
    set_error_with_log("exact: a backend of this context cannot compute verify rows as one-token decodes");
    return false;
}

bool llama_mtp_internal::kv_cache_type_supported(llama_context * ctx, ggml_type type) {
    // a set_rows into a cache of this type, and the copy a context shift writes back, as the
    // graph would build them (no data: ggml_backend_dev_supports_op reads only types and shapes)
    ggml_init_params ip{8 * ggml_tensor_overhead(), nullptr, /*no_alloc =*/true};
    ggml_context *   gctx = ggml_init(ip);
    if (gctx == nullptr) {
        set_error("kv cache check: out of memory");
        return false;
    }
    ggml_tensor * cache = ggml_new_tensor_2d(gctx, type, 256, 4);
    ggml_tensor * rows  = ggml_new_tensor_2d(gctx, GGML_TYPE_F32, 256, 1);
    ggml_tensor * ids   = ggml_new_tensor_1d(gctx, GGML_TYPE_I64, 1);
    ggml_tensor * ops[] = {ggml_set_rows(gctx, cache, rows, ids),
                           ggml_cpy(gctx, ggml_new_tensor_2d(gctx, GGML_TYPE_F32, 256, 4), cache)};
    std::string   refused;
    for (const auto & [buft, mb] : llama_get_memory_breakdown(ctx)) {
        ggml_backend_dev_t dev = ggml_backend_buft_get_device(buft);
        if (mb.context == 0 || dev == nullptr || ggml_backend_dev_type(dev) == GGML_BACKEND_DEVICE_TYPE_CPU) {
            continue;
        }
        for (ggml_tensor * op : ops) {
            if (!ggml_backend_dev_supports_op(dev, op)) {
                refused = ggml_backend_dev_name(dev);
            }
        }
    }
    ggml_free(gctx);
    if (!refused.empty()) {
        set_error(std::string("kv_cache_type ") + ggml_type_name(type) + ": the KV cache is on " + refused +
                  ", which has no kernels for this type; keep the cache on the CPU (offload_kqv=False) or pick "
                  "another type");
        return false;
    }
    return true;
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
        // A portable build links no backend: ggml's modules (a CPU one per instruction-set level,
        // CUDA's) lie beside this library, where ggml's default search (the executable's folder
        // and the working directory) would not look from a Python process.
        const std::string dir = library_dir();
        if (ggml_backend_reg_count() == 0 && !dir.empty()) {
            ggml_backend_load_all_from_path(dir.c_str());
        } else {
            ggml_backend_load_all();
        }
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

bool llama_mtp_local_gpu(void) {
    return ggml_backend_dev_by_type(GGML_BACKEND_DEVICE_TYPE_GPU) != nullptr ||
           ggml_backend_dev_by_type(GGML_BACKEND_DEVICE_TYPE_IGPU) != nullptr;
}

struct llama_mtp_model_params llama_mtp_model_default_params(void) {
    llama_mtp_model_params p{};
    p.n_gpu_layers = -1;
    p.use_mmap     = true;
    p.split_mode   = LLAMA_MTP_SPLIT_LAYER;
    return p;
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

// ggml's RPC registry functions, looked up by name as llama.cpp's tools do (null in a build
// without the RPC backend).
struct rpc_api {
    ggml_backend_reg_t (*add_server)(const char * endpoint) = nullptr;
    bool (*server_lost)(const char * endpoint)              = nullptr;
};

const rpc_api & rpc() {
    static const rpc_api api = [] {
        rpc_api            a;
        ggml_backend_reg_t reg = ggml_backend_reg_by_name("RPC");
        if (reg != nullptr) {
            a.add_server = reinterpret_cast<decltype(a.add_server)>(
                ggml_backend_reg_get_proc_address(reg, "ggml_backend_rpc_add_server"));
            a.server_lost = reinterpret_cast<decltype(a.server_lost)>(
                ggml_backend_reg_get_proc_address(reg, "ggml_backend_rpc_server_lost"));
        }
        return a;
    }();
    return api;
}

bool is_rpc_device(ggml_backend_dev_t dev) {
    return std::strcmp(ggml_backend_reg_name(ggml_backend_dev_backend_reg(dev)), "RPC") == 0;
}

// A lost server's answers are zeroed: a device that reports no memory is not there.
bool rpc_device_answers(ggml_backend_dev_t dev) {
    size_t free = 0, total = 0;
    ggml_backend_dev_memory(dev, &free, &total);
    return total > 0;
}

std::string local_device_names() {
    std::string known;
    for (size_t i = 0; i < ggml_backend_dev_count(); ++i) {
        known += std::string(known.empty() ? "" : ", ") + ggml_backend_dev_name(ggml_backend_dev_get(i));
    }
    return known;
}

// The device list of params (remote devices first, then local ones), empty when params name
// neither: then llama.cpp picks its default devices. The RPC servers' devices are not registered
// with ggml, so a model loaded without rpc_servers never lands on them.
int32_t model_devices(const llama_mtp_model_params & params, std::vector<ggml_backend_dev_t> & devs) {
    if (params.n_rpc_servers < 0 || (params.n_rpc_servers > 0 && params.rpc_servers == nullptr) ||
        params.n_devices < 0 || (params.n_devices > 0 && params.devices == nullptr)) {
        set_error("rpc_servers or devices is NULL, or its count is negative");
        return LLAMA_MTP_ERR_INVALID_ARG;
    }
    static const std::regex endpoint_form(R"(^[^:\s]+:[0-9]{1,5}$)");
    for (int32_t i = 0; i < params.n_rpc_servers; ++i) {
        const char * endpoint = params.rpc_servers[i];
        if (endpoint == nullptr || !std::regex_match(endpoint, endpoint_form)) {
            set_error(std::string("RPC server '") + (endpoint ? endpoint : "(null)") + "' is not host:port");
            return LLAMA_MTP_ERR_INVALID_ARG;
        }
        if (rpc().add_server == nullptr) {
            set_error("this build has no RPC backend (GGML_RPC was off)");
            return LLAMA_MTP_ERR_INVALID_ARG;
        }
        // (the registry remembers an endpoint that once answered: ask its device again)
        ggml_backend_reg_t reg = rpc().add_server(endpoint);
        if (reg == nullptr || ggml_backend_reg_dev_count(reg) == 0 ||
            !rpc_device_answers(ggml_backend_reg_dev_get(reg, 0))) {
            set_error(std::string("cannot reach the RPC server at ") + endpoint +
                      " (is `pyllama-mtp rpc-server` running there?)");
            return LLAMA_MTP_ERR_REMOTE;
        }
        for (size_t d = 0; d < ggml_backend_reg_dev_count(reg); ++d) {
            devs.push_back(ggml_backend_reg_dev_get(reg, d));
        }
    }
    for (int32_t i = 0; i < params.n_devices; ++i) {
        const char *       name = params.devices[i];
        ggml_backend_dev_t dev  = name != nullptr ? ggml_backend_dev_by_name(name) : nullptr;
        if (dev == nullptr) {
            set_error(std::string("unknown device '") + (name ? name : "(null)") +
                      "' (devices: " + local_device_names() + ")");
            return LLAMA_MTP_ERR_INVALID_ARG;
        }
        devs.push_back(dev);
    }
    if (params.n_rpc_servers > 0 && params.n_devices == 0) {
        // every local GPU after the remote devices, as llama.cpp's default list orders them; on a
        // machine without one, the CPU itself, so that the last layers still run here
        const size_t n_remote = devs.size();
        for (size_t i = 0; i < ggml_backend_dev_count(); ++i) {
            ggml_backend_dev_t dev = ggml_backend_dev_get(i);
            if (ggml_backend_dev_type(dev) == GGML_BACKEND_DEVICE_TYPE_GPU) {
                devs.push_back(dev);
            }
        }
        if (devs.size() == n_remote && ggml_backend_dev_by_type(GGML_BACKEND_DEVICE_TYPE_CPU) != nullptr) {
            devs.push_back(ggml_backend_dev_by_type(GGML_BACKEND_DEVICE_TYPE_CPU));
        }
    }
    return LLAMA_MTP_OK;
}

// From the file's header: the number of layers, and the first of the last two layers that hold
// KV cache (a Gemma 4 target may reuse its earlier layers' KV in its last ones); -1, -1 when the
// header cannot be read (the load reports that).
std::pair<int32_t, int32_t> layers_and_last_kv(const char * path) {
    gguf_init_params gp{};
    gp.no_alloc        = true;
    gguf_context * ctx = gguf_init_from_file(path, gp);
    if (ctx == nullptr) {
        return {-1, -1};
    }
    auto u32 = [&](const std::string & key) -> int64_t {
        const int64_t id = gguf_find_key(ctx, key.c_str());
        return id >= 0 && gguf_get_kv_type(ctx, id) == GGUF_TYPE_UINT32 ? gguf_get_val_u32(ctx, id) : -1;
    };
    const int64_t     arch_id = gguf_find_key(ctx, "general.architecture");
    const std::string arch =
        arch_id >= 0 && gguf_get_kv_type(ctx, arch_id) == GGUF_TYPE_STRING ? gguf_get_val_str(ctx, arch_id) : "";
    const int64_t n_layer = u32(arch + ".block_count");
    const int64_t shared  = u32(arch + ".attention.shared_kv_layers");
    gguf_free(ctx);
    if (n_layer <= 0) {
        return {-1, -1};
    }
    return {static_cast<int32_t>(n_layer), llama_mtp_internal::first_drafter_kv_layer(n_layer, shared)};
}

// The default split when layers go to RPC servers: the remote devices share the first layers
// equally, and the local ones keep the output and every layer from the first of the last two that
// hold KV (what a gemma4_assistant drafter attends to), so a draft step never crosses the network.
// llama.cpp gives layer i the first device whose cumulative share exceeds i / (n_layer + 1): the
// half-layer margins keep the boundary off a layer's own fraction.
std::vector<float> keep_tail_local_split(int32_t n_layer, int32_t first_local, size_t n_remote, size_t n_local) {
    std::vector<float> split(n_remote + n_local, 0.0f);
    const float        remote = std::max(0.0f, static_cast<float>(first_local) - 0.5f);
    const float        local  = static_cast<float>(n_layer + 1) - remote;
    for (size_t i = 0; i < split.size(); ++i) {
        split[i] = i < n_remote ? remote / n_remote : local / n_local;
    }
    return split;
}

// Checks split_mode, main_device and tensor_split against the devices (empty: llama.cpp's own
// list) and fills split with llama_max_devices() shares, or leaves it empty for llama.cpp's split.
int32_t model_split(const llama_mtp_model_params & params, const char * path,
                    const std::vector<ggml_backend_dev_t> & devs, std::vector<float> & split) {
    if (params.split_mode < LLAMA_MTP_SPLIT_NONE || params.split_mode > LLAMA_MTP_SPLIT_ROW) {
        set_error("split_mode must be none (0), layer (1) or row (2), got " + std::to_string(params.split_mode));
        return LLAMA_MTP_ERR_INVALID_ARG;
    }
    const size_t n_devs = devs.empty() ? llama_max_devices() : devs.size();
    if (params.main_device < 0 || static_cast<size_t>(params.main_device) >= n_devs) {
        set_error("main_device " + std::to_string(params.main_device) + " is not an index of the model's " +
                  std::to_string(n_devs) + " devices");
        return LLAMA_MTP_ERR_INVALID_ARG;
    }
    if (params.n_tensor_split != 0) {
        if (params.n_tensor_split < 0 || params.tensor_split == nullptr ||
            static_cast<size_t>(params.n_tensor_split) > std::min(n_devs, llama_max_devices())) {
            set_error("tensor_split needs one share per device, at most " + std::to_string(n_devs));
            return LLAMA_MTP_ERR_INVALID_ARG;
        }
        split.assign(llama_max_devices(), 0.0f);
        float sum = 0.0f;
        for (int32_t i = 0; i < params.n_tensor_split; ++i) {
            if (!(params.tensor_split[i] >= 0.0f)) {
                set_error("tensor_split shares must be >= 0");
                return LLAMA_MTP_ERR_INVALID_ARG;
            }
            split[i] = params.tensor_split[i];
            sum += split[i];
        }
        if (!(sum > 0.0f)) {
            set_error("tensor_split must give some device a share");
            return LLAMA_MTP_ERR_INVALID_ARG;
        }
        return LLAMA_MTP_OK;
    }
    const size_t n_remote = std::count_if(devs.begin(), devs.end(), is_rpc_device);
    if (n_remote > 0 && n_devs > n_remote && n_devs <= llama_max_devices()) {
        const auto [n_layer, first_local] = layers_and_last_kv(path);
        if (n_layer > 0) {
            split = keep_tail_local_split(n_layer, first_local, n_remote, n_devs - n_remote);
            split.resize(llama_max_devices(), 0.0f);
        }
    }
    return LLAMA_MTP_OK;
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
        std::vector<ggml_backend_dev_t> devs;
        std::vector<float>              split;
        int32_t                         rc = model_devices(params, devs);
        if (rc == LLAMA_MTP_OK) {
            rc = model_split(params, path, devs, split);
        }
        if (rc != LLAMA_MTP_OK) {
            return rc;
        }
        mp.split_mode = static_cast<llama_split_mode>(params.split_mode);
        mp.main_gpu   = params.main_device;
        if (!split.empty()) {
            mp.tensor_split = split.data();
        }
        if (!devs.empty()) {
            devs.push_back(nullptr);
            mp.devices = devs.data();
        }
        *out = llama_model_load_from_file(path, mp);
        if (*out == nullptr) {
            for (ggml_backend_dev_t dev : devs) {
                if (dev != nullptr && is_rpc_device(dev) && !rpc_device_answers(dev)) {
                    set_error_with_log(std::string("the RPC server at ") + ggml_backend_dev_description(dev) +
                                       " stopped answering while " + path + " loaded");
                    return LLAMA_MTP_ERR_REMOTE;
                }
            }
            set_error_with_log(std::string("failed to load model from ") + path);
            return LLAMA_MTP_ERR_LOAD;
        }
        return LLAMA_MTP_OK;
    });
}

const char * llama_mtp_model_devices(const struct llama_model * model) {
    static thread_local std::string text;
    text.clear();
    for (int32_t i = 0; model != nullptr && i < llama_model_n_devices(model); ++i) {
        ggml_backend_dev_t dev = llama_model_get_device(model, i);
        text += std::string(ggml_backend_dev_name(dev)) + ": " + ggml_backend_dev_description(dev) + "\n";
    }
    return text.c_str();
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

int32_t llama_mtp_model_quantize(const char * src, const char * dst, const char * type, int32_t n_threads,
                                 bool allow_requantize) {
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
        qp.allow_requantize              = allow_requantize;
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
    p.exact       = false;
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
        if (!llama_mtp_internal::kv_cache_type_supported(*out, cp.type_k) ||
            !llama_mtp_internal::set_exact(*out, params.exact)) {
            llama_free(*out);
            *out = nullptr;
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
                if (llama_mtp_internal::check_remote(llama_get_model(ctx)) != LLAMA_MTP_OK) {
                    return LLAMA_MTP_ERR_REMOTE;
                }
                set_error_with_log("llama_decode returned " + std::to_string(r));
                return LLAMA_MTP_ERR_DECODE;
            }
        }
        llama_batch_free(batch);
        // a server lost during the decode answered with zeros: say so before anyone reads them
        const llama_model * model = llama_get_model(ctx);
        if (llama_mtp_internal::has_rpc_device(model)) {
            llama_synchronize(ctx);
            return llama_mtp_internal::check_remote(model);
        }
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
            // a NaN compares false both ways, so a row of them would give token 0 as if chosen
            if (!std::isfinite(logits[best])) {
                set_error("no token could be chosen from step " + std::to_string(i) +
                          "'s logits: they are not numbers (NaN); the model's weights or activations overflow on "
                          "this backend");
                return LLAMA_MTP_ERR_DECODE;
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

int32_t llama_mtp_kv_roundtrip(int32_t type, const float * values, int64_t n, float * out) {
    if (type < 0 || type >= GGML_TYPE_COUNT || values == nullptr || out == nullptr || n < 0) {
        set_error("kv roundtrip: needs a ggml type, values, out and n >= 0");
        return LLAMA_MTP_ERR_INVALID_ARG;
    }
    const ggml_type                gtype  = static_cast<ggml_type>(type);
    const ggml_type_traits * const traits = ggml_get_type_traits(gtype);
    if (gtype == GGML_TYPE_F32) {
        std::memcpy(out, values, static_cast<size_t>(n) * sizeof(float));
        return LLAMA_MTP_OK;
    }
    if (traits->blck_size <= 0 || traits->from_float_ref == nullptr || traits->to_float == nullptr) {
        set_error(std::string("kv roundtrip: ") + ggml_type_name(gtype) + " cannot be stored from floats");
        return LLAMA_MTP_ERR_INVALID_ARG;
    }
    if (n % traits->blck_size != 0) {
        set_error("kv roundtrip: " + std::to_string(n) + " values are not whole blocks of " +
                  std::to_string(traits->blck_size) + " (" + ggml_type_name(gtype) + ")");
        return LLAMA_MTP_ERR_INVALID_ARG;
    }
    return guarded("kv roundtrip", [&]() -> int32_t {
        std::vector<uint8_t> stored(ggml_row_size(gtype, n));
        traits->from_float_ref(values, stored.data(), n);
        traits->to_float(stored.data(), out, n);
        return LLAMA_MTP_OK;
    });
}

}  // extern "C"

namespace {

// The endpoint of the first of the model's RPC servers whose connection failed ("" if none).
std::string lost_rpc_server(const llama_model * model) {
    if (model == nullptr || rpc().server_lost == nullptr) {
        return "";
    }
    for (int32_t i = 0; i < llama_model_n_devices(model); ++i) {
        ggml_backend_dev_t dev = llama_model_get_device(model, i);
        // an RPC device's description is its server's endpoint
        if (is_rpc_device(dev) && rpc().server_lost(ggml_backend_dev_description(dev))) {
            return ggml_backend_dev_description(dev);
        }
    }
    return "";
}

}  // namespace

bool llama_mtp_internal::has_rpc_device(const llama_model * model) {
    for (int32_t i = 0; model != nullptr && i < llama_model_n_devices(model); ++i) {
        if (is_rpc_device(llama_model_get_device(model, i))) {
            return true;
        }
    }
    return false;
}

int32_t llama_mtp_internal::check_remote(const llama_model * model) {
    const std::string endpoint = lost_rpc_server(model);
    if (endpoint.empty()) {
        return LLAMA_MTP_OK;
    }
    set_error("the RPC server at " + endpoint +
              " stopped answering; this model's remote layers are gone (close it and load it again)");
    return LLAMA_MTP_ERR_REMOTE;
}
