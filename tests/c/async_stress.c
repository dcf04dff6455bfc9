// Stress test of the async pipeline (patch 0012), run under ThreadSanitizer by ci/tsan.sh:
//   async_stress TARGET.gguf DRAFTER.gguf [CYCLES]
// Runs CYCLES (default 1000) draft/verify cycles on async sessions whose queued drafts are mostly
// cancelled (every draft guessed from the last verify row of a pair that rejects nearly all of
// them) or mostly kept (predicted rows), with resets and new prompts in between, and checks that
// every generation equals the sync session's token for token, that both ways of ending a queued
// draft happened, and that resident memory stays flat once warm.
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"

enum { N_DRAFT = 3, N_GEN = 24, N_PROMPTS = 8 };

static long rss_kib(void) {
    FILE * f           = fopen("/proc/self/statm", "r");
    long   pages_total = 0, pages_resident = 0;
    if (f == NULL) {
        return 0;
    }
    if (fscanf(f, "%ld %ld", &pages_total, &pages_resident) != 2) {
        pages_resident = 0;
    }
    fclose(f);
    return pages_resident * 4;
}

static struct llama_mtp_session * make_session(struct llama_model * target, struct llama_model * drafter,
                                               int32_t pipeline, int32_t speculate_row) {
    struct llama_mtp_session_params p = llama_mtp_session_default_params();
    p.n_draft                         = N_DRAFT;
    p.n_ctx                           = 256;
    p.n_threads                       = 2;
    p.pipeline                        = pipeline;
    p.speculate_row                   = speculate_row;
    struct llama_mtp_session * s      = NULL;
    CHECK(llama_mtp_session_create(target, drafter, p, &s) == LLAMA_MTP_OK);
    return s;
}

static void prompt_for(int i, llama_token * prompt) {
    for (int j = 0; j < 6; ++j) {
        prompt[j] = (llama_token)(40 + (i * 37 + j * 11) % 200);
    }
}

// One generation, step by step; returns the number of steps (draft/verify cycles).
static int run(struct llama_mtp_session * s, int i, llama_token * out, int32_t * n_out) {
    llama_token prompt[6];
    prompt_for(i, prompt);
    CHECK(llama_mtp_session_start(s, prompt, 6, N_GEN) == LLAMA_MTP_OK);
    llama_token                  buf[LLAMA_MTP_MAX_DRAFT + 1];
    struct llama_mtp_step_result res;
    int                          n_steps = 0;
    *n_out                               = 0;
    do {
        CHECK(llama_mtp_session_step(s, buf, LLAMA_MTP_MAX_DRAFT + 1, &res) == LLAMA_MTP_OK);
        memcpy(out + *n_out, buf, sizeof(llama_token) * res.n_tokens);
        *n_out += res.n_tokens;
        n_steps++;
    } while (!res.done);
    return n_steps;
}

int main(int argc, char ** argv) {
    if (argc < 3) {
        fprintf(stderr, "usage: %s TARGET.gguf DRAFTER.gguf [CYCLES]\n", argv[0]);
        return 2;
    }
    const int            cycles  = argc > 3 ? atoi(argv[3]) : 1000;
    struct llama_model * target  = NULL;
    struct llama_model * drafter = NULL;
    load_pair(argv[1], argv[2], &target, &drafter);

    // the reference generations
    llama_token                expected[N_PROMPTS][N_GEN];
    int32_t                    n_expected[N_PROMPTS];
    struct llama_mtp_session * sync = make_session(target, drafter, LLAMA_MTP_PIPELINE_SYNC, -1);
    for (int i = 0; i < N_PROMPTS; ++i) {
        run(sync, i, expected[i], &n_expected[i]);
    }
    llama_mtp_session_free(sync);

    struct llama_mtp_session * sessions[2] = {
        make_session(target, drafter, LLAMA_MTP_PIPELINE_ASYNC, N_DRAFT),  // guesses "all accepted": cancelled
        make_session(target, drafter, LLAMA_MTP_PIPELINE_ASYNC, -1),       // predicted rows: mostly kept
    };
    long    rss_warm  = 0;
    int     done      = 0;
    int64_t queued[2] = {0, 0}, cancelled[2] = {0, 0};  // summed over resets
    for (int round = 0; done < cycles; ++round) {
        struct llama_mtp_session * s = sessions[round % 2];
        const int                  i = round % N_PROMPTS;
        llama_token                out[N_GEN];
        int32_t                    n_out = 0;
        done += run(s, i, out, &n_out);
        CHECK(n_out == n_expected[i] && memcmp(out, expected[i], sizeof(llama_token) * n_out) == 0);
        if (round % 7 == 6 || done >= cycles) {
            struct llama_mtp_stats st;
            llama_mtp_session_stats(s, &st);
            queued[round % 2] += st.n_draft_speculative;
            cancelled[round % 2] += st.n_draft_cancelled;
            CHECK(llama_mtp_session_reset(s) == LLAMA_MTP_OK);
        }
        if (round == 2 * N_PROMPTS) {
            rss_warm = rss_kib();
        }
    }
    const long rss_end = rss_kib();

    CHECK(cancelled[0] > 0);
    CHECK(queued[1] > cancelled[1]);
    // a leak per cycle of even a few hundred bytes would show over the cycles after warm-up
    CHECK(rss_warm == 0 || rss_end - rss_warm < 4096);
    llama_mtp_session_free(sessions[0]);
    llama_mtp_session_free(sessions[1]);
    llama_model_free(drafter);
    llama_model_free(target);
    printf(
        "async_stress: ok (%d cycles; guessing all accepted: %lld of %lld queued drafts cancelled; predicting: "
        "%lld of %lld kept; RSS %ld -> %ld KiB)\n",
        done, (long long)cancelled[0], (long long)queued[0], (long long)(queued[1] - cancelled[1]),
        (long long)queued[1], rss_warm, rss_end);
    return 0;
}
