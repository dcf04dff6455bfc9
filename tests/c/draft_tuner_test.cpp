// The adaptive draft length's policy with made-up step times and acceptances: a simulated drafter
// whose every draft is accepted with probability `alpha` at each position, and a step that costs
// verify(k) = base * (1 + slope * k) plus `draft` when k > 0, with occasional slow outliers.
// Checks what the policy is for: the longest draft when drafts are right and cheap, the target
// alone when they are wrong, following a change of acceptance within a bounded number of steps,
// and never a tokens/s far below the best fixed length over a whole run.
#include "draft_tuner.h"

#include <cstdio>
#include <cstdlib>
#include <random>

namespace {

struct world {
    double base  = 1000.0;  // us, the target alone
    double slope = 0.1;     // extra verify cost per drafted token, relative
    double draft = 300.0;   // us, the drafter's whole chain
};

struct run_result {
    double tokens  = 0;
    double seconds = 0;
    int    steps_by_k[LLAMA_MTP_MAX_DRAFT + 1]{};

    double rate() const { return tokens / seconds; }
};

// n steps of the tuner (or a fixed k >= 0) in the world; alpha(step) gives the acceptance
template <typename Alpha>
run_result simulate(const world & w, int k_max, int fixed_k, int n, Alpha alpha, unsigned seed = 1,
                    llama_mtp_internal::draft_tuner * tuner = nullptr) {
    std::mt19937                           rng(seed);
    std::uniform_real_distribution<double> u(0.0, 1.0);
    run_result                             r;
    int                                    prev_k = -1;
    for (int step = 0; step < n; ++step) {
        llama_mtp_internal::draft_tuner::choice c{fixed_k, false};
        if (fixed_k < 0) {
            c = tuner->choose(k_max);
        }
        const int k          = c.k;
        int       n_accepted = 0;
        while (n_accepted < k && u(rng) < alpha(step)) {
            ++n_accepted;
        }
        double verify = w.base * (1.0 + w.slope * k);
        if (k != prev_k) {
            verify += 5.0 * w.base;  // a new batch shape builds its graph
        }
        if (u(rng) < 0.05) {
            verify *= 4.0;  // another process took the core
        }
        const double drafting = k > 0 || c.shadow ? w.draft : 0.0;
        if (tuner != nullptr) {
            tuner->observe(k, n_accepted, static_cast<int64_t>(drafting), static_cast<int64_t>(verify));
            if (c.shadow) {
                tuner->observe_shadow(u(rng) < alpha(step), static_cast<int64_t>(drafting));
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

}  // namespace

int main() {
    const world w;
    const int   k_max = 3;
    const int   n     = 2000;

    for (double a : {1.0, 0.8, 0.6, 0.3, 0.0}) {
        const auto                      alpha = [a](int) { return a; };
        llama_mtp_internal::draft_tuner tuner(k_max);
        const run_result                got  = simulate(w, k_max, -1, n, alpha, 1, &tuner);
        const double                    best = best_fixed(w, k_max, n, alpha);
        char                            what[96];
        std::snprintf(what, sizeof(what), "alpha %.1f: auto / best fixed k", a);
        // the bounds at the ends (a wrong drafter, a right one); in between, at most 5 % lost
        const double floor = a == 0.0 || a == 1.0 ? 0.97 : 0.95;
        expect(got.rate() >= floor * best, what, got.rate() / best, floor);
        if (a == 1.0) {
            expect(got.steps_by_k[3] >= 0.9 * n, "alpha 1.0: share of steps at k = 3", got.steps_by_k[3] / double(n),
                   0.9);
        }
        if (a == 0.0) {
            expect(got.steps_by_k[0] >= 0.9 * n, "alpha 0.0: share of steps at k = 0", got.steps_by_k[0] / double(n),
                   0.9);
        }
    }

    // a drifting drafter: right for 300 steps, wrong for 300, right again
    const auto drifting = [](int step) { return (step / 300) % 2 == 0 ? 0.95 : 0.0; };
    {
        llama_mtp_internal::draft_tuner tuner(k_max);
        const run_result                got  = simulate(w, k_max, -1, 1800, drifting, 2, &tuner);
        const double                    best = best_fixed(w, k_max, 1800, drifting);
        expect(got.rate() >= 1.0 * best, "drifting: auto / best fixed k", got.rate() / best, 1.0);
    }

    // a drafter that costs more than it can save: the target alone
    {
        world expensive                       = w;
        expensive.draft                       = 3000.0;
        const auto                      alpha = [](int) { return 0.5; };
        llama_mtp_internal::draft_tuner tuner(k_max);
        const run_result                got   = simulate(expensive, k_max, -1, n, alpha, 3, &tuner);
        const double                    alone = simulate(expensive, k_max, 0, n, alpha).rate();
        expect(got.rate() >= 0.97 * alone, "expensive drafter: auto / target alone", got.rate() / alone, 0.97);
    }

    // reset forgets: after a run of right drafts, a wrong drafter starts from scratch
    {
        llama_mtp_internal::draft_tuner tuner(k_max);
        simulate(
            w, k_max, -1, 200, [](int) { return 1.0; }, 4, &tuner);
        tuner.reset();
        const int first = tuner.choose(k_max).k;
        expect(first == 0, "after reset the target alone is timed first", first, 0);
        const int no_room = tuner.choose(0).k;
        expect(no_room == 0, "no room to draft: k = 0", no_room, 0);
    }
    std::printf("%s\n", g_failures == 0 ? "all passed" : "FAILURES");
    return g_failures == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
