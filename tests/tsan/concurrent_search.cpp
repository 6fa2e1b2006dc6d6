// ThreadSanitizer check of the C++ kernels' concurrency, without Python: the thread pool
// (parallel_for, its exception propagation, a second caller finding it busy) and several
// searches running at once from their own threads over one shared database, in every
// regime (few queries, many queries, large k), for float32 and int8 rows. Each concurrent answer must
// equal the answer computed alone. Built and run by tests/run_tsan.sh; any data race
// reported by TSan fails the run (halt_on_error).
#include <atomic>
#include <cstdint>
#include <cstdio>
#include <random>
#include <stdexcept>
#include <thread>
#include <vector>

#include "../../csrc/knn.hpp"
#include "../../csrc/parallel.hpp"

using namespace fastretrieve;

namespace {

int failures = 0;

void check(bool ok, const char* what) {
    if (!ok) {
        std::fprintf(stderr, "FAILED: %s\n", what);
        ++failures;
    }
}

struct Answer {
    std::vector<float> distances;
    std::vector<std::int64_t> indices;
    bool operator==(const Answer& other) const {
        return distances == other.distances && indices == other.indices;
    }
};

Answer search(const KnnRequest& request) {
    Answer answer{std::vector<float>(request.n_queries * request.k),
                  std::vector<std::int64_t>(request.n_queries * request.k)};
    knn_search(request, answer.distances.data(), answer.indices.data());
    return answer;
}

void thread_pool() {
    for (std::size_t threads : {1, 2, 4, 8}) {
        std::vector<std::atomic<int>> hits(1000);
        parallel_for(hits.size(), threads, [&](std::size_t i) { hits[i].fetch_add(1); });
        bool once = true;
        for (auto& hit : hits) once = once && hit.load() == 1;
        check(once, "parallel_for runs every task exactly once");
        bool thrown = false;
        try {
            parallel_for(100, threads, [](std::size_t i) {
                if (i == 37) throw std::runtime_error("task 37");
            });
        } catch (const std::runtime_error&) {
            thrown = true;
        }
        check(thrown, "parallel_for rethrows a task's exception");
    }
    // Callers racing for the pool: each completes its own tasks, on the pool or alone.
    std::vector<std::thread> callers;
    std::atomic<long> total{0};
    for (int c = 0; c < 4; ++c) {
        callers.emplace_back([&] {
            for (int round = 0; round < 20; ++round)
                parallel_for(64, 4, [&](std::size_t i) { total.fetch_add(static_cast<long>(i)); });
        });
    }
    for (auto& caller : callers) caller.join();
    check(total.load() == 4L * 20 * (63 * 64 / 2), "concurrent parallel_for callers");
}

void concurrent_searches() {
    const std::size_t rows = 1200, dim = 37;
    std::mt19937 rng(7);
    std::normal_distribution<float> normal;
    std::vector<float> database(rows * dim), queries(100 * dim);
    for (auto& x : database) x = normal(rng);
    for (auto& x : queries) x = normal(rng);
    std::vector<float> sqnorms(rows);
    row_sqnorms(database.data(), rows, dim, 1, sqnorms.data());
    std::vector<std::int8_t> codes(rows * dim);
    for (std::size_t i = 0; i < codes.size(); ++i) codes[i] = static_cast<std::int8_t>(i * 31 % 256 - 128);
    std::vector<float> low(dim, -1.0f), step(dim, 2.0f / 255.0f), code_norms(rows);
    for (std::size_t r = 0; r < rows; ++r) {
        double sum = 0;
        for (std::size_t t = 0; t < dim; ++t) {
            float v = low[t] + float(codes[r * dim + t] + 128) * step[t];
            sum += double(v) * v;
        }
        code_norms[r] = float(sum);
    }

    std::vector<KnnRequest> requests;
    for (Metric metric : {Metric::L2, Metric::IP, Metric::Cosine}) {
        for (std::size_t n : {1, 5, 100}) {
            for (std::size_t k : {10, 150}) {
                KnnRequest f32{queries.data(), n, database.data(), rows, dim, k, metric, 2,
                               sqnorms.data(), false};
                requests.push_back(f32);
                KnnRequest self = f32;
                self.queries = database.data();
                self.exclude_self = true;
                requests.push_back(self);
                KnnRequest i8 = f32;
                i8.database = codes.data();
                i8.storage = Storage::I8;
                i8.database_sqnorms = code_norms.data();
                i8.quant_low = low.data();
                i8.quant_step = step.data();
                requests.push_back(i8);
            }
        }
    }
    std::vector<Answer> alone;
    for (const auto& request : requests) alone.push_back(search(request));
    std::vector<std::thread> searchers;
    std::atomic<int> mismatches{0};
    for (int t = 0; t < 4; ++t) {
        searchers.emplace_back([&, t] {
            for (std::size_t i = 0; i < requests.size(); ++i) {
                std::size_t r = (i + t * 7) % requests.size();
                if (!(search(requests[r]) == alone[r])) mismatches.fetch_add(1);
            }
        });
    }
    for (auto& searcher : searchers) searcher.join();
    check(mismatches.load() == 0, "concurrent searches give the answers computed alone");
}

}  // namespace

int main() {
    thread_pool();
    concurrent_searches();
    if (failures == 0) std::printf("tsan: thread pool and concurrent searches OK\n");
    return failures == 0 ? 0 : 1;
}
