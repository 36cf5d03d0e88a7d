// The CUDA built-ins that kernels/*.cu use, for a host (g++) build of those
// files. Force-included before each kernel file; the kernel sources are not
// changed (their inline-PTX conversions are interpreted, see ptx_cvt).
//
// Thread and block indices, barriers and warp shuffles are calls into the
// emulator runtime (runtime.cpp), which runs every CUDA thread of a block as
// a fiber. They are out-of-line calls on purpose: the kernel file may be built
// with memory-access instrumentation, and the runtime's own bookkeeping must
// not show up as kernel memory traffic.

#ifndef FL_CUDA_HOST_H
#define FL_CUDA_HOST_H

#include <cmath>
#include <cstdint>
#include <cstring>

// CUDA declares float overloads of the math functions beside the double ones (exp(float)
// is expf); <cmath> declares them in std only, so an unqualified call with float arguments
// would run in double here, more exactly than on the GPU.
using std::ceil;
using std::exp;
using std::expm1;
using std::fabs;
using std::floor;
using std::fma;
using std::fmax;
using std::fmin;
using std::log;
using std::log1p;
using std::pow;
using std::sqrt;

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline __attribute__((always_inline))
#define __launch_bounds__(...)
// Blocks run one after another, so a function-local static is exactly one
// block's shared memory.
#define __shared__ static

struct uint3 {
    unsigned int x, y, z;
};

// A vector type rather than CUDA's struct: a 16-byte packet load is then one
// 16-byte access, as ld.global.v4 is on the GPU, not four 4-byte ones. (The
// kernels only move uint4 as a whole; they never name its members.)
typedef unsigned int uint4 __attribute__((vector_size(16)));

extern "C" {
uint3 fl_emu_thread_idx(void);
uint3 fl_emu_block_idx(void);
uint3 fl_emu_block_dim(void);
uint3 fl_emu_grid_dim(void);
void fl_emu_syncthreads(const char* file, int line);
void fl_emu_syncwarp(unsigned int mask, const char* file, int line);
unsigned long long fl_emu_shfl_xor(unsigned int mask, unsigned long long bits, int lane_mask,
                                   int width, const char* file, int line);
}

#define threadIdx fl_emu_thread_idx()
#define blockIdx fl_emu_block_idx()
#define blockDim fl_emu_block_dim()
#define gridDim fl_emu_grid_dim()
#define __syncthreads() fl_emu_syncthreads(__FILE__, __LINE__)
#define __syncwarp(...) fl_emu_syncwarp(fl_host::warp_mask(__VA_ARGS__), __FILE__, __LINE__)
#define __shfl_xor_sync(mask, value, lane_mask, ...) \
    fl_host::shfl_xor(mask, value, lane_mask, fl_host::shfl_width(__VA_ARGS__), __FILE__, __LINE__)

namespace fl_host {

inline unsigned int warp_mask() { return 0xffffffffu; }
inline unsigned int warp_mask(unsigned int mask) { return mask; }
inline int shfl_width() { return 32; }
inline int shfl_width(int width) { return width; }

template <typename To, typename From>
inline To bit_cast(From from) {
    static_assert(sizeof(To) == sizeof(From), "bit_cast between types of different sizes");
    To to;
    std::memcpy(&to, &from, sizeof(To));
    return to;
}

template <typename T>
inline T shfl_xor(unsigned int mask, T value, int lane_mask, int width, const char* file,
                  int line) {
    static_assert(sizeof(T) <= 8, "shuffles move at most 8 bytes");
    unsigned long long bits = 0;
    std::memcpy(&bits, &value, sizeof(T));
    bits = fl_emu_shfl_xor(mask, bits, lane_mask, width, file, line);
    std::memcpy(&value, &bits, sizeof(T));
    return value;
}

// --- inline PTX: cvt --------------------------------------------------------------------
// The host build rewrites each `asm("cvt...." : "=x"(out) : "y"(in));` of the
// kernel sources into a call of ptx_cvt below with the instruction's text
// (build.py), so the emulator runs the PTX that the GPU runs: a change of
// rounding mode, of .ftz or of a type in that text changes the emulated
// result too. Any other inline PTX fails the host build.

enum class PtxType { none, f16, bf16, f32, f64 };
enum class PtxRound { none, rn, rz, rm, rp };

struct PtxCvt {
    PtxType dst = PtxType::none;
    PtxType src = PtxType::none;
    PtxRound round = PtxRound::none;
    bool ftz = false;
    bool sat = false;
    bool valid = false;
};

constexpr bool ptx_word(const char* text, int begin, int end, const char* word) {
    int i = 0;
    for (; word[i] != 0; ++i) {
        if (begin + i >= end || text[begin + i] != word[i]) return false;
    }
    return begin + i == end;
}

constexpr PtxType ptx_type(const char* text, int begin, int end) {
    return ptx_word(text, begin, end, "f16")    ? PtxType::f16
           : ptx_word(text, begin, end, "bf16") ? PtxType::bf16
           : ptx_word(text, begin, end, "f32")  ? PtxType::f32
           : ptx_word(text, begin, end, "f64")  ? PtxType::f64
                                                : PtxType::none;
}

// Parses "cvt[.rnd][.ftz][.sat].dtype.stype %0, %1;" (whitespace first).
constexpr PtxCvt parse_cvt(const char* text) {
    PtxCvt cvt;
    int i = 0;
    while (text[i] == ' ' || text[i] == '\t') ++i;
    if (!(text[i] == 'c' && text[i + 1] == 'v' && text[i + 2] == 't' && text[i + 3] == '.')) {
        return cvt;
    }
    i += 3;
    PtxType types[2] = {PtxType::none, PtxType::none};
    int type_count = 0;
    while (text[i] == '.') {
        const int begin = ++i;
        while (text[i] != '.' && text[i] != ' ' && text[i] != '\t' && text[i] != 0) ++i;
        const PtxType type = ptx_type(text, begin, i);
        if (type != PtxType::none) {
            if (type_count == 2) return cvt;
            types[type_count++] = type;
        } else if (ptx_word(text, begin, i, "rn")) {
            cvt.round = PtxRound::rn;
        } else if (ptx_word(text, begin, i, "rz")) {
            cvt.round = PtxRound::rz;
        } else if (ptx_word(text, begin, i, "rm")) {
            cvt.round = PtxRound::rm;
        } else if (ptx_word(text, begin, i, "rp")) {
            cvt.round = PtxRound::rp;
        } else if (ptx_word(text, begin, i, "ftz")) {
            cvt.ftz = true;
        } else if (ptx_word(text, begin, i, "sat")) {
            cvt.sat = true;
        } else {
            return cvt;
        }
    }
    cvt.dst = types[0];
    cvt.src = types[1];
    cvt.valid = type_count == 2;
    return cvt;
}

inline double ptx_source(PtxType type, unsigned long long bits, bool ftz) {
    switch (type) {
        case PtxType::f16: {
            const int exponent = (bits >> 10) & 0x1f;
            const int mantissa = bits & 0x3ff;
            double magnitude = exponent == 0x1f ? (mantissa ? NAN : INFINITY)
                               : exponent == 0  ? std::ldexp((double)mantissa, -24)
                                                : std::ldexp((double)(mantissa | 0x400), exponent - 25);
            return (bits & 0x8000) ? -magnitude : magnitude;
        }
        case PtxType::bf16:
            return (double)bit_cast<float>((unsigned int)(bits << 16));
        case PtxType::f32: {
            const float value = bit_cast<float>((unsigned int)bits);
            if (ftz && std::fpclassify(value) == FP_SUBNORMAL) return std::signbit(value) ? -0.0 : 0.0;
            return (double)value;
        }
        default:
            return bit_cast<double>(bits);
    }
}

// `x` rounded to a binary format of `precision` significant bits, exponent
// field `exponent_bits` wide, in the given mode; returns the format's bits.
inline unsigned long long ptx_round(double x, int precision, int exponent_bits, PtxRound round,
                                    unsigned long long nan_bits) {
    const unsigned long long bits = bit_cast<unsigned long long>(x);
    const bool negative = bits >> 63;
    const unsigned long long sign = (unsigned long long)negative << (precision + exponent_bits - 1);
    const unsigned long long magnitude = bits & 0x7fffffffffffffffull;
    const unsigned long long inf_bits = ((1ull << exponent_bits) - 1) << (precision - 1);
    if (magnitude > 0x7ff0000000000000ull) return nan_bits;
    if (magnitude == 0x7ff0000000000000ull) return sign | inf_bits;
    if (magnitude == 0) return sign;
    const int emin = 2 - (1 << (exponent_bits - 1));  // 1 - bias
    int exponent = (int)(magnitude >> 52) - 1023;
    unsigned long long significand = magnitude & 0xfffffffffffffull;
    if (exponent == -1023) {
        exponent = -1022;
    } else {
        significand |= 1ull << 52;
    }
    const int shift = 53 - precision + (exponent < emin ? emin - exponent : 0);
    unsigned long long kept = shift < 64 ? significand >> shift : 0;
    const unsigned long long rest = shift < 64 ? significand & ((1ull << shift) - 1) : significand;
    const unsigned long long half = shift < 64 ? 1ull << (shift - 1) : ~0ull;
    bool up = false;
    switch (round) {
        case PtxRound::rz: break;
        case PtxRound::rm: up = negative && rest != 0; break;
        case PtxRound::rp: up = !negative && rest != 0; break;
        default: up = rest > half || (rest == half && (kept & 1)); break;
    }
    kept += up;
    unsigned long long result =
        exponent < emin ? kept : ((unsigned long long)(exponent - emin) << (precision - 1)) + kept;
    if (result >= inf_bits) {
        const bool to_infinity = round == PtxRound::rn || round == PtxRound::none ||
                                 (round == PtxRound::rp && !negative) ||
                                 (round == PtxRound::rm && negative);
        result = to_infinity ? inf_bits : inf_bits - 1;
    }
    return sign | result;
}

template <typename Out, typename In>
inline Out ptx_cvt(const PtxCvt& cvt, In in) {
    static_assert(sizeof(Out) <= 8 && sizeof(In) <= 8, "cvt operands are at most 64 bits");
    unsigned long long source_bits = 0;
    std::memcpy(&source_bits, &in, sizeof(In));
    double x = ptx_source(cvt.src, source_bits, cvt.ftz);
    if (cvt.sat) x = x != x ? 0.0 : std::fmin(std::fmax(x, 0.0), 1.0);
    unsigned long long result = 0;
    switch (cvt.dst) {
        case PtxType::f16: result = ptx_round(x, 11, 5, cvt.round, 0x7fff); break;
        case PtxType::bf16: result = ptx_round(x, 8, 8, cvt.round, 0x7fff); break;
        case PtxType::f32: {
            result = ptx_round(x, 24, 8, cvt.round, 0x7fffffff);
            const bool subnormal = (result & 0x7f800000) == 0 && (result & 0x7fffff) != 0;
            if (cvt.ftz && subnormal) result &= 0x80000000;  // a sign-preserving zero
            break;
        }
        default: result = bit_cast<unsigned long long>(x); break;
    }
    Out out;
    std::memcpy(&out, &result, sizeof(Out));
    return out;
}

}  // namespace fl_host

// --- CUDA math and bit intrinsics ------------------------------------------------------

inline float __int_as_float(int x) { return fl_host::bit_cast<float>(x); }
inline int __float_as_int(float x) { return fl_host::bit_cast<int>(x); }
inline float __uint_as_float(unsigned int x) { return fl_host::bit_cast<float>(x); }
inline unsigned int __float_as_uint(float x) { return fl_host::bit_cast<unsigned int>(x); }
inline double __longlong_as_double(long long x) { return fl_host::bit_cast<double>(x); }
inline long long __double_as_longlong(double x) { return fl_host::bit_cast<long long>(x); }
// The host build has FMA contraction off, so a product or a sum is always
// rounded on its own, as these intrinsics promise.
inline double __dmul_rn(double a, double b) { return a * b; }
inline double __dadd_rn(double a, double b) { return a + b; }
inline float __fmul_rn(float a, float b) { return a * b; }
inline float __fadd_rn(float a, float b) { return a + b; }

#endif  // FL_CUDA_HOST_H
