// Draft-MTP sessions: the speculative loop of upstream's examples/speculative-simple, as a
// resumable C API. Drafting is one fused graph for a gemma4-assistant (patch 0009), else
// upstream's common_speculative (draft-mtp); verification samples every verified row with the
// target's own sampler, so greedy output equals plain greedy decoding and sampled output follows
// the target's distribution (the drafter only decides how many rows one target pass can emit).
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "common.h"
#include "draft_tuner.h"
#include "llama-ext.h"
#include "llama_mtp.h"
#include "shim_internal.h"
#include "speculative.h"

using llama_mtp_internal::guarded;
using llama_mtp_internal::model_meta;
using llama_mtp_internal::set_error;
using llama_mtp_internal::set_error_with_log;

namespace {

struct context_deleter {
    void operator()(llama_context * ctx) const { llama_free(ctx); }
};

struct sampler_deleter {
    void operator()(llama_sampler * s) const { llama_sampler_free(s); }
};

struct file_closer {
    void operator()(FILE * f) const { fclose(f); }
};

struct speculative_deleter {
    void operator()(common_speculative * s) const { common_speculative_free(s); }
};

// Whether the logit of the token sampled from row i is a number. A NaN row (weights or activations
// that overflow on a backend) gives the host samplers a token to return all the same; a row the
// target's graph sampled has no logits here and is not checked (there the sampler finds no token).
bool finite_logit(llama_context * ctx, int32_t i, llama_token id) {
    if (llama_get_sampled_token_ith(ctx, i) != LLAMA_TOKEN_NULL) {
        return true;
    }
    const float * row = llama_get_logits_ith(ctx, i);
    return row == nullptr || std::isfinite(row[id]);
}

llama_sampler * make_target_sampler(const llama_mtp_session_params & p) {
    llama_sampler * chain = llama_sampler_chain_init(llama_sampler_chain_default_params());
    if (p.temperature <= 0.0f) {
        llama_sampler_chain_add(chain, llama_sampler_init_greedy());
        return chain;
    }
    if (p.top_k > 0) {
        llama_sampler_chain_add(chain, llama_sampler_init_top_k(p.top_k));
    }
    if (p.top_p < 1.0f) {
        llama_sampler_chain_add(chain, llama_sampler_init_top_p(p.top_p, 1));
    }
    llama_sampler_chain_add(chain, llama_sampler_init_temp(p.temperature));
    llama_sampler_chain_add(chain, llama_sampler_init_dist(p.seed));
    return chain;
}

}  // namespace

struct llama_mtp_session {
    llama_mtp_session_params params{};
    llama_model *            target  = nullptr;
    llama_model *            drafter = nullptr;  // the model of ctx_dft (the target itself for in-file heads)
    const llama_vocab *      vocab   = nullptr;
    bool                     remote  = false;  // target or drafter has layers on an RPC server

    // (declared before ctx_tgt, so freed after it: the target context may hold it as its backend sampler)
    std::unique_ptr<llama_sampler, sampler_deleter>          smpl;
    std::unique_ptr<llama_context, context_deleter>          ctx_tgt;
    std::unique_ptr<llama_context, context_deleter>          ctx_dft;
    std::unique_ptr<common_speculative, speculative_deleter> spec;

    common_batch batch_tgt;
    common_batch batch_dft;  // the fused draft's one-token batch
    // Fused drafting: the drafter's graph chains all n_draft steps (llama_set_mtp_draft_steps)
    // and one read-back returns the ids; it drafts from the target's nextn row of the last
    // token in its KV, kept here (upstream's driver, spec, runs only when not fused).
    bool               fused = false;
    std::vector<float> pending_h;
    // Async pipeline: the next step's draft, queued behind the verify pass from the row the
    // session predicts will be the last accepted one (llama_decode_mtp_async), ready when
    // the prediction held. accepted_freq: a decaying count of each n_accepted, the predictor.
    bool                     async_pipeline = false;
    bool                     next_ready     = false;
    std::vector<llama_token> next_draft;
    float                    accepted_freq[LLAMA_MTP_MAX_DRAFT + 1] = {};
    std::vector<llama_token> tokens_tgt;  // tokens in the target's KV, in order
    std::vector<llama_token> draft;
    llama_token              id_last  = LLAMA_TOKEN_NULL;  // sampled, not yet in the KV
    int32_t                  n_past   = 0;
    int32_t                  n_left   = 0;  // tokens still allowed this generation
    bool                     started  = false;
    bool                     done     = true;
    bool                     kv_valid = false;  // tokens_tgt describes the target's KV

    llama_mtp_stats stats{};

    std::unique_ptr<llama_mtp_internal::draft_tuner> tuner;  // LLAMA_MTP_DRAFT_AUTO only
    // the tuner's last shadow draft, scored against the tokens the target emits after it
    std::vector<llama_token> shadow_chain;
    int32_t                  shadow_matched  = 0;
    int64_t                  shadow_draft_us = 0;

    std::unique_ptr<FILE, file_closer> trace;  // NDJSON acceptance trace, NULL when off

    void clear_memory() {
        llama_memory_clear(llama_get_memory(ctx_tgt.get()), true);
        if (ctx_dft && llama_get_memory(ctx_dft.get()) != nullptr) {
            llama_memory_clear(llama_get_memory(ctx_dft.get()), true);
        }
    }

    // Drop KV cells at positions >= pos in both contexts.
    bool trim(llama_pos pos) {
        if (!llama_memory_seq_rm(llama_get_memory(ctx_tgt.get()), 0, pos, -1)) {
            return false;
        }
        if (ctx_dft && llama_get_memory(ctx_dft.get()) != nullptr) {
            return llama_memory_seq_rm(llama_get_memory(ctx_dft.get()), 0, pos, -1);
        }
        return true;
    }
};

namespace {

// The value of the first metadata key ending in ".requires_target_arch" ("" if none): drafters
// name the target architecture they were trained against.
std::string required_target_arch(const llama_model * drafter) {
    const std::string suffix = ".requires_target_arch";
    char              key[256];
    char              val[256];
    for (int32_t i = 0; i < llama_model_meta_count(drafter); ++i) {
        if (llama_model_meta_key_by_index(drafter, i, key, sizeof(key)) < 0) {
            continue;
        }
        const std::string k(key);
        if (k.size() >= suffix.size() && k.compare(k.size() - suffix.size(), suffix.size(), suffix) == 0 &&
            llama_model_meta_val_str_by_index(drafter, i, val, sizeof(val)) >= 0) {
            return val;
        }
    }
    return "";
}

// The RPC endpoint in a buffer name such as "RPC0[127.0.0.1:50052]" ("" for a local buffer).
std::string rpc_endpoint_of(const std::string & buffer) {
    const size_t open = buffer.find('[');
    if (buffer.rfind("RPC", 0) != 0 || open == std::string::npos || buffer.back() != ']') {
        return "";
    }
    return buffer.substr(open + 1, buffer.size() - open - 2);
}

// A gemma4_assistant attends to the KV of the target's last full and last sliding layer (upstream's
// share callback: n_layer - 1 and n_layer - 2, or the layers those reuse when the target shares
// KV between its own layers). A drafter whose devices do not include the RPC server holding one of
// them cannot run that attention: ggml's scheduler aborts the process. Refuse the pair instead.
int32_t check_shared_kv_reachable(const llama_model * target, const llama_model * drafter) {
    if (!llama_mtp_internal::has_rpc_device(target)) {
        return LLAMA_MTP_OK;
    }
    const std::string shared =
        model_meta(target, model_meta(target, "general.architecture") + ".attention.shared_kv_layers");
    const int32_t            first = llama_mtp_internal::first_drafter_kv_layer(llama_model_n_layer(target),
                                                                     shared.empty() ? 0 : std::atoi(shared.c_str()));
    std::vector<std::string> drafter_servers;
    for (int32_t i = 0; i < llama_model_n_devices(drafter); ++i) {
        drafter_servers.emplace_back(ggml_backend_dev_description(llama_model_get_device(drafter, i)));
    }
    const char * name   = nullptr;
    const char * buffer = nullptr;
    for (int32_t i = 0; llama_model_tensor_placement(target, i, &name, &buffer); ++i) {
        for (const int32_t il : {first, first + 1}) {
            if (std::string(name) != "blk." + std::to_string(il) + ".attn_norm.weight") {
                continue;
            }
            const std::string endpoint = rpc_endpoint_of(buffer);
            if (!endpoint.empty() &&
                std::find(drafter_servers.begin(), drafter_servers.end(), endpoint) == drafter_servers.end()) {
                set_error("the drafter reads the KV cache of the target's layer " + std::to_string(il) +
                          ", which is on the RPC server at " + endpoint +
                          ": keep the target's last layers local (a larger tensor_split share for the last, "
                          "local device) or load the drafter with the same rpc servers");
                return LLAMA_MTP_ERR_INVALID_ARG;
            }
        }
    }
    return LLAMA_MTP_OK;
}

int32_t check_pair(llama_model * target, llama_model * drafter, const llama_mtp_session_params & p) {
    if (p.n_draft < 0 || p.n_draft > LLAMA_MTP_MAX_DRAFT) {
        set_error("n_draft must be in [0, " + std::to_string(LLAMA_MTP_MAX_DRAFT) + "], got " +
                  std::to_string(p.n_draft));
        return LLAMA_MTP_ERR_INVALID_ARG;
    }
    if (p.n_ctx < 8 || p.n_batch < 1) {
        set_error("n_ctx must be >= 8 and n_batch >= 1");
        return LLAMA_MTP_ERR_INVALID_ARG;
    }
    const std::string target_arch = model_meta(target, "general.architecture");
    if (target_arch == "gemma4-assistant") {
        set_error("a gemma4-assistant drafter was passed as the target: pass the Gemma 4 model it drafts for");
        return LLAMA_MTP_ERR_INVALID_ARG;
    }
    if (p.n_draft == 0) {
        return LLAMA_MTP_OK;
    }
    llama_model * head = drafter != nullptr ? drafter : target;
    if (llama_model_n_layer_nextn(head) <= 0) {
        set_error(drafter != nullptr
                      ? "the drafter has no MTP (nextn) layers: expected a gemma4_assistant or other MTP model"
                      : "the target has no MTP head of its own: pass a drafter (e.g. a gemma4_assistant model)");
        return LLAMA_MTP_ERR_INVALID_ARG;
    }
    if (drafter == nullptr) {
        return LLAMA_MTP_OK;
    }
    // upstream asserts (aborts) on these; refuse them here with a message instead
    const int32_t n_vocab_tgt = llama_vocab_n_tokens(llama_model_get_vocab(target));
    const int32_t n_vocab_dft = llama_vocab_n_tokens(llama_model_get_vocab(drafter));
    if (n_vocab_tgt != n_vocab_dft) {
        set_error("target and drafter vocabularies differ (" + std::to_string(n_vocab_tgt) + " vs " +
                  std::to_string(n_vocab_dft) + " tokens)");
        return LLAMA_MTP_ERR_INVALID_ARG;
    }
    const std::string required = required_target_arch(drafter);
    if (!required.empty() && required != target_arch) {
        set_error("the drafter (" + model_meta(drafter, "general.architecture") + ") requires a " + required +
                  " target, but the target is " + target_arch);
        return LLAMA_MTP_ERR_INVALID_ARG;
    }
    // the drafter reads the target's token ids: the vocabularies must be the same list
    const llama_vocab * vt = llama_model_get_vocab(target);
    const llama_vocab * vd = llama_model_get_vocab(drafter);
    for (llama_token t = 0; t < n_vocab_tgt; ++t) {
        const char * a = llama_vocab_get_text(vt, t);
        const char * b = llama_vocab_get_text(vd, t);
        a              = a != nullptr ? a : "";
        b              = b != nullptr ? b : "";
        if (std::strcmp(a, b) != 0) {
            set_error("target and drafter tokenizers differ at token " + std::to_string(t) + " ('" + a + "' vs '" + b +
                      "')");
            return LLAMA_MTP_ERR_INVALID_ARG;
        }
    }
    if (llama_model_n_embd_out(target) != llama_model_n_embd_out(drafter)) {
        set_error("the drafter reads hidden rows of width " + std::to_string(llama_model_n_embd_out(drafter)) +
                  " but the target produces " + std::to_string(llama_model_n_embd_out(target)) +
                  ": it was made for another target");
        return LLAMA_MTP_ERR_INVALID_ARG;
    }
    return check_shared_kv_reachable(target, drafter);
}

// LLAMA_MTP_ERR_REMOTE when an RPC server of the target or the drafter was lost (no work for a
// session without remote layers: it runs every step).
int32_t check_remotes(const llama_mtp_session * s) {
    if (!s->remote) {
        return LLAMA_MTP_OK;
    }
    const int32_t rc = llama_mtp_internal::check_remote(s->target);
    return rc != LLAMA_MTP_OK ? rc : llama_mtp_internal::check_remote(s->drafter);
}

// Decode batch_tgt on the target and show it to the drafter.
int32_t decode_target(llama_mtp_session * s, common_batch & batch) {
    const int32_t rc = llama_process(s->ctx_tgt.get(), LLAMA_PROCESS_TYPE_DECODE, batch.get());
    s->stats.n_target_passes++;
    if (rc == 1) {
        set_error_with_log("no KV cache slot for the batch (context full?)");
        return LLAMA_MTP_ERR_KV_FULL;
    }
    if (rc != 0) {
        if (check_remotes(s) != LLAMA_MTP_OK) {
            return LLAMA_MTP_ERR_REMOTE;
        }
        set_error_with_log("target decode returned " + std::to_string(rc));
        return LLAMA_MTP_ERR_DECODE;
    }
    if (s->spec && !common_speculative_process(s->spec.get(), batch)) {
        set_error_with_log("the drafter failed to process the target batch");
        return LLAMA_MTP_ERR_DECODE;
    }
    return LLAMA_MTP_OK;
}

// Keep the longest prefix of the cached tokens that the new prompt repeats (the prompt's last token
// never enters the KV here, and one more is always decoded so the drafter sees a fresh hidden row).
// Everything else is dropped. A sliding-window cache may already have evicted cells the kept
// prefix's tail still attends to; then nothing is kept.
int32_t keep_prefix(llama_mtp_session * s, const llama_token * prompt, int32_t n_prompt) {
    int32_t n_keep = 0;
    if (s->kv_valid) {
        const int32_t limit = std::min<int32_t>(static_cast<int32_t>(s->tokens_tgt.size()), n_prompt - 2);
        while (n_keep < limit && s->tokens_tgt[n_keep] == prompt[n_keep]) {
            ++n_keep;
        }
    }
    if (n_keep > 0 && s->trim(n_keep)) {
        // (the iswa cache reports its sliding-window part: -1 once every kept cell was evicted)
        llama_memory_t  mem     = llama_get_memory(s->ctx_tgt.get());
        const int32_t   n_swa   = llama_model_n_swa(s->target);
        const llama_pos pos_min = llama_memory_seq_pos_min(mem, 0);
        const llama_pos pos_max = llama_memory_seq_pos_max(mem, 0);
        if (pos_max == n_keep - 1 && pos_min >= 0 && (n_swa <= 0 || pos_min <= std::max(0, n_keep - n_swa))) {
            s->tokens_tgt.resize(n_keep);
            return n_keep;
        }
    }
    s->clear_memory();
    s->tokens_tgt.clear();
    return 0;
}

// A shadow draft's chain against what the target emits, one position per target-alone step: it is
// scored when a position misses, when the chain runs out, or when a step drafts for real (then
// only the positions seen so far count).
void score_shadow(llama_mtp_session * s, int32_t n_draft, llama_token emitted) {
    if (s->shadow_chain.empty()) {
        return;
    }
    const int32_t n_chain = static_cast<int32_t>(s->shadow_chain.size());
    int32_t       judged  = s->shadow_matched;
    if (n_draft == 0) {
        judged++;
        s->shadow_matched += emitted == s->shadow_chain[s->shadow_matched] ? 1 : 0;
    }
    if (n_draft > 0 || s->shadow_matched < judged || s->shadow_matched == n_chain || s->done) {
        s->tuner->observe_shadow(judged, s->shadow_matched, s->shadow_draft_us);
        s->shadow_chain.clear();
    }
}

// Keep the target's nextn row of batch row i (the last decode): the next draft starts from it.
void keep_pending_row(llama_mtp_session * s, int32_t i) {
    const float * h = llama_get_embeddings_nextn_ith(s->ctx_tgt.get(), i);
    if (h != nullptr) {
        std::copy(h, h + s->pending_h.size(), s->pending_h.begin());
    }
}

// All n_max draft tokens in one drafter decode: [id_last at n_past, the pending row] in, the
// chained steps' argmax ids out. Upstream's loop decodes once per draft token instead, each a
// host round trip.
int32_t draft_fused(llama_mtp_session * s, int32_t n_max) {
    s->batch_dft.clear();
    const int32_t idx = s->batch_dft.add(s->id_last, s->n_past, 0, true);
    s->batch_dft.set_embd(idx, {s->pending_h.data(), 1, s->pending_h.size()});
    const int32_t rc = llama_process(s->ctx_dft.get(), LLAMA_PROCESS_TYPE_DECODE, s->batch_dft.get());
    if (rc != 0) {
        set_error_with_log("the fused draft decode returned " + std::to_string(rc));
        return LLAMA_MTP_ERR_DECODE;
    }
    llama_token   ids[LLAMA_MTP_MAX_DRAFT];
    const int32_t n = llama_get_mtp_draft_tokens(s->ctx_dft.get(), ids, LLAMA_MTP_MAX_DRAFT);
    if (n < n_max) {
        set_error("the drafter's graph returned " + std::to_string(n) + " draft tokens, expected " +
                  std::to_string(n_max));
        return LLAMA_MTP_ERR_INTERNAL;
    }
    s->draft.assign(ids, ids + n_max);
    return LLAMA_MTP_OK;
}

// A speculative draft queued on the drafter; cancelled unless taken, so nothing is left running on
// the shared KV when a step returns, however it returns.
struct queued_draft {
    llama_context * ctx_dft = nullptr;
    int32_t         row     = -1;  // the verify row it drafts from; -1: none queued

    ~queued_draft() { cancel(); }

    void cancel() {
        if (row >= 0) {
            llama_decode_mtp_cancel(ctx_dft);
            row = -1;
        }
    }
};

// The n_accepted the next verify most likely ends with, or -1 when no value is likely enough for
// a speculative draft to pay off. The drafter's device time follows the verify pass either way, so
// a right guess saves only the draft's host work and a round trip (~0.03 ms of a 4.7 ms H100 step
// at k=1), while a wrong one costs a whole extra draft (~0.4 ms): guess only when nine recent
// steps in ten ended alike.
int32_t predict_accepted(const llama_mtp_session * s) {
    int32_t best  = 0;
    float   total = 0.0f;
    for (int32_t i = 0; i <= s->params.n_draft; ++i) {
        total += s->accepted_freq[i];
        if (s->accepted_freq[i] > s->accepted_freq[best]) {
            best = i;
        }
    }
    return total > 0.0f && s->accepted_freq[best] >= 0.9f * total ? best : -1;
}

void record_accepted(llama_mtp_session * s, int32_t n_accepted) {
    for (float & f : s->accepted_freq) {
        f *= 0.9f;
    }
    s->accepted_freq[n_accepted] += 1.0f;
}

// Draft budget of a step that starts at n_past with n_left tokens still allowed.
int32_t draft_budget(const llama_mtp_session * s, int32_t n_ctx, int32_t n_past, int32_t n_left) {
    return std::max(0, std::min({s->params.n_draft, n_ctx - n_past - 2, n_left - 1}));
}

// prepare_next: with the verify batch queued on the target, queue the next step's draft behind it,
// as if its first `row` drafts will be accepted (row = the predicted n_accepted). The draft reads
// the token and hidden row the verify pass produces at that row, on the device.
void prepare_next(llama_mtp_session * s, queued_draft & q, int32_t n_ctx, int32_t n_draft) {
    const int32_t row = s->params.speculate_row >= 0 ? s->params.speculate_row : predict_accepted(s);
    if (row < 0 || row > n_draft || draft_budget(s, n_ctx, s->n_past + 1 + row, s->n_left - 1 - row) <= 0) {
        return;
    }
    llama_mtp_draft_request req{};
    req.pos     = s->n_past + 1 + row;
    req.token   = 0;
    req.h       = nullptr;
    req.src_row = row;
    if (llama_decode_mtp_async(s->ctx_dft.get(), req) == 0) {
        q.ctx_dft = s->ctx_dft.get();
        q.row     = row;
        s->stats.n_draft_speculative++;
    }
}

// After the accept: keep the queued draft when it was built on the accepted prefix, else cancel it.
int32_t finish_next(llama_mtp_session * s, queued_draft & q, int32_t n_accepted) {
    if (q.row < 0) {
        return LLAMA_MTP_OK;
    }
    if (q.row != n_accepted || s->done) {
        q.cancel();
        s->stats.n_draft_cancelled++;
        return LLAMA_MTP_OK;
    }
    q.row = -1;
    llama_token   ids[LLAMA_MTP_MAX_DRAFT];
    int32_t       n  = 0;
    const int32_t rc = llama_decode_mtp_wait(s->ctx_dft.get(), ids, LLAMA_MTP_MAX_DRAFT, &n);
    if (rc != 0 || n < s->params.n_draft) {
        set_error_with_log("the speculative draft returned " + std::to_string(rc) + " with " + std::to_string(n) +
                           " tokens");
        return LLAMA_MTP_ERR_DECODE;
    }
    s->next_draft.assign(ids, ids + n);
    s->next_ready = true;
    return LLAMA_MTP_OK;
}

int32_t start(llama_mtp_session * s, const llama_token * prompt, int32_t n_prompt, int32_t n_max) {
    if (prompt == nullptr || n_prompt < 1 || n_max < 0) {
        set_error("start needs at least one prompt token and n_max >= 0");
        return LLAMA_MTP_ERR_INVALID_ARG;
    }
    const int32_t n_vocab = llama_vocab_n_tokens(s->vocab);
    for (int32_t i = 0; i < n_prompt; ++i) {
        if (prompt[i] < 0 || prompt[i] >= n_vocab) {
            set_error("token id " + std::to_string(prompt[i]) + " at index " + std::to_string(i) +
                      " is outside the vocabulary [0, " + std::to_string(n_vocab) + ")");
            return LLAMA_MTP_ERR_INVALID_ARG;
        }
    }
    const int64_t n_ctx = llama_n_ctx(s->ctx_tgt.get());
    if (n_prompt + 1 > n_ctx) {
        set_error("the prompt (" + std::to_string(n_prompt) + " tokens) does not fit the context (" +
                  std::to_string(n_ctx) + " tokens)");
        return LLAMA_MTP_ERR_KV_FULL;
    }
    const int64_t t0 = ggml_time_us();
    s->started       = false;
    s->done          = true;
    s->next_ready    = false;
    s->spec.reset();
    const int32_t n_keep = keep_prefix(s, prompt, n_prompt);
    s->kv_valid          = false;  // until the prompt is in
    if (s->ctx_dft && !s->fused) {
        common_params_speculative sp;
        sp.types                  = {COMMON_SPECULATIVE_TYPE_DRAFT_MTP};
        sp.draft.n_max            = s->params.n_draft;
        sp.draft.n_min            = 0;
        sp.draft.p_min            = s->params.p_min;
        sp.draft.backend_sampling = s->params.backend_sampling;
        sp.draft.ctx_tgt          = s->ctx_tgt.get();
        sp.draft.ctx_dft          = s->ctx_dft.get();
        s->spec.reset(common_speculative_init(sp, 1));
        if (!s->spec) {
            set_error_with_log("upstream could not start draft-mtp for this pair");
            return LLAMA_MTP_ERR_CONTEXT;
        }
    }

    // The prompt's last token stays out of the KV: it opens the first verify batch, and the
    // drafter's first proposal pairs it with the hidden row of the token before it.
    const int32_t n_batch = static_cast<int32_t>(llama_n_batch(s->ctx_tgt.get()));
    for (int32_t off = n_keep; off < n_prompt - 1; off += n_batch) {
        const int32_t len = std::min(n_batch, n_prompt - 1 - off);
        s->batch_tgt.clear();
        for (int32_t i = 0; i < len; ++i) {
            s->batch_tgt.add(prompt[off + i], off + i, 0, false);
        }
        const int32_t rc = decode_target(s, s->batch_tgt);
        if (rc != LLAMA_MTP_OK) {
            return rc;
        }
    }
    if (n_prompt > 1 && s->remote) {
        llama_synchronize(s->ctx_tgt.get());
        const int32_t rc = check_remotes(s);
        if (rc != LLAMA_MTP_OK) {
            return rc;
        }
    }
    s->tokens_tgt.assign(prompt, prompt + n_prompt - 1);
    if (s->fused) {
        keep_pending_row(s, s->batch_tgt.size() - 1);
    }
    if (s->spec) {
        common_speculative_begin(s->spec.get(), 0, s->tokens_tgt);
    }
    s->id_last = prompt[n_prompt - 1];
    s->n_past  = n_prompt - 1;
    s->n_left  = n_max;
    s->draft.clear();
    s->started = true;
    s->shadow_chain.clear();  // a new generation: an old chain has nothing to be scored against
    s->kv_valid = true;
    s->done     = n_max == 0;
    s->stats.n_prompt += n_prompt;
    s->stats.n_prompt_reused += n_keep;
    s->stats.t_prompt_us += ggml_time_us() - t0;
    return LLAMA_MTP_OK;
}

// One line per draft position: the step, the position in the block, the drafted token, whether the
// target accepted it, the target's own token at that row (null where the row was not sampled), and
// the step's draft and verify times. Off (no cost) unless a trace file is open.
void write_trace(llama_mtp_session * s, const llama_token * out, int32_t n_emit, int32_t n_accepted, int64_t draft_us,
                 int64_t verify_us) {
    FILE *        f = s->trace.get();
    const int32_t n = static_cast<int32_t>(s->draft.size());
    for (int32_t i = 0; i < n; ++i) {
        char target[16] = "null";
        if (i < n_emit) {
            snprintf(target, sizeof(target), "%d", out[i]);
        }
        fprintf(f,
                "{\"step\":%lld,\"pos\":%d,\"drafted\":%d,\"accepted\":%s,\"target\":%s,\"draft_us\":%lld,"
                "\"verify_us\":%lld}\n",
                static_cast<long long>(s->stats.n_steps), i, s->draft[i], i < n_accepted ? "true" : "false", target,
                static_cast<long long>(draft_us), static_cast<long long>(verify_us));
    }
    fflush(f);
}

int32_t step(llama_mtp_session * s, llama_token * out, int32_t cap, llama_mtp_step_result * res) {
    *res = {};
    if (!s->started) {
        set_error("step before start");
        return LLAMA_MTP_ERR_INVALID_ARG;
    }
    if (cap < s->params.n_draft + 1) {
        set_error("the output buffer must hold n_draft + 1 tokens");
        return LLAMA_MTP_ERR_INVALID_ARG;
    }
    if (s->done) {
        res->done = true;
        return LLAMA_MTP_OK;
    }
    const int64_t t0    = ggml_time_us();
    const int32_t n_ctx = static_cast<int32_t>(llama_n_ctx(s->ctx_tgt.get()));
    if (s->n_past + 1 > n_ctx) {
        set_error("the context is full (" + std::to_string(n_ctx) + " tokens)");
        return LLAMA_MTP_ERR_KV_FULL;
    }

    // draft: no more than fits the context and the remaining budget
    const int64_t t_draft0 = ggml_time_us();
    s->draft.clear();
    const int32_t n_budget    = draft_budget(s, n_ctx, s->n_past, s->n_left);
    int32_t       n_draft_max = n_budget;
    bool          shadow      = false;  // auto: draft, verify none, score the first draft
    bool          drafted     = false;  // upstream's driver drafted this step (it then expects an accept)
    if (s->tuner) {
        const auto c = s->tuner->choose(n_budget);
        n_draft_max  = c.k;
        shadow       = c.shadow && s->fused && n_budget > 0;
    }
    if (shadow) {
        const int32_t rc = draft_fused(s, n_budget);
        if (rc != LLAMA_MTP_OK) {
            return rc;
        }
        s->stats.n_draft_calls++;
        s->shadow_chain.assign(s->draft.begin(), s->draft.end());
        s->shadow_matched  = 0;
        s->shadow_draft_us = ggml_time_us() - t_draft0;
        s->draft.clear();
        if (!s->trim(s->n_past)) {
            set_error("the KV cache refused to drop draft positions");
            return LLAMA_MTP_ERR_INTERNAL;
        }
    } else if ((s->fused || s->spec) && n_draft_max > 0) {
        if (s->next_ready) {
            s->draft.assign(s->next_draft.begin(), s->next_draft.begin() + n_draft_max);
        } else if (s->fused) {
            const int32_t rc = draft_fused(s, n_draft_max);
            if (rc != LLAMA_MTP_OK) {
                return rc;
            }
        } else {
            common_speculative_get_draft_params(s->spec.get(), 0) = {
                /* .drafting = */ true,
                /* .n_max    = */ n_draft_max,
                /* .pos0     = */ s->n_past,
                /* .id_last  = */ s->id_last,
                /* .prompt   = */ &s->tokens_tgt,
                /* .result   = */ &s->draft,
            };
            common_speculative_draft(s->spec.get());
        }
        s->stats.n_draft_calls++;
        drafted = true;
        if (static_cast<int32_t>(s->draft.size()) > n_draft_max) {
            s->draft.resize(n_draft_max);
        }
        // the drafter wrote nothing we keep beyond the verified prefix
        if (!s->trim(s->n_past)) {
            set_error("the KV cache refused to drop draft positions");
            return LLAMA_MTP_ERR_INTERNAL;
        }
    }

    // verify [id_last, draft...] in one target pass
    const int64_t t_verify0 = ggml_time_us();
    s->batch_tgt.clear();
    s->batch_tgt.add(s->id_last, s->n_past, 0, true);
    for (size_t i = 0; i < s->draft.size(); ++i) {
        s->batch_tgt.add(s->draft[i], s->n_past + 1 + static_cast<int32_t>(i), 0, true);
    }
    s->next_ready = false;
    int32_t rc    = decode_target(s, s->batch_tgt);
    if (rc != LLAMA_MTP_OK) {
        return rc;
    }
    const int32_t n_draft = static_cast<int32_t>(s->draft.size());
    queued_draft  next;
    if (s->async_pipeline) {
        prepare_next(s, next, n_ctx, n_draft);
    }

    // accept: sample each row with the target's sampler while it agrees with the draft
    int32_t n_emit = 0;
    for (int32_t i = 0; i <= n_draft; ++i) {
        const llama_token id = llama_sampler_sample(s->smpl.get(), s->ctx_tgt.get(), i);
        if (id == LLAMA_TOKEN_NULL || !finite_logit(s->ctx_tgt.get(), i, id)) {
            set_error("no token could be sampled from the target's row " + std::to_string(i) +
                      ": its logits are not numbers (NaN); the model's weights or activations overflow on this "
                      "backend");
            return LLAMA_MTP_ERR_DECODE;
        }
        out[n_emit++] = id;
        if (i == n_draft || id != s->draft[i] || llama_vocab_is_eog(s->vocab, id)) {
            break;
        }
    }
    const int32_t n_accepted = n_emit - 1;
    // a server lost during this step answered with zeros: emit nothing (the sampler synchronised)
    rc = check_remotes(s);
    if (rc != LLAMA_MTP_OK) {
        return rc;
    }
    const bool    on_backend = llama_get_sampled_token_ith(s->ctx_tgt.get(), 0) != LLAMA_TOKEN_NULL;
    const int32_t n_kept     = std::min(n_emit, s->n_left);  // what the token budget lets out
    s->done                  = n_kept == s->n_left || llama_vocab_is_eog(s->vocab, out[n_kept - 1]);
    if (s->async_pipeline) {
        rc = finish_next(s, next, n_accepted);
        if (rc != LLAMA_MTP_OK) {
            return rc;
        }
        if (n_draft > 0) {
            record_accepted(s, n_accepted);
        }
    }
    if (s->trace) {
        write_trace(s, out, n_emit, n_accepted, t_verify0 - t_draft0, ggml_time_us() - t_verify0);
    }
    if (s->tuner) {
        s->tuner->observe(n_draft, n_accepted, t_verify0 - t_draft0, ggml_time_us() - t_verify0);
        score_shadow(s, n_draft, out[0]);
    }
    s->stats.steps_by_k[n_draft]++;
    if (s->fused) {
        keep_pending_row(s, n_accepted);  // the row of the last token that stays in the KV
    } else if (s->spec && drafted) {
        // (only after its own draft: upstream asserts on an accept that follows none)
        common_speculative_accept(s->spec.get(), 0, static_cast<uint16_t>(n_accepted));
    }
    for (int32_t i = 0; i < n_draft; ++i) {
        res->draft[i] = s->draft[i];
        s->stats.drafted_by_pos[i]++;
        if (i < n_accepted) {
            s->stats.accepted_by_pos[i]++;
        }
    }
    s->tokens_tgt.push_back(s->id_last);
    s->tokens_tgt.insert(s->tokens_tgt.end(), out, out + n_accepted);
    s->n_past += 1 + n_accepted;
    s->id_last = out[n_emit - 1];
    if (!s->trim(s->n_past)) {
        set_error("the KV cache refused to drop rejected positions");
        return LLAMA_MTP_ERR_INTERNAL;
    }

    s->n_left -= n_kept;

    res->n_tokens   = n_kept;
    res->n_drafted  = n_draft;
    res->n_accepted = n_accepted;
    res->done       = s->done;
    s->stats.n_steps++;
    s->stats.n_generated += n_kept;
    s->stats.n_sampled_on_backend += on_backend ? n_kept : 0;
    s->stats.n_drafted += n_draft;
    s->stats.n_accepted += n_accepted;
    s->stats.t_generate_us += ggml_time_us() - t0;
    return LLAMA_MTP_OK;
}

}  // namespace

extern "C" {

struct llama_mtp_session_params llama_mtp_session_default_params(void) {
    llama_mtp_session_params p{};
    p.n_draft          = 3;
    p.draft_policy     = LLAMA_MTP_DRAFT_FIXED;
    p.p_min            = 0.0f;
    p.n_ctx            = 2048;
    p.n_batch          = 512;
    p.n_threads        = 0;
    p.swa_full         = false;
    p.offload_kqv      = true;
    p.backend_sampling = true;
    p.fused_draft      = true;
    p.pipeline         = LLAMA_MTP_PIPELINE_SYNC;
    p.speculate_row    = -1;
    p.type_kv          = GGML_TYPE_F16;
    p.flash_attn       = LLAMA_FLASH_ATTN_TYPE_AUTO;
    p.temperature      = 0.0f;
    p.top_k            = 0;
    p.top_p            = 1.0f;
    p.seed             = LLAMA_DEFAULT_SEED;
    p.exact            = false;
    p.trace_path       = nullptr;
    return p;
}

int32_t llama_mtp_session_create(struct llama_model * target, struct llama_model * drafter,
                                 struct llama_mtp_session_params params, struct llama_mtp_session ** out) {
    if (out == nullptr || target == nullptr) {
        set_error("target and out must not be NULL");
        return LLAMA_MTP_ERR_INVALID_ARG;
    }
    *out = nullptr;
    return guarded("session create", [&]() -> int32_t {
        int32_t rc = check_pair(target, drafter, params);
        if (rc != LLAMA_MTP_OK) {
            return rc;
        }
        auto s     = std::make_unique<llama_mtp_session>();
        s->params  = params;
        s->target  = target;
        s->drafter = params.n_draft > 0 ? (drafter != nullptr ? drafter : target) : nullptr;
        s->vocab   = llama_model_get_vocab(target);
        s->remote  = llama_mtp_internal::has_rpc_device(target) || llama_mtp_internal::has_rpc_device(s->drafter);

        llama_mtp_context_params tp = llama_mtp_context_default_params();
        tp.n_ctx                    = params.n_ctx;
        tp.n_batch                  = params.n_batch;
        tp.n_ubatch                 = params.n_batch;
        tp.n_threads                = params.n_threads;
        tp.offload_kqv              = params.offload_kqv;
        tp.swa_full                 = params.swa_full;
        tp.type_kv                  = params.type_kv;
        tp.flash_attn               = params.flash_attn;
        llama_context_params cp     = llama_mtp_internal::to_llama_params(tp);
        cp.n_rs_seq                 = static_cast<uint32_t>(params.n_draft);  // rollback for recurrent targets
        // Backend sampling of the verify rows: every row is sampled in the target's graph and the
        // host reads n_draft + 1 ids instead of as many vocab-wide logits rows. The dist sampler's
        // draws are transactional, so a rejected row's draw is given back and the random stream
        // is the one host sampling would use.
        s->smpl.reset(make_target_sampler(params));
        llama_sampler_seq_config target_sampler{0, s->smpl.get()};
        if (params.backend_sampling) {
            cp.samplers              = &target_sampler;
            cp.n_samplers            = 1;
            cp.n_outputs_max_per_seq = static_cast<uint32_t>(params.n_draft) + 1;
        }
        s->ctx_tgt.reset(llama_init_from_model(target, cp));
        if (!s->ctx_tgt) {
            set_error_with_log("failed to create the target context");
            return LLAMA_MTP_ERR_CONTEXT;
        }
        if (!llama_mtp_internal::kv_cache_type_supported(s->ctx_tgt.get(), cp.type_k) ||
            !llama_mtp_internal::set_exact(s->ctx_tgt.get(), params.exact)) {
            return LLAMA_MTP_ERR_CONTEXT;
        }
        if (s->drafter != nullptr) {
            // as upstream's common_speculative_init_result: same size, target as ctx_other,
            // swa_full inherited from the target (never forced on for the draft)
            cp.samplers              = nullptr;
            cp.n_samplers            = 0;
            cp.n_outputs_max_per_seq = 0;
            cp.ctx_type              = LLAMA_CONTEXT_TYPE_MTP;
            cp.n_ctx                 = llama_n_ctx(s->ctx_tgt.get());
            cp.n_rs_seq              = 0;
            cp.ctx_other             = s->ctx_tgt.get();
            s->ctx_dft.reset(llama_init_from_model(s->drafter, cp));
            if (!s->ctx_dft) {
                set_error_with_log("failed to create the MTP draft context");
                return LLAMA_MTP_ERR_CONTEXT;
            }
        }
        const char * trace_path = params.trace_path != nullptr ? params.trace_path : getenv("LLAMA_MTP_ACC_TRACE");
        if (trace_path != nullptr && trace_path[0] != '\0' && s->ctx_dft) {
            s->trace.reset(fopen(trace_path, "w"));
            if (!s->trace) {
                set_error(std::string("cannot open the acceptance trace ") + trace_path);
                return LLAMA_MTP_ERR_IO;
            }
        }
        s->batch_tgt = common_batch(s->ctx_tgt.get());
        // fused drafting needs greedy drafts (no p_min cut-off) from a drafter that reads the
        // target's KV: a gemma4-assistant
        s->fused = s->ctx_dft && params.fused_draft && params.p_min <= 0.0f &&
                   model_meta(s->drafter, "general.architecture") == "gemma4-assistant" &&
                   llama_get_ctx_other(s->ctx_dft.get()) == s->ctx_tgt.get();
        if (s->fused) {
            // Upstream's driver is not started for a fused session: it would attach a top-k
            // sampler to the draft graph (run on every call, never read) and copy every verify
            // row. What it would set that the fused graph needs is the nextn rows' output.
            llama_set_embeddings_nextn(s->ctx_tgt.get(), true, /*masked=*/false);
            llama_set_embeddings_nextn(s->ctx_dft.get(), true, /*masked=*/true);
            llama_set_mtp_draft_steps(s->ctx_dft.get(), params.n_draft);
            s->batch_dft = common_batch(s->ctx_dft.get());
            s->pending_h.assign(static_cast<size_t>(llama_model_n_embd_out(s->target)), 0.0f);
        }
        if (params.draft_policy == LLAMA_MTP_DRAFT_AUTO) {
            if (params.pipeline == LLAMA_MTP_PIPELINE_ASYNC) {
                set_error(
                    "the adaptive draft length (auto) needs pipeline sync: an async pipeline queues the next "
                    "draft before this step's length is known");
                return LLAMA_MTP_ERR_INVALID_ARG;
            }
            if (s->ctx_dft) {
                s->tuner = std::make_unique<llama_mtp_internal::draft_tuner>(params.n_draft);
            }
        } else if (params.draft_policy != LLAMA_MTP_DRAFT_FIXED) {
            set_error("draft_policy must be LLAMA_MTP_DRAFT_FIXED or LLAMA_MTP_DRAFT_AUTO, got " +
                      std::to_string(params.draft_policy));
            return LLAMA_MTP_ERR_INVALID_ARG;
        }
        if (params.pipeline == LLAMA_MTP_PIPELINE_ASYNC) {
            if (!s->fused || !params.backend_sampling) {
                set_error(
                    "pipeline async needs a gemma4-assistant drafter drafting in one graph (fused_draft, p_min 0) "
                    "and backend_sampling: the next draft reads the verify pass's sampled token on the device");
                return LLAMA_MTP_ERR_INVALID_ARG;
            }
            if (params.speculate_row < -1 || params.speculate_row > params.n_draft) {
                set_error("speculate_row must be -1 (predicted) or a verify row in [0, n_draft], got " +
                          std::to_string(params.speculate_row));
                return LLAMA_MTP_ERR_INVALID_ARG;
            }
            s->async_pipeline = true;
        } else if (params.pipeline != LLAMA_MTP_PIPELINE_SYNC) {
            set_error("pipeline must be LLAMA_MTP_PIPELINE_SYNC or LLAMA_MTP_PIPELINE_ASYNC, got " +
                      std::to_string(params.pipeline));
            return LLAMA_MTP_ERR_INVALID_ARG;
        }
        *out = s.release();
        return LLAMA_MTP_OK;
    });
}

void llama_mtp_session_free(struct llama_mtp_session * session) {
    if (session != nullptr) {
        // the speculative driver references both contexts: drop it first
        session->spec.reset();
        session->ctx_dft.reset();
        delete session;
    }
}

int32_t llama_mtp_session_start(struct llama_mtp_session * session, const llama_token * prompt, int32_t n_prompt,
                                int32_t n_max) {
    if (session == nullptr) {
        set_error("session is NULL");
        return LLAMA_MTP_ERR_INVALID_ARG;
    }
    return guarded("session start", [&]() { return start(session, prompt, n_prompt, n_max); });
}

int32_t llama_mtp_session_step(struct llama_mtp_session * session, llama_token * out, int32_t cap,
                               struct llama_mtp_step_result * result) {
    if (session == nullptr || out == nullptr || result == nullptr) {
        set_error("session, out and result must not be NULL");
        return LLAMA_MTP_ERR_INVALID_ARG;
    }
    return guarded("session step", [&]() {
        const int32_t rc = step(session, out, cap, result);
        if (rc != LLAMA_MTP_OK) {
            // the contexts are in an unknown state: a new start is needed, and reuses nothing
            session->done     = true;
            session->kv_valid = false;
        }
        return rc;
    });
}

int32_t llama_mtp_session_generate(struct llama_mtp_session * session, const llama_token * prompt, int32_t n_prompt,
                                   int32_t n_max, llama_token * out, int32_t * n_out) {
    if (session == nullptr || out == nullptr || n_out == nullptr) {
        set_error("session, out and n_out must not be NULL");
        return LLAMA_MTP_ERR_INVALID_ARG;
    }
    *n_out = 0;
    return guarded("session generate", [&]() -> int32_t {
        int32_t rc = start(session, prompt, n_prompt, n_max);
        if (rc != LLAMA_MTP_OK) {
            return rc;
        }
        std::vector<llama_token> buf(LLAMA_MTP_MAX_DRAFT + 1);
        llama_mtp_step_result    res{};
        while (!session->done) {
            rc = step(session, buf.data(), static_cast<int32_t>(buf.size()), &res);
            if (rc != LLAMA_MTP_OK) {
                session->done     = true;
                session->kv_valid = false;
                return rc;
            }
            std::copy(buf.begin(), buf.begin() + res.n_tokens, out + *n_out);
            *n_out += res.n_tokens;
        }
        return LLAMA_MTP_OK;
    });
}

void llama_mtp_session_stats(const struct llama_mtp_session * session, struct llama_mtp_stats * out) {
    if (session != nullptr && out != nullptr) {
        *out = session->stats;
    }
}

int32_t llama_mtp_session_reset(struct llama_mtp_session * session) {
    if (session == nullptr) {
        set_error("session is NULL");
        return LLAMA_MTP_ERR_INVALID_ARG;
    }
    return guarded("session reset", [&]() -> int32_t {
        session->spec.reset();
        session->clear_memory();
        llama_sampler_reset(session->smpl.get());  // back to the seed
        session->stats = {};
        if (session->tuner) {
            session->tuner->reset();
        }
        std::fill(std::begin(session->accepted_freq), std::end(session->accepted_freq), 0.0f);
        session->next_ready = false;
        session->started    = false;
        session->done       = true;
        session->kv_valid   = false;
        session->tokens_tgt.clear();
        return LLAMA_MTP_OK;
    });
}

int32_t llama_mtp_session_set_sampling(struct llama_mtp_session * session, float temperature, int32_t top_k,
                                       float top_p, uint32_t seed) {
    if (session == nullptr) {
        set_error("session is NULL");
        return LLAMA_MTP_ERR_INVALID_ARG;
    }
    if (top_k < 0 || !(top_p > 0.0f && top_p <= 1.0f) || temperature != temperature) {
        set_error("top_k must be >= 0, top_p in (0, 1] and temperature a number");
        return LLAMA_MTP_ERR_INVALID_ARG;
    }
    return guarded("session set sampling", [&]() -> int32_t {
        llama_mtp_session_params p = session->params;
        p.temperature              = temperature;
        p.top_k                    = top_k;
        p.top_p                    = top_p;
        p.seed                     = seed;
        std::unique_ptr<llama_sampler, sampler_deleter> smpl(make_target_sampler(p));
        // the context holds the backend sampler by pointer: attach the new one before the old is freed
        if (session->params.backend_sampling && !llama_set_sampler(session->ctx_tgt.get(), 0, smpl.get())) {
            set_error_with_log("the target context refused the new sampler");
            return LLAMA_MTP_ERR_INTERNAL;
        }
        session->smpl   = std::move(smpl);
        session->params = p;
        return LLAMA_MTP_OK;
    });
}

struct llama_context * llama_mtp_session_target_context(struct llama_mtp_session * session) {
    return session != nullptr ? session->ctx_tgt.get() : nullptr;
}

struct llama_context * llama_mtp_session_draft_context(struct llama_mtp_session * session) {
    return session != nullptr ? session->ctx_dft.get() : nullptr;
}

}  // extern "C"
