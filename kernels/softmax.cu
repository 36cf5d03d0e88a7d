// Softmax, log-softmax and their vector-Jacobian products over the rows of a
// (rows, k) C-contiguous array; `out` may be any of the inputs (in place).
//
//   softmax:               out_c = exp(z_c - m) / s          m = max z, s = sum exp(z - m)
//   log_softmax:           out_c = (z_c - m) - log(s)
//   softmax_backward:      out_c = p_c (g_c - sum_j p_j g_j)
//   log_softmax_backward:  out_c = g_c - exp(logp_c) sum_j g_j
//
// Launch: common/rows.cuh's geometry (the launcher's launch_shape), one
// kernel per call, blocks striding over rows. Elements are computed in the
// compute type (float for float16, bfloat16 and float32; double for float64)
// and rounded once to the storage type; each thread's share of the row sum is
// accumulated in double (products of two floats are exact there) and the
// group combines the shares in a fixed tree, so the bits depend on (rows, k)
// only.
//
// Each thread keeps FL_ROW_TILE elements of each input of a row in registers
// per tile. A row of at most one tile per thread (k <= 4096) is read once and
// written once; a longer row is read once to reduce (softmax: an online
// max/sum) and again to write. A thread writes only the elements it read
// itself, so writing in place needs no barrier beyond the reduction's.
//
// Stability: the max is subtracted before exp, so logits of +-1e30 are fine;
// exp(-inf - m) counts as 0 even while the running max is still -inf. A row
// of only -inf has m = -inf and gives NaN (as PyTorch); a NaN anywhere in a
// softmax row makes its sum, hence the whole row, NaN. The forward pair counts
// the logits at a finite running max (exponential exactly 1) apart from the sum
// of the others, as cross-entropy does: the row's sum is then the exact pair
// hi + lo, and log(hi) + lo / hi keeps the digits of a confident row's log-sum-exp
// (1 + s, s small) that a sum taken whole rounds to an ulp of 1.

#include "common/rows.cuh"

// Two resident blocks per SM: at most 128 registers per thread, which the
// two double tiles of the float64 backward entries fit without spilling.
#define FL_SOFTMAX_MIN_BLOCKS 2

namespace fl {

// A row function: whether it reduces relative to the row max (the forward
// pair) or not (the VJPs), each element's term of the row sum, and the result
// of an element given the row's max m and sum s.
// The row's sum comes as an ExpSum (lo 0 for the VJPs).
template <typename C> struct Softmax {
    static const bool shifted = true;
    __device__ __forceinline__ static double term(C z, C, C m) {
        return z == -infinity<C>() ? 0.0 : widen(fl_exp(z - m));
    }
    struct Row {
        C max, inv_sum;
        __device__ __forceinline__ Row(C m, const ExpSum& s)
            : max(m), inv_sum(narrow<C>(1.0 / s.hi)) {}
        __device__ __forceinline__ C operator()(C z, C) const { return fl_exp(z - max) * inv_sum; }
    };
};

template <typename C> struct LogSoftmax {
    static const bool shifted = true;
    __device__ __forceinline__ static double term(C z, C y, C m) {
        return Softmax<C>::term(z, y, m);
    }
    struct Row {
        C max, log_sum;
        __device__ __forceinline__ Row(C m, const ExpSum& s)
            : max(m), log_sum(narrow<C>(s.log_sum())) {}
        __device__ __forceinline__ C operator()(C z, C) const { return (z - max) - log_sum; }
    };
};

// x = p (the softmax), y = g (the gradient with respect to p).
template <typename C> struct SoftmaxBackward {
    static const bool shifted = false;
    __device__ __forceinline__ static double term(C p, C g, C) { return widen(p) * widen(g); }
    struct Row {
        C dot;
        __device__ __forceinline__ Row(C, const ExpSum& s) : dot(narrow<C>(s.hi)) {}
        __device__ __forceinline__ C operator()(C p, C g) const { return p * (g - dot); }
    };
};

// x = logp (the log-softmax), y = g (the gradient with respect to logp). Where
// p > 1/2 (a row's only such class, its max) and the sum is finite, the entry is
// (g - sum) - expm1(logp) sum: a confident row's max has p = 1 - r, r small, and p
// rounded to an ulp of 1 would keep NLL's gradient there (-r) only to 1e-16 absolute.
template <typename C> struct LogSoftmaxBackward {
    static const bool shifted = false;
    __device__ __forceinline__ static double term(C, C g, C) { return widen(g); }
    struct Row {
        C sum;
        bool finite;
        __device__ __forceinline__ Row(C, const ExpSum& s)
            : sum(narrow<C>(s.hi)), finite(fabs(s.hi) < infinity<double>()) {}
        __device__ __forceinline__ C operator()(C logp, C g) const {
            if (finite && logp > (C)-0.6931471805599453) return (g - sum) - fl_expm1(logp) * sum;
            return g - fl_exp(logp) * sum;
        }
    };
};

// out[r, :] = F applied to x[r, :] (and y[r, :] when y is non-null).
template <typename T, template <typename> class F>
__device__ __forceinline__ void softmax_rows(const T* x, const T* y, T* out, i64 rows,
                                             i64 classes, int row_lanes) {
    typedef Convert<T> Cv;
    typedef typename Cv::compute_t C;
    typedef F<C> Fn;
    typedef RowTiles<T> Tiles;
    const int pack = Packet<T>::size;
    __shared__ double scratch[32];

    const RowGroup g = RowGroup::of(row_lanes, scratch);
    const i64 tiles = Tiles::count(classes, g);
    const C neg_inf = -infinity<C>();

    // `first` is the block's first row of the round, so every thread runs the
    // loop equally often: a group past the last row still takes part in its
    // warp's shuffles, reading and writing nothing.
    for (i64 first = (i64)blockIdx.x * g.per_block(); first < rows;
         first += (i64)gridDim.x * g.per_block()) {
        const i64 row = first + g.index();
        const bool active = row < rows;
        const i64 offset = active ? row * classes : 0;
        const T* x_row = x + offset;
        const T* y_row = y ? y + offset : (const T*)0;
        T* out_row = out + offset;
        const bool aligned = aligned16(x_row, y_row, out_row, (const void*)0);

        // Pass 1: this thread's max and sum (relative to that max) over tiles.
        C xs[FL_ROW_TILE];
        C ys[FL_ROW_TILE] = {};
        MaxShare<C> share;  // at_max counts for the forward pair only
        share.start();
        for (i64 tile = 0; tile < tiles; ++tile) {
            if (active) {
                Tiles::load(x_row, classes, tile, g, aligned, neg_inf, xs);
                if (y) Tiles::load(y_row, classes, tile, g, aligned, (C)0, ys);
            }
            if (Fn::shifted) {
                C tile_max = neg_inf;
#pragma unroll
                for (int j = 0; j < FL_ROW_TILE; ++j) {
                    if (active) tile_max = fl_max(tile_max, xs[j]);
                }
                if (tile_max > share.max) share.rebase(tile_max);
            }
#pragma unroll
            for (int i = 0; i < Tiles::per_thread; ++i) {
                const i64 start = Tiles::first(tile, i, g);
                if (!active || start >= classes) continue;  // a packet past the row's end
#pragma unroll
                for (int e = 0; e < pack; ++e) {
                    const int j = i * pack + e;
                    if (start + e >= classes) continue;
                    if (!(Fn::shifted && xs[j] > neg_inf && share.count_at_max(xs[j]))) {
                        share.rest += Fn::term(xs[j], ys[j], share.max);
                    }
                }
            }
        }

        // Combine the group: the common max first, then the sums relative to it.
        C row_max = neg_inf;
        if (Fn::shifted) {
            row_max = narrow<C>(g.max(widen(share.max)));
            if (row_max != share.max) share.rebase(row_max);
        }
        // Reductions in a fixed order.
        const double ones = Fn::shifted ? g.sum(share.at_max) : 0.0;
        const ExpSum total = ExpSum::of(ones, g.sum(share.rest));
        const typename Fn::Row fn(row_max, total);

        // Pass 2: the result, from registers for a one-tile row, else re-read.
        for (i64 tile = 0; tile < tiles && active; ++tile) {
            if (tiles > 1) {
                Tiles::load(x_row, classes, tile, g, aligned, neg_inf, xs);
                if (y) Tiles::load(y_row, classes, tile, g, aligned, (C)0, ys);
            }
#pragma unroll
            for (int i = 0; i < Tiles::per_thread; ++i) {
                const i64 start = Tiles::first(tile, i, g);
                if (start >= classes) continue;  // a packet past the row's end
                T result[Packet<T>::size];
#pragma unroll
                for (int e = 0; e < pack; ++e) {
                    result[e] = Cv::from(fn(xs[i * pack + e], ys[i * pack + e]));
                }
                store_packet(out_row, start, classes, aligned, result);
            }
        }
    }
}

}  // namespace fl

// Forward entries take (x, out), backward ones (x, grad, out).
#define FL_SOFTMAX_ENTRIES(SUFFIX, T)                                                            \
    extern "C" __global__ void __launch_bounds__(FL_ROW_MAX_THREADS, FL_SOFTMAX_MIN_BLOCKS)     \
        fl_softmax_##SUFFIX(const T* z, T* out, long long rows, long long classes,              \
                            int row_lanes) {                                                     \
        fl::softmax_rows<T, fl::Softmax>(z, (const T*)0, out, rows, classes, row_lanes);        \
    }                                                                                            \
    extern "C" __global__ void __launch_bounds__(FL_ROW_MAX_THREADS, FL_SOFTMAX_MIN_BLOCKS)     \
        fl_log_softmax_##SUFFIX(const T* z, T* out, long long rows, long long classes,          \
                                int row_lanes) {                                                 \
        fl::softmax_rows<T, fl::LogSoftmax>(z, (const T*)0, out, rows, classes, row_lanes);     \
    }                                                                                            \
    extern "C" __global__ void __launch_bounds__(FL_ROW_MAX_THREADS, FL_SOFTMAX_MIN_BLOCKS)     \
        fl_softmax_backward_##SUFFIX(const T* p, const T* grad, T* out, long long rows,         \
                                     long long classes, int row_lanes) {                         \
        fl::softmax_rows<T, fl::SoftmaxBackward>(p, grad, out, rows, classes, row_lanes);       \
    }                                                                                            \
    extern "C" __global__ void __launch_bounds__(FL_ROW_MAX_THREADS, FL_SOFTMAX_MIN_BLOCKS)     \
        fl_log_softmax_backward_##SUFFIX(const T* logp, const T* grad, T* out, long long rows,  \
                                         long long classes, int row_lanes) {                     \
        fl::softmax_rows<T, fl::LogSoftmaxBackward>(logp, grad, out, rows, classes, row_lanes); \
    }

FL_SOFTMAX_ENTRIES(float16, fl::half_t)
FL_SOFTMAX_ENTRIES(bfloat16, fl::bfloat16_t)
FL_SOFTMAX_ENTRIES(float32, float)
FL_SOFTMAX_ENTRIES(float64, double)
