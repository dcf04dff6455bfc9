// Our status codes and last-error text around the patched tree's llama_segmentation API.
#include "llama-segmentation.h"
#include "shim_internal.h"

using namespace llama_mtp_internal;

struct llama_mtp_segmenter_params llama_mtp_segmenter_default_params(void) {
    return {0, true, true};
}

int32_t llama_mtp_segmenter_load(const char * path, struct llama_mtp_segmenter_params params,
                                 struct llama_segmentation ** out) {
    if (out == nullptr || path == nullptr) {
        set_error("path or out is NULL");
        return LLAMA_MTP_ERR_INVALID_ARG;
    }
    *out = nullptr;
    return guarded("segmenter load", [&]() -> int32_t {
        llama_segmentation_params p = llama_segmentation_default_params();
        p.n_threads                 = default_threads(params.n_threads);
        p.use_gpu                   = params.use_gpu;
        p.fused_lstm                = params.fused_lstm;
        *out                        = llama_segmentation_load(path, p);
        if (*out == nullptr) {
            set_error_with_log(std::string("failed to load segmentation model from ") + path);
            return LLAMA_MTP_ERR_LOAD;
        }
        return LLAMA_MTP_OK;
    });
}

void llama_mtp_segmenter_free(struct llama_segmentation * seg) {
    llama_segmentation_free(seg);
}

void llama_mtp_segmenter_info(const struct llama_segmentation * seg, int32_t * sample_rate, int32_t * n_classes) {
    *sample_rate = llama_segmentation_sample_rate(seg);
    *n_classes   = llama_segmentation_n_classes(seg);
}

int64_t llama_mtp_segmenter_n_frames(const struct llama_segmentation * seg, int64_t n_samples) {
    return llama_segmentation_n_frames(seg, n_samples);
}

int32_t llama_mtp_segmenter_run(struct llama_segmentation * seg, const float * samples, int64_t n_total,
                                int64_t n_samples, int64_t step, int64_t n_windows, float * out, int64_t n_out) {
    if (seg == nullptr || samples == nullptr || out == nullptr) {
        set_error("segmenter, samples or out is NULL");
        return LLAMA_MTP_ERR_INVALID_ARG;
    }
    if (n_windows < 1 || n_windows > LLAMA_SEGMENTATION_MAX_WINDOWS) {
        set_error("a batch of " + std::to_string(n_windows) + " windows is outside 1 .. " +
                  std::to_string(LLAMA_SEGMENTATION_MAX_WINDOWS));
        return LLAMA_MTP_ERR_INVALID_ARG;
    }
    if (step < 1 || n_samples < 1 || n_total < 1 || (n_windows - 1) * step >= n_total) {
        set_error("windows of " + std::to_string(n_samples) + " samples every " + std::to_string(step) + ": " +
                  std::to_string(n_windows) + " of them do not all start inside " + std::to_string(n_total) +
                  " samples");
        return LLAMA_MTP_ERR_INVALID_ARG;
    }
    return guarded("segmenter run", [&]() -> int32_t {
        const int32_t status =
            llama_segmentation_run_windows(seg, samples, n_total, n_samples, step, n_windows, out, n_out);
        if (status == LLAMA_SEGMENTATION_NONFINITE) {
            set_error("the waveform holds NaN or infinite samples");
            return LLAMA_MTP_ERR_INVALID_ARG;
        }
        if (status != 0) {
            set_error_with_log("segmentation failed");
            return LLAMA_MTP_ERR_INTERNAL;
        }
        return LLAMA_MTP_OK;
    });
}
