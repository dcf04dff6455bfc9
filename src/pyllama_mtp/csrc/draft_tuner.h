// The adaptive draft length's policy (LLAMA_MTP_DRAFT_AUTO), apart from the session so that it can
// be tested with made-up times and acceptances (tests/c/draft_tuner_test.cpp). Not part of the C API.
#pragma once

#include <algorithm>
#include <cstdint>
#include <iterator>

#include "llama_mtp.h"

namespace llama_mtp_internal {

// The median of the last few samples: one slow step (another process on the cores, a page fault)
// must not decide the draft length.
class recent_times {
public:
    void clear() { n_ = 0; }

    void add(float x) {
        samples_[n_ % kSize] = x;
        ++n_;
    }

    int32_t count() const { return n_; }

    float median() const {
        const int32_t n = std::min(n_, kSize);
        float         sorted[kSize];
        std::copy(samples_, samples_ + n, sorted);
        std::sort(sorted, sorted + n);
        return sorted[n / 2];
    }

private:
    static constexpr int32_t kSize = 9;
    float                    samples_[kSize]{};
    int32_t                  n_ = 0;
};

// The adaptive draft length (LLAMA_MTP_DRAFT_AUTO): a step verifies the k drafts that maximise
// expected emitted tokens per second, E(k) / T(k), where
//   E(k) = 1 + sum_{i<=k} prod_{j<=i} p_j   (p_j: acceptance at draft position j, given the ones
//                                            before it were accepted; evidence fades by kDecay a
//                                            step, drafting or not, so a stale estimate gives way)
//   T(k) = verify(k) + (k > 0 ? draft : 0)  (the session's own measured times: medians of recent
//                                            steady steps; lengths not measured are interpolated)
// Changing k changes the verify batch's shape, and the next passes build (or, on CUDA, run
// un-graphed and then capture) their graph again: on a 2-core CPU that cost 6 steps' time. So
// only steady steps are timed, and a switch's own cost (the excess of the kSettle steps after it)
// is measured too and must be paid back within kHorizon steps. While the target runs alone the
// drafter is kept honest by shadow drafts: now and then it drafts without a verify of its drafts
// (no new batch shape), and its chain is scored against the tokens the target emits over the
// next steps, one position a step (observe_shadow), so one shadow draft judges every position.
// Their spacing keeps their cost near kShadowShare of the time. The times of the lengths not in
// use are not refreshed by any of this, so while the target runs alone the longest draft's verify
// time is measured afresh now and then (after kRetimeFirst steps, then ever less often, when
// drafting could pay): one stale slow sample must not keep a good drafter off. A new length must
// also promise kMargin more than the current one, so estimation noise does not switch back and
// forth. The drafter's graph drafts its fixed chain whenever it runs (changing its length would
// rebuild that graph too); only the verify batch shrinks.
class draft_tuner {
public:
    struct choice {
        int32_t k;       // drafts to verify
        bool    shadow;  // k == 0, but draft anyway and score the first draft (observe_shadow)
    };

    explicit draft_tuner(int32_t k_max) : k_max_(k_max) { reset(); }

    void reset() {
        std::fill(std::begin(reached_), std::end(reached_), 0.0f);
        std::fill(std::begin(accepted_), std::end(accepted_), 0.0f);
        for (recent_times & t : verify_us_) {
            t.clear();
        }
        draft_us_.clear();
        switch_us_.clear();
        prev_k_       = -1;
        settle_left_  = 0;
        settle_us_    = 0.0f;
        n_no_shadow_  = 0;
        n_at_zero_    = 0;
        retime_every_ = kRetimeFirst;
        retime_left_  = 0;
    }

    // what a step that may verify at most k_cap drafts does
    choice choose(int32_t k_cap) {
        const int32_t k_max = std::min(k_max_, k_cap);
        if (k_max <= 0) {
            return {0, false};
        }
        // first time the target alone, then the longest draft, over kWarmup steady steps each
        if (verify_us_[0].count() < kWarmup) {
            return {0, false};
        }
        if (verify_us_[k_max_].count() < kWarmup || draft_us_.count() < kWarmup) {
            return {k_max, false};
        }
        if (retime_left_ > 0) {  // k_max timed afresh: its samples' median is then the new ones'
            --retime_left_;
            return {k_max, false};
        }
        const int32_t current   = std::min(std::max(prev_k_, 0), k_max);
        const float   switching = switch_us_.count() > 0 ? switch_us_.median() / kHorizon : 0.0f;
        int32_t       best      = current;
        float         best_rate = kMargin * rate(current, 0.0f);
        for (int32_t k = 0; k <= k_max; ++k) {
            const float r = rate(k, k == current ? 0.0f : switching);
            if (r > best_rate) {
                best      = k;
                best_rate = r;
            }
        }
        if (best > 0) {
            n_no_shadow_ = n_at_zero_ = 0;
            retime_every_             = kRetimeFirst;
            return {best, false};
        }
        // (only when drafting could pay even if verifying k_max drafts cost no more than one token)
        const float optimistic = expected_tokens(k_max_) / (verify_time(0) + draft_us_.median());
        if (++n_at_zero_ >= retime_every_ && optimistic > kMargin * rate(0, 0.0f)) {
            n_at_zero_    = 0;
            retime_every_ = std::min(2 * retime_every_, kRetimeLast);  // each confirmation waits longer
            retime_left_  = kSettle + kWarmup;                         // the switch, then kWarmup steady steps
            return {k_max, false};
        }
        if (++n_no_shadow_ >= shadow_every()) {
            n_no_shadow_ = 0;
            return {0, true};
        }
        return {0, false};
    }

    void observe(int32_t k, int32_t n_accepted, int64_t draft_us, int64_t verify_us) {
        const float t = static_cast<float>(verify_us);
        if (k != prev_k_ && prev_k_ >= 0) {  // a switch: its cost is what the next steps run over
            settle_left_ = kSettle;
            settle_us_   = 0.0f;
        }
        if (settle_left_ > 0) {
            if (verify_us_[k].count() > 0) {
                settle_us_ += std::max(0.0f, t - verify_us_[k].median());
            }
            if (--settle_left_ == 0 && verify_us_[k].count() > 0) {
                switch_us_.add(settle_us_);
            }
        } else if (k == prev_k_) {  // a steady step: its graphs were built and captured before
            verify_us_[k].add(t);
            if (k > 0) {
                draft_us_.add(static_cast<float>(draft_us));
            }
        }
        prev_k_ = k;
        fade(k > 0 ? kDecay : kDecayAlone);
        if (k > 0) {
            judge(k, n_accepted);
        }
    }

    // a shadow draft's chain scored against the target's next tokens: its first n_judged
    // positions were compared, the first n_matched of them matched; draft_us: what drafting cost
    void observe_shadow(int32_t n_judged, int32_t n_matched, int64_t draft_us) {
        draft_us_.add(static_cast<float>(draft_us));
        if (n_judged > 0) {
            judge(n_judged, n_matched);
        }
    }

private:
    static constexpr float   kDecay       = 0.93f;  // acceptance memory: ~14 drafting steps ...
    static constexpr float   kDecayAlone  = 0.97f;  // ... or ~33 steps (~3 shadow drafts) at k = 0
    static constexpr float   kPrior       = 0.5f;   // acceptance before evidence, worth one step
    static constexpr int32_t kWarmup      = 5;      // steady steps timed before the first choice
    static constexpr int32_t kSettle      = 2;      // steps a switch costs (CUDA: un-graphed, then capture)
    static constexpr float   kHorizon     = 64.0f;  // steps a switch must pay itself back in
    static constexpr float   kShadowShare = 0.02f;  // time spent on shadow drafts at k = 0
    static constexpr int32_t kRetimeFirst = 64;     // steps at k = 0 before k_max is timed again ...
    static constexpr int32_t kRetimeLast  = 512;    // ... doubling up to this
    static constexpr float   kMargin      = 1.05f;  // a new length must promise this much more

    void fade(float decay) {
        for (int32_t i = 1; i <= k_max_; ++i) {
            reached_[i] *= decay;
            accepted_[i] *= decay;
        }
    }

    void judge(int32_t k, int32_t n_accepted) {
        // position i was judged only when every draft before it was accepted
        for (int32_t i = 1; i <= std::min(k, n_accepted + 1); ++i) {
            reached_[i] += 1.0f;
            accepted_[i] += i <= n_accepted ? 1.0f : 0.0f;
        }
    }

    // kPrior before any evidence at the first position; further on, the position before's
    // estimate, worth one observation (acceptance falls along a chain, it seldom rises)
    float acceptance(int32_t i) const {
        const float prior = i == 1 ? kPrior : acceptance(i - 1);
        return (accepted_[i] + prior) / (reached_[i] + 1.0f);
    }

    float expected_tokens(int32_t k) const {
        float e     = 1.0f;
        float chain = 1.0f;
        for (int32_t i = 1; i <= k; ++i) {
            chain *= acceptance(i);
            e += chain;
        }
        return e;
    }

    // expected tokens per microsecond at k, with `extra` microseconds a step
    float rate(int32_t k, float extra) const {
        return expected_tokens(k) / (verify_time(k) + (k > 0 ? draft_us_.median() : 0.0f) + extra);
    }

    int32_t shadow_every() const {
        return std::max(1, static_cast<int32_t>(draft_us_.median() / (kShadowShare * verify_time(0))));
    }

    // measured, else linear between the nearest measured lengths below and above (0 and k_max are)
    float verify_time(int32_t k) const {
        if (verify_us_[k].count() > 0) {
            return verify_us_[k].median();
        }
        int32_t lo = k - 1;
        while (verify_us_[lo].count() == 0) {
            --lo;
        }
        int32_t hi = k + 1;
        while (hi <= k_max_ && verify_us_[hi].count() == 0) {
            ++hi;
        }
        if (hi > k_max_) {
            return verify_us_[lo].median();
        }
        const float t = static_cast<float>(k - lo) / static_cast<float>(hi - lo);
        return verify_us_[lo].median() + t * (verify_us_[hi].median() - verify_us_[lo].median());
    }

    int32_t      k_max_;
    float        reached_[LLAMA_MTP_MAX_DRAFT + 1]{};
    float        accepted_[LLAMA_MTP_MAX_DRAFT + 1]{};
    recent_times verify_us_[LLAMA_MTP_MAX_DRAFT + 1];
    recent_times draft_us_;
    recent_times switch_us_;  // a switch's cost: the excess of the kSettle steps after it
    int32_t      prev_k_       = -1;
    int32_t      settle_left_  = 0;     // steps after a switch still counted as its cost
    float        settle_us_    = 0.0f;  // their excess over the steady medians so far
    int32_t      n_no_shadow_  = 0;     // steps at k = 0 since the last shadow draft
    int32_t      n_at_zero_    = 0;     // steps at k = 0 since k_max was last timed
    int32_t      retime_every_ = kRetimeFirst;
    int32_t      retime_left_  = 0;  // steps of a re-timing of k_max still to run
};

}  // namespace llama_mtp_internal
