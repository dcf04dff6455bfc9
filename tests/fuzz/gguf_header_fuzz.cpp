// libFuzzer target for llama.cpp's GGUF header parser (gguf_init_from_file), built and run
// time-boxed by ci/fuzz.sh. Each input is written to an in-memory file and parsed the way the
// model loader parses it (no_alloc: tensor metadata only), then every key and tensor is read back.
#include <stdint.h>
#include <stdio.h>
#include <sys/mman.h>
#include <unistd.h>

#include "ggml.h"
#include "gguf.h"

static void read_back(const struct gguf_context * gctx) {
    const int64_t n_kv = gguf_get_n_kv(gctx);
    for (int64_t i = 0; i < n_kv; ++i) {
        (void)gguf_get_key(gctx, i);
        const enum gguf_type type = gguf_get_kv_type(gctx, i);
        if (type == GGUF_TYPE_STRING) {
            (void)gguf_get_val_str(gctx, i);
        } else if (type == GGUF_TYPE_ARRAY) {
            const enum gguf_type elem = gguf_get_arr_type(gctx, i);
            const size_t         n    = gguf_get_arr_n(gctx, i);
            for (size_t j = 0; j < n && j < 64; ++j) {
                if (elem == GGUF_TYPE_STRING) {
                    (void)gguf_get_arr_str(gctx, i, j);
                }
            }
            if (elem != GGUF_TYPE_STRING) {
                (void)gguf_get_arr_data(gctx, i);
            }
        }
    }
    const int64_t n_tensors = gguf_get_n_tensors(gctx);
    for (int64_t i = 0; i < n_tensors; ++i) {
        (void)gguf_get_tensor_name(gctx, i);
        (void)gguf_get_tensor_offset(gctx, i);
        (void)gguf_get_tensor_size(gctx, i);
        (void)gguf_get_tensor_type(gctx, i);
    }
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t * data, size_t size) {
    static int fd = memfd_create("gguf-fuzz", 0);
    if (fd < 0 || ftruncate(fd, 0) != 0 || pwrite(fd, data, size, 0) != (ssize_t)size) {
        return 0;
    }
    char path[64];
    snprintf(path, sizeof(path), "/proc/self/fd/%d", fd);

    struct ggml_context *   meta = NULL;
    struct gguf_init_params params;
    params.no_alloc            = true;
    params.ctx                 = &meta;
    struct gguf_context * gctx = gguf_init_from_file(path, params);
    if (gctx != NULL) {
        read_back(gctx);
        gguf_free(gctx);
    }
    if (meta != NULL) {
        ggml_free(meta);
    }
    return 0;
}

extern "C" int LLVMFuzzerInitialize(int *, char ***) {
    // parse failures are the expected outcome; their log lines would drown the fuzzer's output
    ggml_log_set([](enum ggml_log_level, const char *, void *) {}, NULL);
    return 0;
}
