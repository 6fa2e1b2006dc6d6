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
#include "range_search.hpp"

namespace py = pybind11;
using fastretrieve::Metric;
using fastretrieve::Storage;

namespace {

using FloatMatrix = py::array_t<float, py::array::c_style>;  // no forcecast: callers convert

Metric parse_metric(const std::string& name) {
    if (name == "l2") return Metric::L2;
    if (name == "ip") return Metric::IP;
    if (name == "cosine") return Metric::Cosine;
    throw std::invalid_argument("unknown metric '" + name + "'");
}

Storage parse_storage(const std::string& name) {
    if (name == "float32") return Storage::F32;
    if (name == "float16") return Storage::F16;
    if (name == "bfloat16") return Storage::BF16;
    if (name == "int8") return Storage::I8;
    throw std::invalid_argument("unknown storage '" + name + "'");
}

void require_matrix(const py::array& a, const char* name) {
    if (a.ndim() != 2) throw std::invalid_argument(std::string(name) + " must be 2-D");
    if (!py::isinstance<FloatMatrix>(a) || !(a.flags() & py::array::c_style))
        throw std::invalid_argument(std::string(name) + " must be C-contiguous float32");
}

// The database's element type per storage: float16 and bfloat16 travel as their uint16 bit
// patterns, int8 as the quantiser's codes.
void require_database(const py::array& a, Storage storage) {
    if (storage == Storage::F32) return require_matrix(a, "database");
    if (a.ndim() != 2) throw std::invalid_argument("database must be 2-D");
    const bool typed = storage == Storage::I8 ? py::isinstance<py::array_t<std::int8_t>>(a)
                                              : py::isinstance<py::array_t<std::uint16_t>>(a);
    if (!typed || !(a.flags() & py::array::c_style))
        throw std::invalid_argument(storage == Storage::I8
                                        ? "int8 database must be C-contiguous int8 codes"
                                        : "float16/bfloat16 database must be C-contiguous uint16");
}

const float* float_vector(const std::optional<py::array>& a, std::size_t length, const char* name) {
    if (!a) return nullptr;
    if (a->ndim() != 1 || static_cast<std::size_t>(a->shape(0)) != length ||
        !py::isinstance<py::array_t<float>>(*a) || !(a->flags() & py::array::c_style))
        throw std::invalid_argument(std::string(name) + " must be float32 of shape (" +
                                    std::to_string(length) + ",)");
    return static_cast<const float*>(a->data());
}

py::tuple knn(const py::array& queries, const py::array& database, std::size_t k,
              const std::string& metric, std::size_t threads,
              const std::optional<py::array>& database_sqnorms, bool exclude_self,
              const std::string& storage_name, const std::optional<py::array>& quant_low,
              const std::optional<py::array>& quant_step) {
    const Storage storage = parse_storage(storage_name);
    require_matrix(queries, "queries");
    require_database(database, storage);
    if (queries.shape(1) != database.shape(1))
        throw std::invalid_argument("queries and database differ in dimension");
    if (database.shape(0) == 0) throw std::invalid_argument("database is empty");
    if (queries.shape(0) == 0) throw std::invalid_argument("queries is empty");
    if (k == 0) throw std::invalid_argument("k must be >= 1");
    if (exclude_self && (storage != Storage::F32 || queries.shape(0) != database.shape(0)))
        throw std::invalid_argument("exclude_self needs the queries to be the (float32) database");
    const std::size_t n_rows = database.shape(0), dim = queries.shape(1);
    const float* sqnorms = float_vector(database_sqnorms, n_rows, "database_sqnorms");
    if (storage != Storage::F32 && !sqnorms)
        throw std::invalid_argument("database_sqnorms (of the decoded rows) is required for " +
                                    storage_name + " storage");
    const float* low = float_vector(quant_low, dim, "quant_low");
    const float* step = float_vector(quant_step, dim, "quant_step");
    if ((storage == Storage::I8) != (low && step))
        throw std::invalid_argument("quant_low and quant_step go with int8 storage, and only with it");
    const std::size_t n_queries = queries.shape(0);
    py::array_t<float> distances({n_queries, k});
    py::array_t<std::int64_t> indices({n_queries, k});
    fastretrieve::KnnRequest request{
        static_cast<const float*>(queries.data()), n_queries, database.data(), n_rows, dim, k,
        parse_metric(metric), threads, sqnorms, exclude_self, storage, low, step};
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

// A vector handed to NumPy without a copy: the array owns it through a capsule.
template <class T>
py::array_t<T> owned_array(std::vector<T>&& values) {
    auto* owned = new std::vector<T>(std::move(values));
    py::capsule release(owned, [](void* p) { delete static_cast<std::vector<T>*>(p); });
    return py::array_t<T>(owned->size(), owned->data(), release);
}

// (lims, distances, indices), or None when more than max_results neighbours were found.
py::object range_search(const py::array& queries, const py::array& database, double radius,
                        const std::string& metric, std::size_t threads, bool exclude_self,
                        std::size_t max_results) {
    require_matrix(queries, "queries");
    require_matrix(database, "database");
    if (queries.shape(1) != database.shape(1))
        throw std::invalid_argument("queries and database differ in dimension");
    if (exclude_self && queries.shape(0) != database.shape(0))
        throw std::invalid_argument("exclude_self needs the queries to be the database");
    const fastretrieve::RangeRequest request{
        static_cast<const float*>(queries.data()), static_cast<std::size_t>(queries.shape(0)),
        static_cast<const float*>(database.data()), static_cast<std::size_t>(database.shape(0)),
        static_cast<std::size_t>(queries.shape(1)), radius, parse_metric(metric), threads,
        exclude_self, max_results};
    fastretrieve::RangeResult result;
    {
        py::gil_scoped_release release;
        result = fastretrieve::range_search(request);
    }
    if (result.over_limit) return py::none();
    return py::make_tuple(owned_array(std::move(result.lims)),
                          owned_array(std::move(result.distances)),
                          owned_array(std::move(result.indices)));
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
          py::arg("exclude_self") = false, py::arg("storage") = "float32",
          py::arg("quant_low") = py::none(), py::arg("quant_step") = py::none(),
          "Exact k-NN over float32, float16/bfloat16 (uint16 bits) or int8 (codes of the\n"
          "quantiser low + (code + 128) * step) rows: (distances float32 (n, k), indices\n"
          "int64 (n, k)), best first, exact with respect to the decoded rows.");
    m.def("distances", &pairwise, py::arg("a"), py::arg("b"), py::arg("metric"),
          py::arg("threads"), "Full (len(a), len(b)) float32 distance/similarity matrix.");
    m.def("sqnorms", &sqnorms, py::arg("rows"), py::arg("threads"),
          "Squared L2 norm of each row, float32.");
    m.def("range_search", &range_search, py::arg("queries"), py::arg("database"),
          py::arg("radius"), py::arg("metric"), py::arg("threads"), py::arg("exclude_self"),
          py::arg("max_results"),
          "Exact range search over float32 rows: (lims int64 (n + 1,), distances float32,\n"
          "indices int64), best first per query; None beyond max_results neighbours.");
    m.def("cpu_features", &cpu_features, "CPU features detected at run time.");
    m.def("supported_levels", &fastretrieve::supported_levels,
          "SIMD levels this CPU can run, slowest first.");
    m.def("default_simd_level", &fastretrieve::default_level,
          "The level used when FASTRETRIEVE_SIMD names none.");
    m.def("simd_level", [] { return std::string(fastretrieve::active_kernels().name); },
          "The SIMD level in use (honours FASTRETRIEVE_SIMD on first use).");
    m.def("force_simd_level", &fastretrieve::force_level, py::arg("level"),
          "Switch the SIMD level for the whole process (for tests and benchmarks).");
    m.def("default_threads", &fastretrieve::default_thread_count,
          "Cores this process may run on.");
}
