#include "dispatch.hpp"

#include <atomic>
#include <cstdlib>
#include <mutex>
#include <stdexcept>

#if defined(__x86_64__) || defined(_M_X64)
#include <cpuid.h>
#define FASTRETRIEVE_X86 1
#endif

namespace fastretrieve {
namespace {

#if defined(FASTRETRIEVE_X86)
struct CpuidRegs {
    unsigned eax = 0, ebx = 0, ecx = 0, edx = 0;
};

CpuidRegs cpuid(unsigned leaf, unsigned subleaf) {
    CpuidRegs r;
    __cpuid_count(leaf, subleaf, r.eax, r.ebx, r.ecx, r.edx);
    return r;
}

// XCR0: which register states the operating system saves on a context switch. A CPU
// flag without the matching OS support would fault on first use.
unsigned long long xgetbv0() {
    unsigned eax = 0, edx = 0;
    __asm__ volatile("xgetbv" : "=a"(eax), "=d"(edx) : "c"(0));
    return (static_cast<unsigned long long>(edx) << 32) | eax;
}

bool bit(unsigned value, int index) { return (value >> index) & 1u; }

CpuFeatures detect() {
    CpuFeatures f;
    const CpuidRegs leaf0 = cpuid(0, 0);
    const unsigned max_leaf = leaf0.eax;
    f.amd = leaf0.ebx == 0x68747541u && leaf0.edx == 0x69746E65u && leaf0.ecx == 0x444D4163u;  // "AuthenticAMD"
    const CpuidRegs leaf1 = cpuid(1, 0);
    const bool osxsave = bit(leaf1.ecx, 27);
    if (!osxsave || max_leaf < 7) return f;
    const unsigned long long xcr0 = xgetbv0();
    const bool os_ymm = (xcr0 & 0x6) == 0x6;           // SSE + AVX state
    const bool os_zmm = os_ymm && (xcr0 & 0xE0) == 0xE0;  // opmask, ZMM_Hi256, Hi16_ZMM
    const bool os_tiles = (xcr0 & 0x60000) == 0x60000;    // XTILECFG + XTILEDATA
    const CpuidRegs leaf7 = cpuid(7, 0);
    const CpuidRegs leaf7_1 = cpuid(7, 1);
    // The avx2 level also widens float16 rows with F16C (leaf 1 ecx bit 29).
    f.avx2 = os_ymm && bit(leaf7.ebx, 5) && bit(leaf1.ecx, 12) && bit(leaf1.ecx, 29);
    f.avx512 = os_zmm && bit(leaf7.ebx, 16) && bit(leaf7.ebx, 17) && bit(leaf7.ebx, 30) &&
               bit(leaf7.ebx, 31);
    f.avx512_vnni = f.avx512 && bit(leaf7.ecx, 11);
    f.avx512_fp16 = f.avx512 && bit(leaf7.edx, 23);
    f.avx512_bf16 = f.avx512 && bit(leaf7_1.eax, 5);
    f.amx = os_tiles && bit(leaf7.edx, 22) && bit(leaf7.edx, 24) && bit(leaf7.edx, 25);
    return f;
}
#else
CpuFeatures detect() {
    CpuFeatures f;
#if defined(__aarch64__)
    f.neon = true;  // mandatory on AArch64
#endif
    return f;
}
#endif

struct Level {
    const char* name;
    bool (*supported)(const CpuFeatures&);
    // Whether a supported level is also worth choosing by default.
    bool (*preferred)(const CpuFeatures&);
    const KernelTable& (*table)();
};

bool always(const CpuFeatures&) { return true; }

const Level kLevels[] = {
    {"scalar", &always, &always, &scalar_kernels},
#if defined(FASTRETRIEVE_X86_KERNELS)
    {"avx2", [](const CpuFeatures& f) { return f.avx2; }, &always, &avx2_kernels},
    {"avx512", [](const CpuFeatures& f) { return f.avx512; }, &always, &avx512_kernels},
    // vdpbf16ps runs at the FMA's instruction rate on AMD Zen 5 (two 512-bit per cycle,
    // measured), so the bfloat16 screen doubles the arithmetic rate there. On an Intel
    // Sapphire Rapids it measured at half the float32 FMA's flop rate (a 1000 x 512
    // bfloat16 search of 200k rows, one thread: 2.60 s screened, 1.40 s in float32), so
    // Intel CPUs keep avx512 unless FASTRETRIEVE_SIMD asks for avx512_bf16.
    {"avx512_bf16", [](const CpuFeatures& f) { return f.avx512_bf16; },
     [](const CpuFeatures& f) { return f.amd; }, &avx512_bf16_kernels},
#endif
};

std::string joined(const std::vector<std::string>& names) {
    std::string out;
    for (const auto& n : names) out += (out.empty() ? "" : ", ") + n;
    return out;
}

const KernelTable* table_for(const std::string& level) {
    for (const Level& l : kLevels) {
        if (level != l.name) continue;
        if (!l.supported(cpu_features()))
            throw std::invalid_argument("SIMD level '" + level +
                                        "' is not supported by this CPU; available: " +
                                        joined(supported_levels()));
        return &l.table();
    }
    throw std::invalid_argument("unknown SIMD level '" + level +
                                "'; available on this CPU: " + joined(supported_levels()));
}

std::atomic<const KernelTable*> g_active{nullptr};
std::mutex g_choose_mutex;

}  // namespace

const CpuFeatures& cpu_features() {
    static const CpuFeatures features = detect();
    return features;
}

std::vector<std::string> supported_levels() {
    std::vector<std::string> names;
    for (const Level& l : kLevels)
        if (l.supported(cpu_features())) names.emplace_back(l.name);
    return names;
}

std::string default_level() {
    std::string chosen;
    for (const Level& l : kLevels)
        if (l.supported(cpu_features()) && l.preferred(cpu_features())) chosen = l.name;
    return chosen;
}

const KernelTable& active_kernels() {
    const KernelTable* table = g_active.load(std::memory_order_acquire);
    if (table) return *table;
    std::lock_guard<std::mutex> lock(g_choose_mutex);
    table = g_active.load(std::memory_order_acquire);
    if (table) return *table;
    const char* forced = std::getenv("FASTRETRIEVE_SIMD");
    if (forced && *forced) {
        table = table_for(forced);
    } else {
        table = table_for(default_level());
    }
    g_active.store(table, std::memory_order_release);
    return *table;
}

void force_level(const std::string& level) {
    std::lock_guard<std::mutex> lock(g_choose_mutex);
    g_active.store(table_for(level), std::memory_order_release);
}

}  // namespace fastretrieve
