// Bounded k-selection shared by every kernel path (the "result handler" of FAISS).
//
// A reservoir of capacity 2k: candidates below the current threshold are appended; when
// the buffer fills, nth_element keeps the k best and the threshold drops to the k-th
// best score. That costs O(1) amortised per accepted candidate for any k (a sorted buffer
// degrades for large k, a heap pays log k per insert). Ordering is by (score, index), so
// equal scores keep the lower index, which is the documented tie rule.
#pragma once

#include <algorithm>
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

class TopK {
public:
    explicit TopK(std::size_t k) : k_(k) { items_.reserve(2 * k); }

    // Scores not below the threshold cannot enter the k best. Each reservoir sees indices
    // in increasing order, so rejecting an equal score keeps the lower index.
    float threshold() const { return threshold_; }

    void push(float score, std::int64_t index) {
        items_.push_back({score, index});
        if (items_.size() == 2 * k_) shrink_to_k();
    }

    // Moves the k best of this reservoir's candidates into `out` (unordered).
    void collect(std::vector<Candidate>& out) {
        if (items_.size() > k_) shrink_to_k();
        out.insert(out.end(), items_.begin(), items_.end());
    }

private:
    void shrink_to_k() {
        std::nth_element(items_.begin(), items_.begin() + (k_ - 1), items_.end(), better);
        items_.resize(k_);
        threshold_ = items_[k_ - 1].score;  // nth_element put the k-th best at k - 1
    }

    std::size_t k_;
    std::vector<Candidate> items_;
    float threshold_ = std::numeric_limits<float>::infinity();
};

}  // namespace fastretrieve
