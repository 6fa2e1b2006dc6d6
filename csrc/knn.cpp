#include "knn.hpp"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <limits>
#include <numeric>
#include <stdexcept>
#include <string>
#include <vector>

#include "bf16_screen.hpp"
#include "screen_bound.hpp"
#include "dispatch.hpp"
#include "exact_distance.hpp"
#include "kernels/decode_scalar.hpp"
#include "parallel.hpp"
#include "topk.hpp"

namespace fastretrieve {
namespace {

// Queries per block: their vectors stay in L2 while database rows stream past. Each
// block re-reads the database from memory and re-packs its panels, so larger blocks mean
// fewer passes; 256 measured 17-26% faster than 64 in the compute-bound shapes.
constexpr std::size_t kQueryBlock = 256;
// Database rows per scored block: kQueryBlock x kRowBlock scores (256 KiB) stay in L2.
constexpr std::size_t kRowBlock = 256;
// Smallest slice of the database worth a task of its own in the few-queries regime.
constexpr std::size_t kMinRowsPerChunk = 4096;
// Fewest database rows per chunk for each neighbour wanted (see knn_search).
constexpr std::size_t kRowsPerChunkPerK = 64;
// From this many queries on, a search is compute-bound (the roofline puts the
// turn near 20 queries on this machine; 64 leaves the bandwidth-bound shapes alone).
constexpr std::size_t kComputeBoundQueries = 64;
// From this many queries on, bfloat16 rows are screened in bfloat16 arithmetic where the
// CPU has it (a panel kernel; 8 was the float32 panels' threshold when it came in).
constexpr std::size_t kBf16ScreenMinQueries = 8;

constexpr float kInf = std::numeric_limits<float>::infinity();

std::size_t resolve_threads(std::size_t threads) {
    return threads ? threads : default_thread_count();
}

std::size_t ceil_div(std::size_t a, std::size_t b) { return (a + b - 1) / b; }

std::size_t stored_bytes(Storage storage) {
    switch (storage) {
        case Storage::F16:
        case Storage::BF16: return 2;
        case Storage::I8: return 1;
        default: return sizeof(float);
    }
}

// The first stored element of database row `row`.
const void* stored_row(const KnnRequest& r, std::size_t row) {
    return static_cast<const char*>(r.database) + row * r.dim * stored_bytes(r.storage);
}

// An int8 code decoded exactly as quantize.Int8Codec does in float32: (code + 128) * step,
// rounded, then + low, rounded. Each step is done in double and rounded to float: the
// product of a 9-bit integer and a float is exact in double, and a double sum of two floats
// rounded to float is the correctly rounded float sum (53 >= 2 * 24 + 2 bits), so this is
// bit-identical to the float32 arithmetic while no compiler can fuse it into an FMA.
float decode_int8(std::int8_t code, float low, float step) {
    const float scaled = static_cast<float>((static_cast<double>(code) + 128.0) * step);
    return static_cast<float>(static_cast<double>(scaled) + low);
}

// Row `row` as float32: a pointer into the database for float32 storage, else the row
// decoded into `scratch` (dim floats).
const float* decoded_row(const KnnRequest& r, std::size_t row, float* scratch) {
    const std::size_t dim = r.dim;
    switch (r.storage) {
        case Storage::F32: return static_cast<const float*>(r.database) + row * dim;
        case Storage::F16: {
            const auto* codes = static_cast<const std::uint16_t*>(stored_row(r, row));
            for (std::size_t t = 0; t < dim; ++t) scratch[t] = float16_to_float(codes[t]);
            break;
        }
        case Storage::BF16: {
            const auto* codes = static_cast<const std::uint16_t*>(stored_row(r, row));
            for (std::size_t t = 0; t < dim; ++t) scratch[t] = bfloat16_to_float(codes[t]);
            break;
        }
        case Storage::I8: {
            const auto* codes = static_cast<const std::int8_t*>(stored_row(r, row));
            for (std::size_t t = 0; t < dim; ++t)
                scratch[t] = decode_int8(codes[t], r.quant_low[t], r.quant_step[t]);
            break;
        }
    }
    return scratch;
}

// The lowest database row found to hold NaN or infinity, across threads.
class BadRow {
public:
    void report(std::size_t row) {
        std::size_t seen = row_.load();
        while (row < seen && !row_.compare_exchange_weak(seen, row)) {
        }
    }
    bool any() const { return row_.load() != kNone; }
    void raise_if_any() const {
        if (any())
            throw std::invalid_argument("database row " + std::to_string(row_.load()) +
                                        " contains NaN or infinity");
    }

private:
    static constexpr std::size_t kNone = std::numeric_limits<std::size_t>::max();
    std::atomic<std::size_t> row_{kNone};
};

void sqnorms_parallel(const KernelTable& kernels, const float* rows, std::size_t n,
                      std::size_t dim, std::size_t threads, float* out) {
    const std::size_t chunk = std::max<std::size_t>(kMinRowsPerChunk, ceil_div(n, 4 * threads));
    parallel_for(ceil_div(n, chunk), threads, [&](std::size_t task) {
        const std::size_t begin = task * chunk;
        kernels.sqnorms(rows + begin * dim, std::min(chunk, n - begin), dim, out + begin);
    });
}

// Checks a block's squared norms and, for cosine, turns them into inverse norms. Returns
// the first row whose norm is not finite, or n.
std::size_t finish_factors(Metric metric, float* factors, std::size_t n) {
    // x - x is NaN exactly when x is NaN or infinite. Eight independent sums, so the
    // check vectorises: a branch per row cost as much as the norms themselves at d = 32.
    constexpr std::size_t kLanes = 8;
    float poison[kLanes] = {};
    std::size_t j = 0;
    for (; j + kLanes <= n; j += kLanes)
        for (std::size_t lane = 0; lane < kLanes; ++lane) poison[lane] += factors[j + lane] - factors[j + lane];
    for (std::size_t lane = 0; j < n; ++j, ++lane) poison[lane % kLanes] += factors[j] - factors[j];
    float any = 0;
    for (float p : poison) any += p;
    if (any != 0)  // NaN: find the first row to blame
        for (std::size_t row = 0; row < n; ++row)
            if (!std::isfinite(factors[row])) return row;
    if (metric == Metric::Cosine)
        for (std::size_t row = 0; row < n; ++row)
            factors[row] = factors[row] > 0 ? 1.0f / std::sqrt(factors[row]) : 0.0f;
    return n;
}

// Per-row factors for rows [start, start + n): squared norms for l2 (the score's) and ip
// (the error bound's, screen_bound.hpp), inverse norms (0 for a zero row) for cosine.
// Computed per block, while the rows are about to be read anyway, so a search without
// cached norms makes a single pass over the database. Returns the first row whose norm is
// not finite, or n.
std::size_t block_factors(const KnnRequest& r, const KernelTable& kernels, std::size_t start,
                          std::size_t n, float* factors) {
    if (r.database_sqnorms)  // always present for storage other than float32 (knn.hpp)
        std::copy(r.database_sqnorms + start, r.database_sqnorms + start + n, factors);
    else
        kernels.sqnorms(static_cast<const float*>(r.database) + start * r.dim, n, r.dim, factors);
    return finish_factors(r.metric, factors, n);
}

// The queries as the kernels take them, and per query the offset score_row adds to each
// of its dot products. Cosine scans unit queries. int8 rows are scanned as their codes c:
// with q'[t] = q[t] * step[t],
//   <q, x> = sum_t q[t] * (low[t] + (c[t] + 128) * step[t])
//          = <q', c> + (sum_t q[t] * low[t] + 128 * sum_t q'[t]),
// the bracket being one float64 sum per query, rounded once. The kernel's float32 <q', c>
// then carries rounding of the same size as a float32 dot product with the decoded row.
struct ScanQueries {
    std::vector<float> values;  // empty: scan r.queries as they are
    std::vector<float> dot_offsets;
};

ScanQueries scan_queries(const KnnRequest& r) {
    ScanQueries scan;
    scan.dot_offsets.assign(r.n_queries, 0.0f);
    const bool unit = r.metric == Metric::Cosine, fold = r.storage == Storage::I8;
    if (!unit && !fold) return scan;
    scan.values.assign(r.queries, r.queries + r.n_queries * r.dim);
    for (std::size_t i = 0; i < r.n_queries; ++i) {
        float* q = scan.values.data() + i * r.dim;
        if (unit) {
            double sq = 0;
            for (std::size_t t = 0; t < r.dim; ++t) sq += double(q[t]) * q[t];
            if (sq > 0) {
                const float inv = static_cast<float>(1.0 / std::sqrt(sq));
                for (std::size_t t = 0; t < r.dim; ++t) q[t] *= inv;
            }
        }
        if (fold) {
            double offset = 0;
            for (std::size_t t = 0; t < r.dim; ++t) {
                offset += double(q[t]) * r.quant_low[t];
                q[t] *= r.quant_step[t];
                offset += 128.0 * q[t];
            }
            scan.dot_offsets[i] = static_cast<float>(offset);
        }
    }
    return scan;
}

// Candidates are scattered rows of a database that rarely fits in cache: asking for a row
// this many candidates ahead overlaps its memory latency with the rescoring of others.
constexpr std::size_t kRescorePrefetchDistance = 8;

void prefetch_row(const KnnRequest& r, std::size_t row) {
    const char* bytes = static_cast<const char*>(stored_row(r, row));
    for (std::size_t offset = 0; offset < r.dim * stored_bytes(r.storage); offset += 64)
        __builtin_prefetch(bytes + offset);
}

// An exactly rescored candidate: (key, index), key = the distance for l2, minus the
// similarity for ip and cosine, so that smaller pairs are better under the tie rule.
using Exact = std::pair<double, std::int64_t>;

double exact_key(const KnnRequest& r, std::size_t query, std::int64_t index, float* scratch) {
    const double value = exact_distance(r.queries + query * r.dim,
                                        decoded_row(r, index, scratch), r.dim, r.metric);
    return r.metric == Metric::L2 ? value : -value;
}

// Keeps the `keep` best of `exact` (in order when `sorted`).
void keep_best_exact(std::vector<Exact>& exact, std::size_t keep, bool sorted) {
    if (exact.size() > keep) {
        std::nth_element(exact.begin(), exact.begin() + (keep - 1), exact.end());
        exact.resize(keep);
    }
    if (sorted) std::sort(exact.begin(), exact.end());
}

// How a task scores its rows. Each mode's scores are only known within an error bound
// (the reservoirs' margins), and every candidate within it is rescored in float64:
//   Bf16Screen: bfloat16 rows against the queries rounded to bfloat16 (bf16_screen.hpp);
//   Float32:    the float32 kernels as they are (for l2 the expanded form);
//   Centred:    rows decoded to float32 minus a centre, the mean of the block's queries
//               (l2: queries centred too; ip: rows only, which shifts every score of a
//               query by the same <q, c>; cosine: no centre). Its bound is small wherever
//               the data sits, and a query that still gathers too many candidates (many
//               near-equal distances, duplicates) settles them exactly in the scan.
// A task starts with the fastest mode that applies and moves to the next when a query's
// candidates outgrow candidate_limit: the bound was too wide for the data.
enum class ScanMode { Bf16Screen, Float32, Centred };

struct BlockScan {
    ScanMode mode;
    const float* queries;              // the block's first query, as the kernels take it
    const float* dot_offsets;          // the block's first offset (int8 folding), or zeros
    std::vector<ErrorBound> bounds;    // per query of the block (float32 modes)
    std::vector<float> centre;         // Centred l2/ip: dim floats
    std::vector<float> own_queries;    // Centred: the block's queries as scanned
    std::vector<float> zero_offsets;   // Centred: rows are decoded, never folded
    std::vector<double> shift;         // Centred: exact key = score + shift, per query
    std::vector<float> rows;           // Centred: kRowBlock x dim decoded, centred rows
};

BlockScan make_block_scan(const KnnRequest& r, ScanMode mode, const float* queries,
                          const float* dot_offsets, std::size_t query_begin,
                          std::size_t query_count) {
    const std::size_t dim = r.dim;
    BlockScan scan{mode, queries + query_begin * dim, dot_offsets + query_begin, {}, {}, {}, {}, {}, {}};
    if (mode == ScanMode::Float32) {
        const bool folded = r.storage == Storage::I8;
        scan.bounds = float32_screen_bounds(r, query_begin, query_count, scan.queries,
                                            folded ? scan.dot_offsets : nullptr, false);
    }
    if (mode != ScanMode::Centred) return scan;

    const float* original = r.queries + query_begin * dim;
    scan.own_queries.assign(original, original + query_count * dim);
    scan.shift.assign(query_count, 0.0);
    const bool centred = r.metric != Metric::Cosine;
    if (centred) {
        std::vector<double> mean(dim, 0.0);
        for (std::size_t i = 0; i < query_count; ++i)
            for (std::size_t t = 0; t < dim; ++t) mean[t] += original[i * dim + t];
        scan.centre.resize(dim);
        for (std::size_t t = 0; t < dim; ++t)
            scan.centre[t] = static_cast<float>(mean[t] / static_cast<double>(query_count));
    }
    for (std::size_t i = 0; i < query_count; ++i) {
        float* q = scan.own_queries.data() + i * dim;
        double sum = 0;
        for (std::size_t t = 0; t < dim; ++t) {
            if (r.metric == Metric::L2) {
                q[t] -= scan.centre[t];
                sum += double(q[t]) * q[t];      // |q'|^2: the distance is score + |q'|^2
            } else if (r.metric == Metric::IP) {
                sum -= double(q[t]) * scan.centre[t];  // -<q, c>: -<q,x> = -<q,x'> - <q,c>
            } else {
                sum += double(q[t]) * q[t];
            }
        }
        if (r.metric == Metric::Cosine) {
            if (sum > 0) {
                const float inv = static_cast<float>(1.0 / std::sqrt(sum));
                for (std::size_t t = 0; t < dim; ++t) q[t] *= inv;
            }
        } else {
            scan.shift[i] = sum;
        }
    }
    scan.queries = scan.own_queries.data();
    scan.zero_offsets.assign(query_count, 0.0f);
    scan.dot_offsets = scan.zero_offsets.data();
    scan.bounds = float32_screen_bounds(r, query_begin, query_count, scan.queries, nullptr, centred);
    scan.rows.resize(kRowBlock * dim);
    return scan;
}

// One reservoir per query of a task's block, with the margin its mode starts from.
std::vector<TopK> make_reservoirs(const BlockScan& scan, const Bf16Screen* screen,
                                  std::size_t query_begin, std::size_t query_count,
                                  std::size_t keep) {
    std::vector<TopK> tops;
    tops.reserve(query_count);
    for (std::size_t i = 0; i < query_count; ++i)
        tops.emplace_back(keep, scan.mode == ScanMode::Bf16Screen
                                    ? screen->margins[query_begin + i]
                                    : scan.bounds[i].margin(0.0));
    return tops;
}

// Centred mode: rows [start, start + n) decoded to float32, minus the centre, into
// scan.rows, their factors (squared norms; cosine: inverse norms) and the block's dot
// products. Returns the first row whose norm is not finite, or n.
std::size_t centred_block(const KnnRequest& r, const KernelTable& kernels, BlockScan& scan,
                          std::size_t query_count, std::size_t start, std::size_t n,
                          float* factors, float* dots) {
    const std::size_t dim = r.dim;
    std::vector<float> scratch(r.storage == Storage::F32 ? 0 : dim);
    for (std::size_t j = 0; j < n; ++j) {
        const float* row = decoded_row(r, start + j, scratch.data());
        float* out = scan.rows.data() + j * dim;
        if (scan.centre.empty())
            std::copy(row, row + dim, out);
        else
            for (std::size_t t = 0; t < dim; ++t) out[t] = row[t] - scan.centre[t];
    }
    kernels.sqnorms(scan.rows.data(), n, dim, factors);
    const std::size_t bad = finish_factors(r.metric, factors, n);
    if (bad < n) return bad;
    kernels.dot_block[static_cast<int>(Storage::F32)](scan.queries, query_count, scan.rows.data(),
                                                       n, dim, dots, kRowBlock);
    return n;
}

// Centred mode, a query with too many candidates: rescores them all exactly into its
// settled k best, and bounds later screened scores by the settled k-th best.
void settle(const KnnRequest& r, std::size_t query, double shift, std::size_t keep, TopK& top,
            std::vector<Exact>& settled) {
    std::vector<Candidate> taken;
    top.take_all(taken);
    std::vector<float> scratch(r.storage == Storage::F32 ? 0 : r.dim);
    for (const Candidate& c : taken) settled.emplace_back(exact_key(r, query, c.index, scratch.data()), c.index);
    keep_best_exact(settled, keep, false);
    if (settled.size() == keep)
        top.bound_by_settled(std::max_element(settled.begin(), settled.end())->first - shift);
}

// Candidates one query may gather before its task's mode is judged too loose for the
// data (see ScanMode).
std::size_t candidate_limit(std::size_t keep) { return 2 * keep + 256; }

// Scans database rows [row_begin, row_end) for a block of queries in `scan`'s mode,
// feeding one TopK per query. `dots` is scratch of query_count x kRowBlock floats. Returns
// false, unfinished, once a query has gathered more than candidate_limit candidates in a
// mode that cannot settle them.
bool scan_rows(const KnnRequest& r, const KernelTable& kernels, BlockScan& scan,
               const Bf16Screen* screen, std::size_t query_begin, std::size_t query_count,
               std::size_t row_begin, std::size_t row_end, std::size_t keep,
               std::vector<TopK>& best, std::vector<std::vector<Exact>>& settled,
               std::vector<float>& dots, BadRow& bad) {
    const ScoreRowFn score_row = kernels.score_row[static_cast<int>(r.metric)];
    const DotBlockFn dot_block = kernels.dot_block[static_cast<int>(r.storage)];
    const std::size_t limit = candidate_limit(keep);
    // Where the norms come from a separate pass (the cached norms of an Index, or the
    // centred scan), whichever pass reads a block first waits for memory. The panel kernel
    // hides that wait (it prefetches each strip while multiplying the one before), so it
    // goes first; otherwise the norms go first.
    const bool products_first = kernels.uses_panels(query_count, r.dim);
    // Float32 rows without cached norms get their norms from the products' own read of
    // each row (reduce tiles or panel packing): one pass over the block instead of two
    // (interleaved against the separate norms pass: 1.05-1.26x, from 10k x 32 at 1 query
    // to 200k x 512 cosine; ip needs them for its error bound alone).
    const bool fused_norms = scan.mode == ScanMode::Float32 && r.storage == Storage::F32 &&
                             !r.database_sqnorms;
    // The error bounds of the float32 modes grow with the largest row norm seen (cosine's
    // do not depend on it).
    const bool bound_by_norms = scan.mode != ScanMode::Bf16Screen && r.metric != Metric::Cosine;
    double largest_norm = 0;
    float factors[kRowBlock];
    for (std::size_t start = row_begin; start < row_end; start += kRowBlock) {
        const std::size_t n_rows = std::min(kRowBlock, row_end - start);
        const auto report = [&](std::size_t first_bad) {
            if (first_bad < n_rows) bad.report(start + first_bad);
            return first_bad == n_rows;
        };
        if (scan.mode == ScanMode::Centred) {
            if (!report(centred_block(r, kernels, scan, query_count, start, n_rows, factors,
                                      dots.data())))
                return true;
        } else if (fused_norms) {
            kernels.dot_norms_block(scan.queries, query_count,
                                    static_cast<const float*>(r.database) + start * r.dim, n_rows,
                                    r.dim, dots.data(), kRowBlock, factors);
            if (!report(finish_factors(r.metric, factors, n_rows))) return true;
        } else {
            if (!products_first && !report(block_factors(r, kernels, start, n_rows, factors)))
                return true;
            if (scan.mode == ScanMode::Bf16Screen)
                kernels.bf16_screen_block(
                    screen->query_groups.data() + query_begin * screen->pairs_per_query,
                    query_count, static_cast<const std::uint16_t*>(stored_row(r, start)), n_rows,
                    r.dim, dots.data(), kRowBlock);
            else
                dot_block(scan.queries, query_count, stored_row(r, start), n_rows, r.dim,
                          dots.data(), kRowBlock);
            if (products_first && !report(block_factors(r, kernels, start, n_rows, factors)))
                return true;
        }
        if (bound_by_norms) {
            const double block_norm = max_row_norm(factors, n_rows, r.dim);
            if (block_norm > largest_norm) {
                largest_norm = block_norm;
                for (std::size_t i = 0; i < query_count; ++i)
                    best[i].widen_margin(scan.bounds[i].margin(largest_norm));
            }
        }
        for (std::size_t i = 0; i < query_count; ++i) {
            float* scores = dots.data() + i * kRowBlock;
            bool non_finite = false;
            const float lowest = score_row(scores, scan.dot_offsets[i], factors, n_rows, &non_finite);
            if (non_finite) {
                for (std::size_t j = 0; j < n_rows; ++j)
                    if (!std::isfinite(scores[j])) {
                        bad.report(start + j);
                        return true;
                    }
            }
            const std::size_t self = query_begin + i;
            if (r.exclude_self && self >= start && self < start + n_rows) scores[self - start] = kInf;
            TopK& top = best[i];
            if (!(lowest < top.threshold())) continue;  // the common case once k are found
            // The threshold only falls while a block is pushed, so the rows below it now
            // are a superset of those that enter: visit just those, in order (10k x 32, a
            // few queries: most blocks have a few, and testing all 256 scores in turn
            // cost more than the products).
            std::uint64_t below[kRowBlock / 64];
            kernels.below_bits(scores, n_rows, top.threshold(), below);
            float threshold = top.threshold();
            for (std::size_t word = 0; word * 64 < n_rows; ++word)
                for (std::uint64_t bits = below[word]; bits != 0; bits &= bits - 1) {
                    const std::size_t j = word * 64 + static_cast<std::size_t>(__builtin_ctzll(bits));
                    if (scores[j] < threshold) {
                        top.push(scores[j], static_cast<std::int64_t>(start + j));
                        threshold = top.threshold();
                    }
                }
            if (top.size() > limit) {
                if (scan.mode != ScanMode::Centred) return false;
                settle(r, query_begin + i, scan.shift[i], keep, top, settled[i]);
            }
        }
    }
    return true;
}

// What a task leaves for the merge of a split database: its mode (which score frame its
// candidates are in), its reservoirs, and the candidates it settled exactly.
struct TaskResult {
    ScanMode mode = ScanMode::Float32;
    std::vector<TopK> tops;
    std::vector<std::vector<Exact>> settled;
};

// Screened candidates of one query in one score frame, with the largest margin of the
// reservoirs they came from.
struct ScreenedGroup {
    std::vector<Candidate> candidates;
    float margin = 0.0f;

    void add(TopK& top) {
        top.collect(candidates);
        margin = std::max(margin, top.margin());
    }
};

// Picks the `keep` best candidates of one query and writes its padded output row. Each
// group's screened candidates are pruned to those scoring below its k-th best plus its
// margin (their scores only bound the exact ones), rescored exactly, and ranked with the
// candidates settled exactly during the scan. The pruning makes a merge of database
// chunks rescore what one reservoir over all of them would keep.
void finish_query(const KnnRequest& r, std::size_t query, ScreenedGroup* groups,
                  std::size_t n_groups, std::vector<Exact>& exact, std::size_t keep,
                  float* out_distances, std::int64_t* out_indices) {
    std::vector<float> scratch(r.storage == Storage::F32 ? 0 : r.dim);
    for (std::size_t g = 0; g < n_groups; ++g) {
        std::vector<Candidate>& candidates = groups[g].candidates;
        if (candidates.size() > keep) keep_within_margin(candidates, keep, groups[g].margin);
        for (std::size_t j = 0; j < candidates.size(); ++j) {
            if (j + kRescorePrefetchDistance < candidates.size())
                prefetch_row(r, candidates[j + kRescorePrefetchDistance].index);
            const std::int64_t index = candidates[j].index;
            exact.emplace_back(exact_key(r, query, index, scratch.data()), index);
        }
    }
    keep_best_exact(exact, keep, true);
    const bool ascending = r.metric == Metric::L2;
    float* distances = out_distances + query * r.k;
    std::int64_t* indices = out_indices + query * r.k;
    for (std::size_t j = 0; j < r.k; ++j) {
        if (j < exact.size()) {
            distances[j] = static_cast<float>(ascending ? exact[j].first : -exact[j].first);
            indices[j] = exact[j].second;
        } else {
            distances[j] = ascending ? kInf : -kInf;
            indices[j] = -1;
        }
    }
}

ScanMode next_mode(ScanMode mode) {
    return mode == ScanMode::Bf16Screen ? ScanMode::Float32 : ScanMode::Centred;
}

}  // namespace

void knn_search(const KnnRequest& r, float* out_distances, std::int64_t* out_indices) {
    const KernelTable& kernels = active_kernels();
    const std::size_t threads = resolve_threads(r.threads);
    const std::size_t candidates_total = r.n_database - (r.exclude_self ? 1 : 0);
    const std::size_t keep = std::min(r.k, candidates_total);
    if (keep == 0) {  // a self-join of a single vector: nothing to find, only padding
        std::vector<Exact> none;
        for (std::size_t q = 0; q < r.n_queries; ++q)
            finish_query(r, q, nullptr, 0, none, 1, out_distances, out_indices);
        return;
    }

    // Blocks of equal size, so that no thread gets a whole block while another has a
    // sliver (300 queries: two blocks of 150, not 256 and 44).
    const std::size_t query_blocks = ceil_div(r.n_queries, kQueryBlock);
    const std::size_t block_size = ceil_div(r.n_queries, query_blocks);

    BadRow bad;
    const ScanQueries scan = scan_queries(r);
    const float* queries = scan.values.empty() ? r.queries : scan.values.data();
    // bfloat16 rows on a CPU with bfloat16 arithmetic: from kBf16ScreenMinQueries on,
    // screen in bfloat16 (bf16_screen.hpp).
    Bf16Screen screen_storage;
    const bool use_screen = r.storage == Storage::BF16 && kernels.bf16_screen_block &&
                            r.n_queries >= kBf16ScreenMinQueries &&
                            make_bf16_screen(r, queries, block_size,
                                             kernels.bf16_screen_group, screen_storage);
    const Bf16Screen* screen = use_screen ? &screen_storage : nullptr;
    const ScanMode first_mode = use_screen ? ScanMode::Bf16Screen : ScanMode::Float32;

    // Tasks are (query block, database chunk) pairs; a database split into chunks costs a
    // merge per query. Few queries are bandwidth-bound: four chunks per thread keep every
    // thread streaming when one is slowed. From kComputeBoundQueries on, one round of one
    // task per thread: each chunk pays its own reservoir warm-up and merge (50k x 512 ip,
    // 256 queries, 2 threads: 36.6 -> 32.1 ms; bfloat16 screen 24.4 -> 18.7 ms). From two
    // query blocks per thread on, no split at all (1000 queries: 3-5% faster).
    // Chunks per query block for whole rounds of tasks: blocks x chunks a multiple of threads.
    // A single thread has nothing to balance: every split would only add reservoir
    // warm-ups and a merge (10k x 32, 8 queries, 1 thread: 3 chunks -> 1).
    const std::size_t per_round = threads / std::gcd(query_blocks, threads);
    std::size_t chunks = query_blocks >= 2 * threads || threads == 1 ? 1
                         : r.n_queries >= kComputeBoundQueries ? per_round
                                                               : 4 * per_round;
    // Each chunk's reservoir accepts about k (2 + ln(rows / k)) candidates, so with a large
    // k more chunks mean more selection work and a larger merge: a chunk gets at least
    // kRowsPerChunkPerK rows per neighbour wanted, and the chunk count is rounded down to
    // whole rounds of one task per thread (100k x 128, 100 queries, k=1000, 2 threads:
    // 8 chunks 66 ms, 3 chunks 52 ms, 2 chunks 36 ms, 1 chunk 54 ms).
    const std::size_t min_chunk_rows = std::max(kMinRowsPerChunk, kRowsPerChunkPerK * keep);
    chunks = std::min(chunks, ceil_div(r.n_database, min_chunk_rows));
    chunks = std::max(per_round, chunks / per_round * per_round);
    chunks = std::max<std::size_t>(1, std::min(chunks, ceil_div(r.n_database, kMinRowsPerChunk)));
    const std::size_t chunk_rows = ceil_div(ceil_div(r.n_database, chunks), kRowBlock) * kRowBlock;
    const std::size_t n_chunks = ceil_div(r.n_database, chunk_rows);

    // Kept for the merge only when the database is split.
    std::vector<TaskResult> results(n_chunks > 1 ? query_blocks * n_chunks : 0);
    parallel_for(query_blocks * n_chunks, threads, [&](std::size_t task) {
        const std::size_t block = task / n_chunks, chunk = task % n_chunks;
        const std::size_t query_begin = block * block_size;
        const std::size_t query_count = std::min(block_size, r.n_queries - query_begin);
        const std::size_t row_begin = chunk * chunk_rows;
        const std::size_t row_end = std::min(r.n_database, row_begin + chunk_rows);
        std::vector<float> dots(query_count * kRowBlock);
        TaskResult result;
        for (result.mode = first_mode;; result.mode = next_mode(result.mode)) {
            BlockScan block_scan = make_block_scan(r, result.mode, queries, scan.dot_offsets.data(),
                                                   query_begin, query_count);
            result.tops = make_reservoirs(block_scan, screen, query_begin, query_count, keep);
            result.settled.assign(query_count, {});
            if (scan_rows(r, kernels, block_scan, screen, query_begin, query_count, row_begin,
                          row_end, keep, result.tops, result.settled, dots, bad))
                break;
        }
        if (n_chunks > 1) {
            results[task] = std::move(result);
            return;
        }
        for (std::size_t i = 0; i < query_count && !bad.any(); ++i) {
            ScreenedGroup group;
            group.add(result.tops[i]);
            finish_query(r, query_begin + i, &group, 1, result.settled[i], keep, out_distances,
                         out_indices);
        }
    });
    bad.raise_if_any();
    if (n_chunks == 1) return;

    parallel_for(r.n_queries, threads, [&](std::size_t query) {
        const std::size_t block = query / block_size, i = query % block_size;
        // Scores of the Bf16Screen and Float32 modes estimate the same quantity; Centred
        // scores are shifted per query by the centre, so they are pruned on their own.
        ScreenedGroup groups[2];
        std::vector<Exact> exact;
        for (std::size_t chunk = 0; chunk < n_chunks; ++chunk) {
            TaskResult& result = results[block * n_chunks + chunk];
            groups[result.mode == ScanMode::Centred ? 1 : 0].add(result.tops[i]);
            exact.insert(exact.end(), result.settled[i].begin(), result.settled[i].end());
        }
        finish_query(r, query, groups, 2, exact, keep, out_distances, out_indices);
    });
}

void row_sqnorms(const float* rows, std::size_t n_rows, std::size_t dim, std::size_t threads,
                 float* out) {
    sqnorms_parallel(active_kernels(), rows, n_rows, dim, resolve_threads(threads), out);
}

void pairwise_distances(const float* a, std::size_t n_a, const float* b, std::size_t n_b,
                        std::size_t dim, Metric metric, std::size_t threads, float* out) {
    const KernelTable& kernels = active_kernels();
    threads = resolve_threads(threads);
    const DotBlockFn dot_fn = kernels.dot_block[static_cast<int>(Storage::F32)];
    const std::size_t a_blocks = ceil_div(n_a, kQueryBlock), b_blocks = ceil_div(n_b, kRowBlock);
    parallel_for(a_blocks * b_blocks, threads, [&](std::size_t task) {
        const std::size_t a0 = (task / b_blocks) * kQueryBlock, b0 = (task % b_blocks) * kRowBlock;
        const std::size_t na = std::min(kQueryBlock, n_a - a0), nb = std::min(kRowBlock, n_b - b0);
        if (metric == Metric::L2)
            kernels.l2_block(a + a0 * dim, na, b + b0 * dim, nb, dim, out + a0 * n_b + b0, n_b);
        else
            dot_fn(a + a0 * dim, na, b + b0 * dim, nb, dim, out + a0 * n_b + b0, n_b);
    });
    if (metric != Metric::Cosine) return;
    std::vector<float> inv_a(n_a), inv_b(n_b);
    row_sqnorms(a, n_a, dim, threads, inv_a.data());
    row_sqnorms(b, n_b, dim, threads, inv_b.data());
    for (float& v : inv_a) v = v > 0 ? 1.0f / std::sqrt(v) : 0.0f;
    for (float& v : inv_b) v = v > 0 ? 1.0f / std::sqrt(v) : 0.0f;
    parallel_for(n_a, threads, [&](std::size_t i) {
        float* row = out + i * n_b;
        for (std::size_t j = 0; j < n_b; ++j)
            row[j] = std::clamp(row[j] * inv_a[i] * inv_b[j], -1.0f, 1.0f);
    });
}

}  // namespace fastretrieve
