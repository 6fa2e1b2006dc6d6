#include "range_search.hpp"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <limits>
#include <stdexcept>
#include <string>

#include "dispatch.hpp"
#include "exact_distance.hpp"
#include "parallel.hpp"

// How exactness is kept. The float32 kernels of the active SIMD level screen every pair;
// a pair is rescored in double precision (exact_distance.hpp) unless its float32 score is
// farther outside the radius than the float32 error can reach, and kept if the double
// value is within the radius. The bounds, with u = 2^-24:
//   l2:     squared differences summed directly (the table's l2_block), so no
//           cancellation: |s - S| <= gamma(dim + 2) S, whatever the offset of the data;
//   ip:     |s - D| <= gamma(dim) sum_t |q_t x_t| <= gamma(dim) |q| |x|;
//   cosine: unit queries, times the row's inverse norm: the same bound plus the rounding
//           of the normalisation and of the inverse norm, under (1.5 dim + 8) u.
// The screen allows 3 (dim + 4) u of that (relative to S, |q| |x| or 1), plus an absolute
// (dim + 4) 2^-147 for products that underflow. Rows too small for the relative bound to
// hold, or whose float32 norm overflows, are rescored whatever their score.
namespace fastretrieve {
namespace {

constexpr std::size_t kQueryBlock = 256;       // queries sharing one pass over the rows
constexpr std::size_t kRowBlock = 256;         // rows scored at once: 256 x 256 in L2
constexpr std::size_t kMinRowsPerChunk = 4096; // smallest slice of the rows worth a task
constexpr float kTinySqnorm = 0x1p-60f;        // below: rescored whatever the score
constexpr float kMaxFloat = std::numeric_limits<float>::max();
constexpr float kInf = std::numeric_limits<float>::infinity();

std::size_t ceil_div(std::size_t a, std::size_t b) { return (a + b - 1) / b; }

double relative_bound(std::size_t dim) { return 3.0 * double(dim + 4) * 0x1p-24; }
double underflow_bound(std::size_t dim) { return double(dim + 4) * 0x1p-147; }

struct Hit {
    double key;  // smaller is better: the distance, or minus the similarity
    std::int64_t index;
};

bool row_is_finite(const float* row, std::size_t dim) {
    for (std::size_t t = 0; t < dim; ++t)
        if (!std::isfinite(row[t])) return false;
    return true;
}

// One search: the screen's thresholds and the state shared by its tasks.
class RangeScan {
public:
    explicit RangeScan(const RangeRequest& r)
        : r_(r), kernels_(active_kernels()), score_row_(kernels_.score_row) {
        const double relative = relative_bound(r.dim);
        absolute_ = underflow_bound(r.dim);
        // l2: float32 scores above this are certainly outside (infinite: none are).
        const double l2_limit = r.radius * (1.0 + relative) + absolute_;
        l2_limit_ = l2_limit >= kMaxFloat ? kInf : std::nextafter(float(l2_limit), kInf);
        if (r.metric == Metric::L2) return;
        margins_.resize(r.n_queries);
        if (r.metric == Metric::Cosine) {
            unit_queries_.assign(r.queries, r.queries + r.n_queries * r.dim);
            // The inverse norms of kept rows are at most 2^30 (kTinySqnorm).
            absolute_ *= 0x1p30;
        }
        // A product that overflows to -infinity is certainly below any radius above
        // -2^120; below that, every pair is rescored.
        const bool every_pair = r.metric == Metric::IP && !(r.radius > -0x1p120);
        for (std::size_t i = 0; i < r.n_queries; ++i) {
            const float* q = r.queries + i * r.dim;
            double sq = 0;
            for (std::size_t t = 0; t < r.dim; ++t) sq += double(q[t]) * q[t];
            if (r.metric == Metric::IP) {
                margins_[i] = every_pair ? double(kInf) : relative * std::sqrt(sq);
            } else {
                margins_[i] = relative;
                if (sq > 0) {
                    const double inv = 1.0 / std::sqrt(sq);
                    for (std::size_t t = 0; t < r.dim; ++t) unit_queries_[i * r.dim + t] *= float(inv);
                }
            }
        }
    }

    // Scans rows [row_begin, row_end) for queries [query_begin, query_begin + count),
    // appending each query's neighbours to hits[i] in row order.
    void scan(std::size_t query_begin, std::size_t count, std::size_t row_begin,
              std::size_t row_end, std::vector<std::vector<Hit>>& hits) {
        std::vector<float> scores(count * kRowBlock);
        float row_scale[kRowBlock], row_slack[kRowBlock];
        const float* queries =
            (unit_queries_.empty() ? r_.queries : unit_queries_.data()) + query_begin * r_.dim;
        for (std::size_t start = row_begin; start < row_end; start += kRowBlock) {
            if (stop_.load(std::memory_order_relaxed)) return;
            const std::size_t n = std::min(kRowBlock, row_end - start);
            const float* rows = r_.database + start * r_.dim;
            float widest_slack = 0;
            if (r_.metric == Metric::L2) {
                kernels_.l2_block(queries, count, rows, n, r_.dim, scores.data(), kRowBlock);
            } else {
                if (!row_factors(start, n, row_scale, row_slack)) return;
                widest_slack = *std::max_element(row_slack, row_slack + n);
                kernels_.dot_block[static_cast<int>(Storage::F32)](queries, count, rows, n, r_.dim,
                                                                  scores.data(), kRowBlock);
            }
            std::size_t found = 0;
            for (std::size_t i = 0; i < count; ++i) {
                const std::size_t query = query_begin + i;
                float* s = scores.data() + i * kRowBlock;
                const std::size_t before = hits[i].size();
                const bool ok = r_.metric == Metric::L2
                                    ? screen_l2(query, s, start, n, hits[i])
                                    : screen_similarity(query, s, row_scale, row_slack,
                                                        widest_slack, start, n, hits[i]);
                if (!ok) return;
                found += hits[i].size() - before;
            }
            if (found && found_.fetch_add(found) + found > r_.max_results) {
                over_limit_.store(true);
                stop_.store(true);
                return;
            }
        }
    }

    bool over_limit() const { return over_limit_.load(); }

    void raise_if_bad_row() const {
        const std::size_t row = bad_row_.load();
        if (row != kNoRow)
            throw std::invalid_argument("database row " + std::to_string(row) +
                                        " contains NaN or infinity");
    }

private:
    static constexpr std::size_t kNoRow = std::numeric_limits<std::size_t>::max();

    void report_bad_row(std::size_t row) {
        std::size_t seen = bad_row_.load();
        while (row < seen && !bad_row_.compare_exchange_weak(seen, row)) {
        }
        stop_.store(true);
    }

    // ip, cosine: per row, the factor of its score (1, or the inverse norm) and the factor
    // of its error bound (|x| or 1; infinite: always rescored). False on a non-finite row.
    bool row_factors(std::size_t start, std::size_t n, float* scale, float* slack) {
        float sq[kRowBlock];
        kernels_.sqnorms(r_.database + start * r_.dim, n, r_.dim, sq);
        for (std::size_t j = 0; j < n; ++j) {
            const bool usable = std::isfinite(sq[j]) && sq[j] >= kTinySqnorm;
            if (!std::isfinite(sq[j]) && !row_is_finite(r_.database + (start + j) * r_.dim, r_.dim)) {
                report_bad_row(start + j);
                return false;
            }
            const float norm = std::sqrt(sq[j]);
            if (r_.metric == Metric::IP) {
                scale[j] = 1.0f;
                slack[j] = usable ? norm : kInf;
            } else {
                scale[j] = usable ? 1.0f / norm : 0.0f;
                slack[j] = usable ? 1.0f : kInf;
            }
        }
        return true;
    }

    bool excluded(std::size_t query, std::size_t row) const {
        return r_.exclude_self && query == row;
    }

    void keep_if_within(std::size_t query, std::size_t row, std::vector<Hit>& out) const {
        const double exact = exact_distance(r_.queries + query * r_.dim,
                                            r_.database + row * r_.dim, r_.dim, r_.metric);
        if (r_.metric == Metric::L2) {
            if (exact <= r_.radius) out.push_back({exact, static_cast<std::int64_t>(row)});
        } else if (exact >= r_.radius) {
            out.push_back({-exact, static_cast<std::int64_t>(row)});
        }
    }

    bool screen_l2(std::size_t query, float* s, std::size_t start, std::size_t n,
                   std::vector<Hit>& out) {
        // The table's cosine score_row with every factor -1 leaves the distances as they
        // are ((0 - s) * -1 is exact) and returns, vectorised for the active ISA, their
        // minimum and whether any is NaN or infinite.
        bool non_finite = false;
        const float lowest = score_row_[static_cast<int>(Metric::Cosine)](
            s, 0.0f, minus_ones_.data(), n, &non_finite);
        if (!(lowest <= l2_limit_) && !non_finite) return true;  // the common case
        for (std::size_t j = 0; j < n; ++j) {
            const std::size_t row = start + j;
            if (!(s[j] <= kMaxFloat)) {  // NaN or infinity in the row, or an overflow
                if (!row_is_finite(r_.database + row * r_.dim, r_.dim)) {
                    report_bad_row(row);
                    return false;
                }
            } else if (s[j] > l2_limit_) {
                continue;
            }
            if (!excluded(query, row)) keep_if_within(query, row, out);
        }
        return true;
    }

    double margin(std::size_t query, float slack) const {
        // A zero query's products are exactly zero: no margin, even against a wide slack.
        return margins_[query] == 0 ? absolute_ : margins_[query] * slack + absolute_;
    }

    bool screen_similarity(std::size_t query, float* s, const float* scale,
                           const float* slack, float widest_slack, std::size_t start,
                           std::size_t n, std::vector<Hit>& out) {
        // s[j] becomes -(s[j] * scale[j]), smaller-is-better as in k-NN selection; the
        // highest scaled similarity is minus the lowest score.
        bool non_finite = false;
        const float lowest = score_row_[static_cast<int>(Metric::Cosine)](s, 0.0f, scale, n,
                                                                          &non_finite);
        if (!non_finite && -double(lowest) + margin(query, widest_slack) < r_.radius) return true;
        for (std::size_t j = 0; j < n; ++j) {
            const std::size_t row = start + j;
            if (-double(s[j]) + margin(query, slack[j]) < r_.radius) continue;
            if (!excluded(query, row)) keep_if_within(query, row, out);
        }
        return true;
    }

    const RangeRequest& r_;
    const KernelTable& kernels_;
    const ScoreRowFn* score_row_;
    const std::vector<float> minus_ones_ = std::vector<float>(kRowBlock, -1.0f);
    std::vector<float> unit_queries_;  // cosine: the queries scaled to unit norm
    std::vector<double> margins_;      // ip, cosine: per query, the bound's factor
    double absolute_ = 0;
    float l2_limit_ = kInf;
    std::atomic<std::size_t> found_{0};
    std::atomic<std::size_t> bad_row_{kNoRow};
    std::atomic<bool> over_limit_{false};
    std::atomic<bool> stop_{false};
};

}  // namespace

RangeResult range_search(const RangeRequest& r) {
    const std::size_t threads = r.threads ? r.threads : default_thread_count();
    RangeScan scan(r);
    RangeResult result;

    // Tasks are (query block, database chunk) pairs. Unlike k-NN, a split costs no merge
    // of candidates (each chunk's neighbours are final), so few queries get about four
    // tasks per thread, each streaming its own slice of the rows.
    const std::size_t query_blocks = ceil_div(r.n_queries, kQueryBlock);
    const std::size_t block_size = ceil_div(r.n_queries, query_blocks);
    std::size_t chunks = query_blocks >= 2 * threads ? 1 : ceil_div(4 * threads, query_blocks);
    chunks = std::max<std::size_t>(1, std::min(chunks, ceil_div(r.n_database, kMinRowsPerChunk)));
    const std::size_t chunk_rows = ceil_div(ceil_div(r.n_database, chunks), kRowBlock) * kRowBlock;
    const std::size_t n_chunks = ceil_div(r.n_database, chunk_rows);

    // hits[block * n_chunks + chunk][i]: query i of the block, rows of the chunk.
    std::vector<std::vector<std::vector<Hit>>> hits(query_blocks * n_chunks);
    parallel_for(query_blocks * n_chunks, threads, [&](std::size_t task) {
        const std::size_t block = task / n_chunks, chunk = task % n_chunks;
        const std::size_t query_begin = block * block_size;
        const std::size_t count = std::min(block_size, r.n_queries - query_begin);
        const std::size_t row_begin = chunk * chunk_rows;
        hits[task].resize(count);
        scan.scan(query_begin, count, row_begin, std::min(r.n_database, row_begin + chunk_rows),
                  hits[task]);
    });
    scan.raise_if_bad_row();
    if (scan.over_limit()) {
        result.over_limit = true;
        return result;
    }

    const auto chunk_hits = [&](std::size_t query, std::size_t chunk) -> std::vector<Hit>& {
        return hits[(query / block_size) * n_chunks + chunk][query % block_size];
    };
    result.lims.assign(r.n_queries + 1, 0);
    for (std::size_t q = 0; q < r.n_queries; ++q) {
        std::size_t count = 0;
        for (std::size_t c = 0; c < n_chunks; ++c) count += chunk_hits(q, c).size();
        result.lims[q + 1] = result.lims[q] + static_cast<std::int64_t>(count);
    }
    result.distances.resize(result.lims.back());
    result.indices.resize(result.lims.back());
    const bool ascending = r.metric == Metric::L2;
    parallel_for(r.n_queries, threads, [&](std::size_t q) {
        std::vector<Hit> all;
        all.reserve(result.lims[q + 1] - result.lims[q]);
        for (std::size_t c = 0; c < n_chunks; ++c) {
            std::vector<Hit>& part = chunk_hits(q, c);
            all.insert(all.end(), part.begin(), part.end());
            std::vector<Hit>().swap(part);  // release as we go: peak memory stays near one copy
        }
        std::sort(all.begin(), all.end(), [](const Hit& a, const Hit& b) {
            return a.key < b.key || (a.key == b.key && a.index < b.index);
        });
        float* distances = result.distances.data() + result.lims[q];
        std::int64_t* indices = result.indices.data() + result.lims[q];
        for (std::size_t j = 0; j < all.size(); ++j) {
            distances[j] = static_cast<float>(ascending ? all[j].key : -all[j].key);
            indices[j] = all[j].index;
        }
    });
    return result;
}

}  // namespace fastretrieve
