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
#include "dispatch.hpp"
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

// Per-row factors of the selection score for rows [start, start + n): squared norms for
// l2, inverse norms (0 for a zero row) for cosine; unused for ip. Computed per block,
// while the rows are about to be read anyway, so a search without cached norms makes a
// single pass over the database. Returns the first row whose norm is not finite, or n.
std::size_t block_factors(const KnnRequest& r, const KernelTable& kernels, std::size_t start,
                          std::size_t n, float* factors) {
    if (r.metric == Metric::IP) return n;
    if (r.database_sqnorms)  // always present for storage other than float32 (knn.hpp)
        std::copy(r.database_sqnorms + start, r.database_sqnorms + start + n, factors);
    else
        kernels.sqnorms(static_cast<const float*>(r.database) + start * r.dim, n, r.dim, factors);
    for (std::size_t j = 0; j < n; ++j) {
        if (!std::isfinite(factors[j])) return j;
        if (r.metric == Metric::Cosine) factors[j] = factors[j] > 0 ? 1.0f / std::sqrt(factors[j]) : 0.0f;
    }
    return n;
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

// Four partial sums per quantity: the compiler may not reassociate float64 adds, and one
// running sum would chain every add, which made rescoring a large k slower than the scan.
// One loop per metric, so that ip and l2 do not also sum the squares cosine needs (the
// bfloat16 screen rescores every candidate it keeps: 11% of a 1000-query search of 20k
// rows went here while the loop summed all three).
template <Metric M>
double exact_distance_for(const float* q, const float* x, std::size_t dim) {
    constexpr std::size_t kLanes = 4;
    double acc[kLanes] = {}, qq[kLanes] = {}, xx[kLanes] = {};
    const auto add = [&](std::size_t lane, std::size_t t) {
        const double a = q[t], b = x[t];
        if constexpr (M == Metric::L2) {
            acc[lane] += (a - b) * (a - b);
        } else {
            acc[lane] += a * b;
            if constexpr (M == Metric::Cosine) {
                qq[lane] += a * a;
                xx[lane] += b * b;
            }
        }
    };
    std::size_t t = 0;
    for (; t + kLanes <= dim; t += kLanes)
        for (std::size_t lane = 0; lane < kLanes; ++lane) add(lane, t + lane);
    for (std::size_t lane = 0; t < dim; ++t, ++lane) add(lane, t);
    const auto total = [](const double* v) { return (v[0] + v[1]) + (v[2] + v[3]); };
    if constexpr (M != Metric::Cosine) {
        return total(acc);
    } else {
        const double q_sq = total(qq), x_sq = total(xx);
        return (q_sq > 0 && x_sq > 0) ? total(acc) / (std::sqrt(q_sq) * std::sqrt(x_sq)) : 0.0;
    }
}

double exact_distance(const float* q, const float* x, std::size_t dim, Metric metric) {
    switch (metric) {
        case Metric::L2: return exact_distance_for<Metric::L2>(q, x, dim);
        case Metric::IP: return exact_distance_for<Metric::IP>(q, x, dim);
        default: return exact_distance_for<Metric::Cosine>(q, x, dim);
    }
}

// Candidates are scattered rows of a database that rarely fits in cache: asking for a row
// this many candidates ahead overlaps its memory latency with the rescoring of others.
constexpr std::size_t kRescorePrefetchDistance = 8;

void prefetch_row(const KnnRequest& r, std::size_t row) {
    const char* bytes = static_cast<const char*>(stored_row(r, row));
    for (std::size_t offset = 0; offset < r.dim * stored_bytes(r.storage); offset += 64)
        __builtin_prefetch(bytes + offset);
}

// The reservoir margin of `query`: the screen's bound where one is in use, else 0 (TopK
// keeps the k best).
float screen_margin(const Bf16Screen* screen, std::size_t query) {
    return screen ? screen->margins[query] : 0.0f;
}

// Scans database rows [row_begin, row_end) for a block of queries, feeding one TopK per
// query. `dots` is scratch of query_count x kRowBlock floats. With a bfloat16 `screen`
// the products come from its kernel; returns false, unfinished, once a query has gathered
// more candidates than the screen allows.
bool scan_rows(const KnnRequest& r, const KernelTable& kernels, const float* queries,
               const float* dot_offsets, const Bf16Screen* screen, std::size_t query_begin,
               std::size_t query_count, std::size_t row_begin, std::size_t row_end,
               std::vector<TopK>& best, std::vector<float>& dots, BadRow& bad) {
    const ScoreRowFn score_row = kernels.score_row[static_cast<int>(r.metric)];
    const DotBlockFn dot_block = kernels.dot_block[static_cast<int>(r.storage)];
    // Whichever pass reads a block first waits for memory. The panel kernel hides that
    // wait (it prefetches each strip while multiplying the one before), so it goes first;
    // otherwise the norms' plain sequential loop goes first, which streams faster than the
    // few-queries tiles (10-20% at 1-4 queries, 1M x 128).
    const bool products_first =
        kernels.panel_min_queries != 0 && query_count >= kernels.panel_min_queries;
    float factors[kRowBlock];
    for (std::size_t start = row_begin; start < row_end; start += kRowBlock) {
        const std::size_t n_rows = std::min(kRowBlock, row_end - start);
        const auto norms_ok = [&] {
            const std::size_t bad_norm = block_factors(r, kernels, start, n_rows, factors);
            if (bad_norm < n_rows) bad.report(start + bad_norm);
            return bad_norm == n_rows;
        };
        if (!products_first && !norms_ok()) return true;
        if (screen)
            kernels.bf16_screen_block(
                screen->query_groups.data() + query_begin * screen->pairs_per_query, query_count,
                static_cast<const std::uint16_t*>(stored_row(r, start)), n_rows, r.dim,
                dots.data(), kRowBlock);
        else
            dot_block(queries + query_begin * r.dim, query_count, stored_row(r, start), n_rows,
                      r.dim, dots.data(), kRowBlock);
        if (products_first && !norms_ok()) return true;
        for (std::size_t i = 0; i < query_count; ++i) {
            float* scores = dots.data() + i * kRowBlock;
            bool non_finite = false;
            const float lowest =
                score_row(scores, dot_offsets[query_begin + i], factors, n_rows, &non_finite);
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
            float threshold = top.threshold();
            for (std::size_t j = 0; j < n_rows; ++j) {
                if (scores[j] < threshold) {
                    top.push(scores[j], static_cast<std::int64_t>(start + j));
                    threshold = top.threshold();
                }
            }
            if (screen && top.size() > screen->candidate_limit) return false;
        }
    }
    return true;
}

// Picks the `keep` best candidates of one query, rescoring them exactly, and writes the
// padded output row. Screened candidates (margin > 0, see TopK) are all rescored if they
// score below the k-th best plus margin: their scores only bound the exact ones. That
// prunes a merge of database chunks to what one reservoir over all of them would keep.
void finish_query(const KnnRequest& r, std::size_t query, std::vector<Candidate>& candidates,
                  std::size_t keep, float margin, float* out_distances,
                  std::int64_t* out_indices) {
    if (candidates.size() > keep) keep_within_margin(candidates, keep, margin);
    const bool ascending = r.metric == Metric::L2;
    std::vector<std::pair<double, std::int64_t>> exact;
    exact.reserve(candidates.size());
    std::vector<float> scratch(r.storage == Storage::F32 ? 0 : r.dim);
    for (std::size_t j = 0; j < candidates.size(); ++j) {
        if (j + kRescorePrefetchDistance < candidates.size())
            prefetch_row(r, candidates[j + kRescorePrefetchDistance].index);
        const std::int64_t index = candidates[j].index;
        const double value = exact_distance(r.queries + query * r.dim,
                                            decoded_row(r, index, scratch.data()), r.dim, r.metric);
        exact.emplace_back(ascending ? value : -value, index);
    }
    std::sort(exact.begin(), exact.end());
    if (exact.size() > keep) exact.resize(keep);
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

}  // namespace

void knn_search(const KnnRequest& r, float* out_distances, std::int64_t* out_indices) {
    const KernelTable& kernels = active_kernels();
    const std::size_t threads = resolve_threads(r.threads);
    const std::size_t candidates_total = r.n_database - (r.exclude_self ? 1 : 0);
    const std::size_t keep = std::min(r.k, candidates_total);
    std::vector<Candidate> none;
    if (keep == 0) {  // a self-join of a single vector: nothing to find, only padding
        for (std::size_t q = 0; q < r.n_queries; ++q)
            finish_query(r, q, none, 1, 0.0f, out_distances, out_indices);
        return;
    }

    // Blocks of equal size, so that no thread gets a whole block while another has a
    // sliver (300 queries: two blocks of 150, not 256 and 44).
    const std::size_t query_blocks = ceil_div(r.n_queries, kQueryBlock);
    const std::size_t block_size = ceil_div(r.n_queries, query_blocks);

    BadRow bad;
    const ScanQueries scan = scan_queries(r);
    const float* queries = scan.values.empty() ? r.queries : scan.values.data();
    // bfloat16 rows on a CPU with bfloat16 arithmetic: from the panel kernel's query count
    // on, where the search is compute-bound, screen in bfloat16 (bf16_screen.hpp).
    Bf16Screen screen_storage;
    const bool use_screen = r.storage == Storage::BF16 && kernels.bf16_screen_block &&
                            r.n_queries >= kernels.panel_min_queries &&
                            make_bf16_screen(r, queries, keep, block_size,
                                             kernels.bf16_screen_group, screen_storage);
    const Bf16Screen* screen = use_screen ? &screen_storage : nullptr;
    const auto reservoirs = [&](std::size_t query_begin, std::size_t query_count,
                                const Bf16Screen* with) {
        std::vector<TopK> tops;
        tops.reserve(query_count);
        for (std::size_t i = 0; i < query_count; ++i)
            tops.emplace_back(keep, screen_margin(with, query_begin + i));
        return tops;
    };

    // Tasks are (query block, database chunk) pairs; a database split into chunks costs a
    // merge per query. Few queries are bandwidth-bound: four chunks per thread keep every
    // thread streaming when one is slowed. From kComputeBoundQueries on, one round of one
    // task per thread: each chunk pays its own reservoir warm-up and merge (50k x 512 ip,
    // 256 queries, 2 threads: 36.6 -> 32.1 ms; bfloat16 screen 24.4 -> 18.7 ms). From two
    // query blocks per thread on, no split at all (1000 queries: 3-5% faster).
    // Chunks per query block for whole rounds of tasks: blocks x chunks a multiple of threads.
    const std::size_t per_round = threads / std::gcd(query_blocks, threads);
    std::size_t chunks = query_blocks >= 2 * threads              ? 1
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

    // best[task][i]: the reservoir of query i of the task's block, kept for the merge
    // only when the database is split.
    std::vector<std::vector<TopK>> best(n_chunks > 1 ? query_blocks * n_chunks : 0);
    parallel_for(query_blocks * n_chunks, threads, [&](std::size_t task) {
        const std::size_t block = task / n_chunks, chunk = task % n_chunks;
        const std::size_t query_begin = block * block_size;
        const std::size_t query_count = std::min(block_size, r.n_queries - query_begin);
        const std::size_t row_begin = chunk * chunk_rows;
        const std::size_t row_end = std::min(r.n_database, row_begin + chunk_rows);
        std::vector<TopK> local = reservoirs(query_begin, query_count, screen);
        std::vector<float> dots(query_count * kRowBlock);
        const Bf16Screen* scanned_with = screen;
        if (!scan_rows(r, kernels, queries, scan.dot_offsets.data(), screen, query_begin,
                       query_count, row_begin, row_end, local, dots, bad)) {
            scanned_with = nullptr;  // the screen was too loose: float32 instead
            local = reservoirs(query_begin, query_count, nullptr);
            scan_rows(r, kernels, queries, scan.dot_offsets.data(), nullptr, query_begin,
                      query_count, row_begin, row_end, local, dots, bad);
        }
        if (n_chunks > 1) {
            best[task] = std::move(local);
            return;
        }
        std::vector<Candidate> candidates;
        for (std::size_t i = 0; i < query_count && !bad.any(); ++i) {
            candidates.clear();
            local[i].collect(candidates);
            finish_query(r, query_begin + i, candidates, keep,
                         screen_margin(scanned_with, query_begin + i), out_distances,
                         out_indices);
        }
    });
    bad.raise_if_any();
    if (n_chunks == 1) return;

    parallel_for(r.n_queries, threads, [&](std::size_t query) {
        const std::size_t block = query / block_size, i = query % block_size;
        std::vector<Candidate> candidates;
        for (std::size_t chunk = 0; chunk < n_chunks; ++chunk)
            best[block * n_chunks + chunk][i].collect(candidates);
        // A chunk that fell back to float32 kept its k best, whose scores are within the
        // screen's bound of the exact ones too: the margin prunes them alike.
        finish_query(r, query, candidates, keep, screen_margin(screen, query), out_distances,
                     out_indices);
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
