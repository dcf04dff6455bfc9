// C-level smoke test of the shim, run under ASan + UBSan by ci/sanitize.sh:
//   session_smoke TARGET.gguf DRAFTER.gguf
// loads the pair, runs draft-mtp and the target-only baseline, checks they agree (greedy),
// and checks that bad calls fail with a status instead of crashing.
#include <stdio.h>
#include <string.h>

#include "check.h"

static int generate(struct llama_model * target, struct llama_model * drafter, int32_t n_draft, llama_token * out,
                    int32_t * n_out) {
    struct llama_mtp_session_params p = llama_mtp_session_default_params();
    p.n_draft                         = n_draft;
    p.n_ctx                           = 256;
    p.type_kv                         = 0;  // f32
    p.flash_attn                      = 0;
    struct llama_mtp_session * s      = NULL;
    CHECK(llama_mtp_session_create(target, drafter, p, &s) == LLAMA_MTP_OK);
    const llama_token prompt[] = {2, 40, 41, 42, 43};
    CHECK(llama_mtp_session_generate(s, prompt, 5, 24, out, n_out) == LLAMA_MTP_OK);
    // continue the conversation: the cached prefix is reused
    CHECK(llama_mtp_session_generate(s, prompt, 5, 8, out + 32, n_out + 1) == LLAMA_MTP_OK);
    struct llama_mtp_stats st;
    llama_mtp_session_stats(s, &st);
    CHECK(st.n_prompt_reused > 0);
    llama_mtp_session_free(s);
    return 0;
}

int main(int argc, char ** argv) {
    if (argc != 3) {
        fprintf(stderr, "usage: %s TARGET.gguf DRAFTER.gguf\n", argv[0]);
        return 2;
    }
    struct llama_model * target  = NULL;
    struct llama_model * drafter = NULL;
    load_pair(argv[1], argv[2], &target, &drafter);
    struct llama_mtp_model_params mp = llama_mtp_model_default_params();

    llama_token spec[64], base[64];
    int32_t     n_spec[2], n_base[2];
    CHECK(generate(target, drafter, 3, spec, n_spec) == 0);
    CHECK(generate(target, NULL, 0, base, n_base) == 0);
    CHECK(n_spec[0] == n_base[0] && memcmp(spec, base, sizeof(llama_token) * n_spec[0]) == 0);

    // misuse: every one a status, none a crash
    struct llama_mtp_session *      s = NULL;
    struct llama_mtp_session_params p = llama_mtp_session_default_params();
    CHECK(llama_mtp_session_create(target, target, p, &s) == LLAMA_MTP_ERR_INVALID_ARG && s == NULL);
    CHECK(llama_mtp_session_create(drafter, NULL, p, &s) == LLAMA_MTP_ERR_INVALID_ARG && s == NULL);
    p.n_ctx = 256;
    CHECK(llama_mtp_session_create(target, drafter, p, &s) == LLAMA_MTP_OK);
    const llama_token bad[] = {2, 1 << 30};
    CHECK(llama_mtp_session_start(s, bad, 2, 4) == LLAMA_MTP_ERR_INVALID_ARG);
    llama_token                  out[LLAMA_MTP_MAX_DRAFT + 1];
    struct llama_mtp_step_result res;
    CHECK(llama_mtp_session_step(s, out, LLAMA_MTP_MAX_DRAFT + 1, &res) == LLAMA_MTP_ERR_INVALID_ARG);
    llama_token long_prompt[300];
    for (int i = 0; i < 300; ++i) {
        long_prompt[i] = 40 + i % 100;
    }
    CHECK(llama_mtp_session_start(s, long_prompt, 300, 4) == LLAMA_MTP_ERR_KV_FULL);
    llama_mtp_session_free(s);
    llama_mtp_session_free(NULL);

    struct llama_model * missing = NULL;
    CHECK(llama_mtp_model_load("/nonexistent.gguf", mp, &missing) == LLAMA_MTP_ERR_LOAD && missing == NULL);

    llama_model_free(drafter);
    llama_model_free(target);
    printf("session_smoke: ok (%d tokens, identical with and without drafts)\n", n_spec[0]);
    return 0;
}
