// Bounded k-selection shared by every kernel path (the "result handler" of FAISS).
//
// A reservoir of capacity 2k: candidates below the current threshold are appended; when
// the buffer fills, nth_element keeps the k best and the threshold drops to the k-th
// best score. That costs O(1) amortised per accepted candidate for any k (a sorted buffer
// degrades for large k, a heap pays log k per insert). Ordering is by (score, index), so
// equal scores keep the lower index, which is the documented tie rule. With a margin (the
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
    const float threshold = std::nextafter(static_cast<float>(static_cast<double>(kth) + margin),
                                           std::numeric_limits<float>::infinity());
    items.erase(std::partition(items.begin() + k, items.end(),
                               [&](const Candidate& c) { return c.score < threshold; }),
                items.end());
    return threshold;
}

class TopK {
public:
    // margin 0: keeps the k best. margin > 0 (for a screen whose scores are off by at most
    // margin / 2, see bf16_screen.hpp): keeps every candidate scoring below the k-th best
    // plus margin, however many that is, so the caller can rescore them all.
    explicit TopK(std::size_t k, float margin = 0.0f) : k_(k), capacity_(2 * k), margin_(margin) {
        items_.reserve(capacity_);
    }

    // Scores not below the threshold cannot enter the k best. Each reservoir sees indices
    // in increasing order, so rejecting an equal score keeps the lower index.
    float threshold() const { return threshold_; }

    std::size_t size() const { return items_.size(); }

    void push(float score, std::int64_t index) {
        items_.push_back({score, index});
        if (items_.size() == capacity_) shrink();
    }

    // Moves this reservoir's candidates into `out` (unordered): the k best, or with a
    // margin every candidate within it.
    void collect(std::vector<Candidate>& out) {
        if (items_.size() > k_) shrink();
        out.insert(out.end(), items_.begin(), items_.end());
    }

private:
    void shrink() {
        threshold_ = keep_within_margin(items_, k_, margin_);
        if (items_.size() > capacity_ / 2) capacity_ *= 2;  // amortised O(1) per push
    }

    std::size_t k_;
    std::size_t capacity_;
    float margin_;
    std::vector<Candidate> items_;
    float threshold_ = std::numeric_limits<float>::infinity();
};

}  // namespace fastretrieve
