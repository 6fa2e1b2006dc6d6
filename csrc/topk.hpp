// Bounded k-selection shared by every kernel path (the "result handler" of FAISS).
//
// A reservoir of capacity 2k: candidates below the current threshold are appended; when
// the buffer fills, nth_element keeps the k best and the threshold drops to the k-th
// best score. That costs O(1) amortised per accepted candidate for any k (a sorted buffer
// degrades for large k, a heap pays log k per insert). Ordering is by (score, index), so
// equal scores keep the lower index, which is the documented tie rule. With a margin (a
// screen whose scores are only known within an error bound: the float32 expanded form, the
// bfloat16 screen) the threshold is the k-th best plus the margin, and the buffer doubles
// whenever more than half of it is within the margin.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <vector>

namespace fastretrieve {

struct Candidate {
    float score;  // smaller is better
    std::int64_t index;
};

inline bool better(const Candidate& a, const Candidate& b) {
    return a.score < b.score || (a.score == b.score && a.index < b.index);
}

// The float just above `value` rounded up: every float below it is <= value.
inline float float_above(double value) {
    const float rounded = static_cast<float>(value);
    const float up = static_cast<double>(rounded) < value
                         ? std::nextafter(rounded, std::numeric_limits<float>::infinity())
                         : rounded;
    return std::nextafter(up, std::numeric_limits<float>::infinity());
}

// Reorders `items` (at least k of them) so that the first k are the k best, and drops
// every later one that does not score below the k-th best plus `margin` (all of them for
// a margin of 0). The margin's threshold is rounded up, so that float rounding drops
// nothing within it. Returns the k-th best score plus margin.
inline float keep_within_margin(std::vector<Candidate>& items, std::size_t k, float margin) {
    std::nth_element(items.begin(), items.begin() + (k - 1), items.end(), better);
    const float kth = items[k - 1].score;  // nth_element put the k-th best at k - 1
    if (margin == 0.0f) {
        items.resize(k);
        return kth;
    }
    const float threshold = float_above(static_cast<double>(kth) + margin);
    items.erase(std::partition(items.begin() + k, items.end(),
                               [&](const Candidate& c) { return c.score < threshold; }),
                items.end());
    return threshold;
}

class TopK {
public:
    // margin 0: keeps the k best. margin > 0 (for screened scores that are off by at most
    // margin / 2, see screen_bound.hpp and bf16_screen.hpp): keeps every candidate scoring
    // below the k-th best plus margin, however many that is, so the caller can rescore
    // them all.
    explicit TopK(std::size_t k, float margin = 0.0f) : k_(k), capacity_(2 * k), margin_(margin) {
        items_.reserve(capacity_);
    }

    // Scores not below the threshold cannot enter the k best. Each reservoir sees indices
    // in increasing order, so rejecting an equal score keeps the lower index.
    float threshold() const { return threshold_; }

    std::size_t size() const { return items_.size(); }

    float margin() const { return margin_; }

    void push(float score, std::int64_t index) {
        items_.push_back({score, index});
        if (items_.size() == capacity_) shrink();
    }

    // A screen whose error bound grows with the rows seen (the largest row norm so far)
    // widens the margin; rows dropped earlier had smaller errors, so they stay dropped.
    void widen_margin(float margin) {
        if (!(margin > margin_)) return;
        margin_ = margin;
        update_threshold();
    }

    // `base` (double) is a score that the k best already settled exactly reach (their
    // k-th best exact distance, in this reservoir's score frame): a candidate whose score
    // is above base plus the margin is worse than all k of them.
    void bound_by_settled(double base) {
        settled_base_ = base;
        update_threshold();
    }

    // Moves this reservoir's candidates into `out` (unordered): the k best, or with a
    // margin every candidate within it.
    void collect(std::vector<Candidate>& out) {
        if (items_.size() > k_) shrink();
        out.insert(out.end(), items_.begin(), items_.end());
    }

    // Moves every candidate out and empties the reservoir (for settling them exactly).
    void take_all(std::vector<Candidate>& out) {
        out.insert(out.end(), items_.begin(), items_.end());
        items_.clear();
        kth_ = std::numeric_limits<float>::infinity();
        update_threshold();
    }

private:
    void shrink() {
        std::nth_element(items_.begin(), items_.begin() + (k_ - 1), items_.end(), better);
        kth_ = items_[k_ - 1].score;  // nth_element put the k-th best at k - 1
        update_threshold();
        if (margin_ == 0.0f && std::isinf(settled_base_)) {
            items_.resize(k_);
            return;
        }
        const float limit = threshold_;
        items_.erase(std::partition(items_.begin(), items_.end(),
                                    [&](const Candidate& c) { return c.score < limit; }),
                     items_.end());
        // Amortised O(1) per push: at least a quarter of the buffer is free after a shrink.
        // (Candidates within the margin stay, so more than k may remain.)
        if (items_.size() > capacity_ / 4 * 3) capacity_ *= 2;
    }

    void update_threshold() {
        const double base = std::min<double>(kth_, settled_base_);
        // With no margin the k-th best itself is the bound: an equal score has a higher
        // index, so it is rejected (strictly below kth is what enters).
        if (margin_ == 0.0f) {
            threshold_ = static_cast<float>(base);
            return;
        }
        threshold_ = std::isinf(base) ? std::numeric_limits<float>::infinity()
                                      : float_above(base + margin_);
    }

    std::size_t k_;
    std::size_t capacity_;
    float margin_;
    std::vector<Candidate> items_;
    float kth_ = std::numeric_limits<float>::infinity();
    double settled_base_ = std::numeric_limits<double>::infinity();
    float threshold_ = std::numeric_limits<float>::infinity();
};

}  // namespace fastretrieve
