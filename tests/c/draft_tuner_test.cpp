// The adaptive draft length's policy with made-up step times and acceptances: a simulated drafter
// whose every draft is accepted with probability `alpha` at each position (a function of the
// tokens emitted so far, so a regime can change inside a generation), and a step that costs
// verify[k] plus the drafter's chain when k > 0 or a shadow draft runs; the first steps after a
// change of k pay for rebuilding (CUDA: running un-graphed, then capturing) the verify graph, and
// a few steps are slow outliers. Two worlds: a 2-core CPU's proportions, and the H200's measured
// e2b step times (bench/results/2026-12-02-h200-mtp-bench-e2b-2085c15.json).
// Checks what the policy is for: the longest draft when drafts are right and cheap, the target
// alone when they are wrong, following a change of acceptance within a bounded number of steps,
// and never a tokens/s far below the best fixed length over a whole run.
#include "draft_tuner.h"

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <random>

namespace {

struct world {
    const char * name;
    double       verify[4];   // us, a verify pass of k drafts (k = 0: the target alone)
    double       draft;       // us, the drafter's whole chain
    double       rebuild[2];  // us, extra on the first and second step after k changes
    double       outlier;     // share of steps that take 4x as long (another process on the cores)
};

// 2-core CPU proportions: verify grows 10 % a draft, a new shape costs 5 steps
const world kCpu = {"cpu", {1000, 1100, 1200, 1300}, 300, {5000, 0}, 0.05};
// H200, e2b f16: 2.97 ms alone, 1.31x / 1.38x / 1.45x for 1-3 drafts, a 0.75 ms chain; a new
// shape runs one pass un-graphed, then captures a CUDA graph
const world kH200 = {"h200", {2970, 3890, 4100, 4310}, 750, {1500, 2500}, 0.01};

struct run_result {
    double tokens  = 0;
    double seconds = 0;
    int    steps_by_k[LLAMA_MTP_MAX_DRAFT + 1]{};

    double rate() const { return tokens / seconds; }
};

// steps of the tuner (or a fixed k >= 0) until n_tokens are out; alpha(token) gives the acceptance
template <typename Alpha>
run_result simulate(const world & w, int k_max, int fixed_k, int n_tokens, Alpha alpha, unsigned seed = 1,
                    llama_mtp_internal::draft_tuner * tuner = nullptr) {
    std::mt19937                           rng(seed);
    std::uniform_real_distribution<double> u(0.0, 1.0);
    run_result                             r;
    int                                    prev_k       = -1;
    int                                    since_switch = 2;  // warm: the harness warms up first
    while (r.tokens < n_tokens) {
        const int                               pos = static_cast<int>(r.tokens);
        llama_mtp_internal::draft_tuner::choice c{fixed_k, false};
        if (fixed_k < 0) {
            c = tuner->choose(k_max);
        }
        const int k          = c.k;
        int       n_accepted = 0;
        while (n_accepted < k && u(rng) < alpha(pos + n_accepted)) {
            ++n_accepted;
        }
        since_switch  = k != prev_k && prev_k >= 0 ? 0 : since_switch + 1;
        double verify = w.verify[k];
        if (since_switch < 2) {
            verify += w.rebuild[since_switch];
        }
        if (u(rng) < w.outlier) {
            verify *= 4.0;
        }
        const double drafting = k > 0 || c.shadow ? w.draft : 0.0;
        if (tuner != nullptr) {
            tuner->observe(k, n_accepted, static_cast<int64_t>(drafting), static_cast<int64_t>(verify));
            if (c.shadow) {  // the chain against the target's next tokens
                int matched = 0;
                while (matched < k_max && u(rng) < alpha(pos + matched)) {
                    ++matched;
                }
                tuner->observe_shadow(std::min(matched + 1, k_max), matched, static_cast<int64_t>(drafting));
            }
        }
        r.tokens += 1 + n_accepted;
        r.seconds += (verify + drafting) * 1e-6;
        r.steps_by_k[k]++;
        prev_k = k;
    }
    return r;
}

int g_failures = 0;

void expect(bool ok, const char * what, double got, double want) {
    std::printf("%-58s %s (%.3f vs %.3f)\n", what, ok ? "ok" : "FAILED", got, want);
    g_failures += ok ? 0 : 1;
}

template <typename Alpha>
double best_fixed(const world & w, int k_max, int n, Alpha alpha) {
    double best = 0;
    for (int k = 0; k <= k_max; ++k) {
        best = std::max(best, simulate(w, k_max, k, n, alpha).rate());
    }
    return best;
}

void check_world(const world & w) {
    const int k_max = 3;
    const int n     = 4000;
    char      what[96];

    for (double a : {1.0, 0.8, 0.6, 0.3, 0.0}) {
        const auto                      alpha = [a](int) { return a; };
        llama_mtp_internal::draft_tuner tuner(k_max);
        const run_result                got  = simulate(w, k_max, -1, n, alpha, 1, &tuner);
        const double                    best = best_fixed(w, k_max, n, alpha);
        std::snprintf(what, sizeof(what), "%s alpha %.1f: auto / best fixed k", w.name, a);
        // the bounds at the ends (a wrong drafter, a right one); in between, where drafting
        // about breaks even (0.3), trying it now and then costs more, up to 10 %
        const double floor = a == 0.0 || a == 1.0 ? 0.97 : a >= 0.6 ? 0.95 : 0.9;
        expect(got.rate() >= floor * best, what, got.rate() / best, floor);
        const double steps = got.steps_by_k[0] + got.steps_by_k[1] + got.steps_by_k[2] + got.steps_by_k[3];
        if (a == 1.0) {
            std::snprintf(what, sizeof(what), "%s alpha 1.0: share of steps at k = 3", w.name);
            expect(got.steps_by_k[3] >= 0.9 * steps, what, got.steps_by_k[3] / steps, 0.9);
        }
        if (a == 0.0) {
            std::snprintf(what, sizeof(what), "%s alpha 0.0: share of steps at k = 0", w.name);
            expect(got.steps_by_k[0] >= 0.9 * steps, what, got.steps_by_k[0] / steps, 0.9);
        }
    }

    // drifting as the harness's regime is: spans of `span` tokens, greedy (the pair agrees) and
    // hot (acceptance 0.05) in turn; long spans, and the harness's 32-token ones, too short on the
    // CPU for a switch (5 steps' time) to pay itself back: there a fixed k wins, by up to 30 %
    for (int span : {300, 32}) {
        const double floor    = span < 100 ? (w.rebuild[0] + w.rebuild[1] > 2 * w.verify[0] ? 0.7 : 0.97) : 1.0;
        const auto   drifting = [span](int pos) { return (pos / span) % 2 == 0 ? 1.0 : 0.05; };
        llama_mtp_internal::draft_tuner tuner(k_max);
        const run_result                got  = simulate(w, k_max, -1, n, drifting, 2, &tuner);
        const double                    best = best_fixed(w, k_max, n, drifting);
        std::snprintf(what, sizeof(what), "%s drifting, %d-token spans: auto / best fixed k", w.name, span);
        expect(got.rate() >= floor * best, what, got.rate() / best, floor);
    }

    // a drafter that costs more than it can save: the target alone
    {
        world expensive                       = w;
        expensive.draft                       = 3.0 * w.verify[0];
        const auto                      alpha = [](int) { return 0.5; };
        llama_mtp_internal::draft_tuner tuner(k_max);
        const run_result                got   = simulate(expensive, k_max, -1, n, alpha, 3, &tuner);
        const double                    alone = simulate(expensive, k_max, 0, n, alpha).rate();
        std::snprintf(what, sizeof(what), "%s expensive drafter: auto / target alone", w.name);
        expect(got.rate() >= 0.97 * alone, what, got.rate() / alone, 0.97);
    }
}

}  // namespace

int main() {
    check_world(kCpu);
    check_world(kH200);

    // reset forgets: after a run of right drafts, a wrong drafter starts from scratch
    {
        const int                       k_max = 3;
        llama_mtp_internal::draft_tuner tuner(k_max);
        simulate(
            kCpu, k_max, -1, 200, [](int) { return 1.0; }, 4, &tuner);
        tuner.reset();
        const int first = tuner.choose(k_max).k;
        expect(first == 0, "after reset the target alone is timed first", first, 0);
        const int no_room = tuner.choose(0).k;
        expect(no_room == 0, "no room to draft: k = 0", no_room, 0);
    }
    std::printf("%s\n", g_failures == 0 ? "all passed" : "FAILURES");
    return g_failures == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
