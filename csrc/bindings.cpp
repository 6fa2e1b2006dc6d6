// The only file that knows pybind11: shape checks, output allocation, and the GIL
// released around all work. Argument coercion and user-facing validation live in
// src/fastretrieve/search.py; the checks here guard the C++ against misuse of the
// private module itself.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <optional>
#include <stdexcept>
#include <string>

#include "dispatch.hpp"
#include "knn.hpp"
#include "parallel.hpp"

namespace py = pybind11;
using fastretrieve::Metric;

namespace {

using FloatMatrix = py::array_t<float, py::array::c_style>;  // no forcecast: callers convert

Metric parse_metric(const std::string& name) {
    if (name == "l2") return Metric::L2;
    if (name == "ip") return Metric::IP;
    if (name == "cosine") return Metric::Cosine;
    throw std::invalid_argument("unknown metric '" + name + "'");
}

void require_matrix(const py::array& a, const char* name) {
    if (a.ndim() != 2) throw std::invalid_argument(std::string(name) + " must be 2-D");
    if (!py::isinstance<FloatMatrix>(a) || !(a.flags() & py::array::c_style))
        throw std::invalid_argument(std::string(name) + " must be C-contiguous float32");
}

py::tuple knn(const py::array& queries, const py::array& database, std::size_t k,
              const std::string& metric, std::size_t threads,
              const std::optional<py::array>& database_sqnorms, bool exclude_self) {
    require_matrix(queries, "queries");
    require_matrix(database, "database");
    if (queries.shape(1) != database.shape(1))
        throw std::invalid_argument("queries and database differ in dimension");
    if (database.shape(0) == 0) throw std::invalid_argument("database is empty");
    if (k == 0) throw std::invalid_argument("k must be >= 1");
    if (exclude_self && queries.shape(0) != database.shape(0))
        throw std::invalid_argument("exclude_self needs the queries to be the database");
    const float* sqnorms = nullptr;
    if (database_sqnorms) {
        const py::array& s = *database_sqnorms;
        if (s.ndim() != 1 || s.shape(0) != database.shape(0) || !py::isinstance<py::array_t<float>>(s) ||
            !(s.flags() & py::array::c_style))
            throw std::invalid_argument("database_sqnorms must be float32 of shape (len(database),)");
        sqnorms = static_cast<const float*>(s.data());
    }
    const std::size_t n_queries = queries.shape(0);
    py::array_t<float> distances({n_queries, k});
    py::array_t<std::int64_t> indices({n_queries, k});
    fastretrieve::KnnRequest request{
        static_cast<const float*>(queries.data()), n_queries,
        static_cast<const float*>(database.data()), static_cast<std::size_t>(database.shape(0)),
        static_cast<std::size_t>(queries.shape(1)), k, parse_metric(metric), threads, sqnorms,
        exclude_self};
    float* out_d = distances.mutable_data();
    std::int64_t* out_i = indices.mutable_data();
    {
        py::gil_scoped_release release;
        fastretrieve::knn_search(request, out_d, out_i);
    }
    return py::make_tuple(distances, indices);
}

py::array_t<float> pairwise(const py::array& a, const py::array& b, const std::string& metric,
                            std::size_t threads) {
    require_matrix(a, "a");
    require_matrix(b, "b");
    if (a.shape(1) != b.shape(1)) throw std::invalid_argument("a and b differ in dimension");
    const std::size_t n_a = a.shape(0), n_b = b.shape(0), dim = a.shape(1);
    const Metric m = parse_metric(metric);
    py::array_t<float> out({n_a, n_b});
    float* out_ptr = out.mutable_data();
    const float* a_ptr = static_cast<const float*>(a.data());
    const float* b_ptr = static_cast<const float*>(b.data());
    {
        py::gil_scoped_release release;
        fastretrieve::pairwise_distances(a_ptr, n_a, b_ptr, n_b, dim, m, threads, out_ptr);
    }
    return out;
}

py::array_t<float> sqnorms(const py::array& rows, std::size_t threads) {
    require_matrix(rows, "rows");
    const std::size_t n = rows.shape(0), dim = rows.shape(1);
    py::array_t<float> out(n);
    float* out_ptr = out.mutable_data();
    const float* rows_ptr = static_cast<const float*>(rows.data());
    {
        py::gil_scoped_release release;
        fastretrieve::row_sqnorms(rows_ptr, n, dim, threads, out_ptr);
    }
    return out;
}

py::dict cpu_features() {
    const fastretrieve::CpuFeatures& f = fastretrieve::cpu_features();
    py::dict d;
    d["avx2"] = f.avx2;
    d["avx512"] = f.avx512;
    d["avx512_bf16"] = f.avx512_bf16;
    d["avx512_fp16"] = f.avx512_fp16;
    d["avx512_vnni"] = f.avx512_vnni;
    d["amx"] = f.amx;
    d["neon"] = f.neon;
    return d;
}

}  // namespace

PYBIND11_MODULE(_core, m) {
    m.doc() = "fastretrieve's C++ kernels (private: use the fastretrieve package).";
    m.def("knn", &knn, py::arg("queries"), py::arg("database"), py::arg("k"), py::arg("metric"),
          py::arg("threads"), py::arg("database_sqnorms") = py::none(),
          py::arg("exclude_self") = false,
          "Exact k-NN: (distances float32 (n, k), indices int64 (n, k)), best first.");
    m.def("distances", &pairwise, py::arg("a"), py::arg("b"), py::arg("metric"),
          py::arg("threads"), "Full (len(a), len(b)) float32 distance/similarity matrix.");
    m.def("sqnorms", &sqnorms, py::arg("rows"), py::arg("threads"),
          "Squared L2 norm of each row, float32.");
    m.def("cpu_features", &cpu_features, "CPU features detected at run time.");
    m.def("supported_levels", &fastretrieve::supported_levels,
          "SIMD levels this CPU can run, slowest first.");
    m.def("simd_level", [] { return std::string(fastretrieve::active_kernels().name); },
          "The SIMD level in use (honours FASTRETRIEVE_SIMD on first use).");
    m.def("force_simd_level", &fastretrieve::force_level, py::arg("level"),
          "Switch the SIMD level for the whole process (for tests and benchmarks).");
    m.def("default_threads", &fastretrieve::default_thread_count,
          "Cores this process may run on.");
}
