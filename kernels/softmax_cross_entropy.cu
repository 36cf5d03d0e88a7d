// Softmax cross-entropy with integer labels or probability targets, label
// smoothing and class weights: per-row loss, the gradient (optionally in place
// over the logits) and one float64 partial sum of the row losses per block.
//
// Row i, k classes, target distribution q = (1 - eps) t + eps / k, weights w:
//   L_i  = -sum_c q_c w_c log_softmax(z)_c          (0 * log 0 = 0)
//        =  S log(s) + sum_c q_c w_c (m - z_c)       S = sum_c q_c w_c,
//                                                    m = max z, s = sum exp(z - m)
//   dL/dz_c = softmax(z)_c S - q_c w_c
// The second form adds only non-negative terms (for non-negative weights), so
// logits of +-1e30 cause no cancellation; a logit of -inf with q_c w_c > 0
// gives L = +inf, and with q_c w_c = 0 contributes nothing.
//
// Launch (see fastloss/backends/cuda/softmax_cross_entropy.py):
// - k <= 32 * FL_ROW_TILE: rows share warps, a group of row_lanes lanes (a
//   power of two up to 32, the fewest whose tiles of FL_ROW_TILE logits hold
//   the row) per row, FL_ROW_GROUP_BLOCK threads per block;
// - larger k: one block per row, blockDim = min(FL_ROW_MAX_THREADS,
//   32 * ceil(k / (32 * FL_ROW_TILE))), row_lanes = 0;
// - grid = min(a fixed cap, ceil(rows / rows per block)); blocks stride over
//   rows. All of this depends on (rows, k) only, never on the GPU.
// Then the fl_softmax_cross_entropy_finish_<dtype> entry with one block of
// FL_SUM_THREADS threads, which writes the loss. A "mean" over class indices
// first computes its divisor, which both later kernels read: one block of
// fl_softmax_cross_entropy_mean_divisor writes it up to 4096 rows; above, its
// blocks' partials are summed by the float64 finishing entry.
//
// Each thread keeps FL_ROW_TILE logits of a row in registers per tile. A row of
// at most one tile per thread is read from global memory once and its gradient
// written once; longer rows stream tile by tile with an online max/sum and are
// read a second time only to write the gradient.
//
// The divisor comes as a value, or (device_divisor non-null) as a float64 in
// device memory, so that a mean over labels needs no host round trip.
//
// Labels equal to ignore_index give L = 0 and a zero gradient row; any other
// label outside [0, k) gives L = NaN and a NaN gradient row, without reading
// out of bounds.

#include "common/rows.cuh"

// Two resident blocks per SM caps registers at 128 per thread, which the
// unrolled tile of every entry but one needs without spilling (fewer
// registers spill heavily).
#define FL_CE_MIN_BLOCKS 2
// The exception: the float64 probability entry keeps two tiles of doubles (64
// registers) live from the first pass through the reductions to the gradient;
// within 128 registers ptxas spills it on every architecture (over 600 bytes
// per thread on sm_90). So it asks for one block per SM: half the resident
// warps, no local memory traffic. A smaller tile would fit, but the tile
// decides which thread sums which classes (and the launcher's geometry), so
// it would change the bits of the results.
#define FL_CE_PROBS_FLOAT64_MIN_BLOCKS 1
// The divisor pre-pass: blocks of this many threads, each summing a strided
// share of the labels into one partial (the launcher sizes and caps the grid
// by constants, so the partition depends on the row count alone); a lone
// block's partial is the divisor, else the float64 finishing entry sums them.
#define FL_CE_DIVISOR_THREADS 256

namespace fl {

// The soft part of a row's target, q_c w_c without the label's (1 - eps) w_y:
// (1 - eps) t_c + eps / k for probabilities, eps / k for labels.
struct SoftTarget {
    const double* weight;
    double keep;   // 1 - eps
    double eps_k;  // eps / k

    template <bool PROBS, typename C>
    __device__ __forceinline__ double at(i64 c, C t) const {
        const double q = PROBS ? keep * widen(t) + eps_k : eps_k;
        return weight ? q * weight[c] : q;
    }
};

// One thread's share of a row: its MaxShare of the sum of exp(z - m) and, for
// the soft target, S = sum q w and B = sum q w (m - z).
template <typename C> struct RowState {
    MaxShare<C> share;
    double soft_weight;
    double soft_gap;

    __device__ __forceinline__ void start() {
        share.start();
        soft_weight = 0.0;
        soft_gap = 0.0;
    }

    // Adds exp(z - max) for a logit z of the row (max already at least z).
    __device__ __forceinline__ void add(C z) {
        if (z == -infinity<C>()) return;  // exp(-inf - m) is 0 even while m is still -inf
        if (!share.count_at_max(z)) share.rest += widen(fl_exp(z - share.max));
    }

    // Moves the reference point to new_max >= max (equal when both are -inf).
    __device__ __forceinline__ void rebase(C new_max) {
        if (new_max == share.max) return;
        if (soft_weight != 0.0) soft_gap += soft_weight * (widen(new_max) - widen(share.max));
        share.rebase(new_max);
    }
};

template <typename T, bool PROBS>
__device__ __forceinline__ void softmax_cross_entropy_rows(
    const T* logits, const i64* labels, const T* probs, const double* weight, T* grad_out,
    double* loss_out, double* partials, i64 rows, i64 classes, i64 ignore_index, double smoothing,
    double divisor, const double* device_divisor, int row_lanes) {
    typedef Convert<T> Cv;
    typedef typename Cv::compute_t C;
    typedef RowTiles<T> Tiles;
    const int pack = Packet<T>::size;
    __shared__ double scratch[32];
    __shared__ double group_loss[FL_ROW_GROUP_BLOCK];

    const RowGroup g = RowGroup::of(row_lanes, scratch);
    const int groups_per_block = g.per_block();
    const int group_index = g.index();

    SoftTarget soft;
    soft.weight = weight;
    soft.keep = 1.0 - smoothing;
    soft.eps_k = smoothing / (double)classes;
    const bool has_soft = PROBS || smoothing != 0.0;

    const i64 tiles = Tiles::count(classes, g);
    const C neg_inf = -infinity<C>();
    const double inv_divisor = grad_out ? 1.0 / fl::loss_divisor(divisor, device_divisor) : 0.0;
    const C scale = narrow<C>(inv_divisor);

    double loss_sum = 0.0;  // this group's rows, in row order (used by rank 0)
    // `first` is the block's first row of the round, so every thread of the
    // block runs the loop equally often: a group past the last row, or on a
    // row whose label is ignored or invalid, still takes part in its warp's
    // shuffles (and the block's barriers), reading and writing nothing.
    for (i64 first = (i64)blockIdx.x * groups_per_block; first < rows;
         first += (i64)gridDim.x * groups_per_block) {
        const i64 row = first + group_index;
        const bool active = row < rows;
        const i64 offset = active ? row * classes : 0;
        const T* z_row = logits + offset;
        const T* t_row = PROBS ? probs + offset : (const T*)0;
        T* g_row = grad_out ? grad_out + offset : (T*)0;
        const bool aligned = aligned16(z_row, t_row, g_row, (const void*)0);

        // The label's own term: hard = (1 - eps) w_y. Every thread of the
        // group reads the same label and logit (one broadcast transaction).
        // A row that is not computed gets `fixed` as its loss and gradient:
        // 0 for an ignored label, NaN for an invalid one.
        bool computed = active;
        double fixed = 0.0;
        i64 label = -1;
        double hard = 0.0;
        C z_label = 0;
        if (!PROBS && active) {
            label = labels[row];
            if (label == ignore_index || label < 0 || label >= classes) {
                computed = false;
                fixed = label == ignore_index ? 0.0 : quiet_nan();
            } else {
                hard = soft.keep * (weight ? weight[label] : 1.0);
                z_label = Cv::to_compute(z_row[label]);
            }
        }

        // Pass 1: online max / sum over tiles; a single tile stays in registers.
        C z[FL_ROW_TILE];
        C t[FL_ROW_TILE] = {};  // probabilities; unused (optimised away) for labels
        RowState<C> st;
        st.start();
        for (i64 tile = 0; tile < tiles; ++tile) {
            if (computed) {
                Tiles::load(z_row, classes, tile, g, aligned, neg_inf, z);
                if (PROBS) Tiles::load(t_row, classes, tile, g, aligned, (C)0, t);
            } else {
#pragma unroll
                for (int j = 0; j < FL_ROW_TILE; ++j) z[j] = neg_inf;
            }
            C tile_max = neg_inf;
#pragma unroll
            for (int j = 0; j < FL_ROW_TILE; ++j) tile_max = fl_max(tile_max, z[j]);
            if (tile_max > st.share.max) st.rebase(tile_max);
#pragma unroll
            for (int i = 0; i < Tiles::per_thread; ++i) {
                const i64 start = Tiles::first(tile, i, g);
                if (start >= classes || !computed) continue;  // a packet past the row's end
#pragma unroll
                for (int e = 0; e < pack; ++e) {
                    const int j = i * pack + e;
                    const i64 c = start + e;
                    if (c >= classes) continue;
                    const bool vanishes = z[j] == neg_inf;
                    st.add(z[j]);
                    if (has_soft) {
                        const double qw = soft.at<PROBS>(c, t[j]);
                        st.soft_weight += qw;
                        // No term for a class of no mass, nor for one at the running max (a
                        // later rebase adds its gap), even under an infinite weight.
                        const double gap =
                            vanishes ? infinity<double>() : widen(st.share.max) - widen(z[j]);
                        if (qw != 0.0 && gap != 0.0) st.soft_gap += qw * gap;
                    }
                }
            }
        }

        // Combine the group: common max first, then sums relative to it.
        const C row_max = narrow<C>(g.max(widen(st.share.max)));
        st.rebase(row_max);
        const double at_max = g.sum(st.share.at_max);  // the group's reductions in a fixed order
        const ExpSum exp_sum = ExpSum::of(at_max, g.sum(st.share.rest));
        const double hi = exp_sum.hi;
        const double lo = exp_sum.lo;
        double soft_weight = 0.0;
        double soft_gap = 0.0;
        if (has_soft) {
            soft_weight = g.sum(st.soft_weight);
            soft_gap = g.sum(st.soft_gap);
        }
        const double total_weight = soft_weight + hard;
        const double hard_gap = widen(row_max) - widen(z_label);
        const double hard_term = hard != 0.0 && hard_gap != 0.0 ? hard * hard_gap : 0.0;
        const double loss =
            computed ? total_weight * exp_sum.log_sum() + soft_gap + hard_term : fixed;
        if (active && g.rank == 0) {
            if (loss_out) loss_out[row] = loss;
            loss_sum += loss;
        }

        // Pass 2: gradient, from registers for a one-tile row, else re-read.
        if (grad_out) {
            g.sync();
            const C inv_sum = narrow<C>(1.0 / hi);
            const C weight_c = narrow<C>(total_weight);
            const T fill = Cv::from(fixed);
            // The label's entry in float64, as total_weight p_y - q_y w_y =
            // total_weight ((e_y - hi) - lo) / hi + (total_weight - q_y w_y): in a
            // confident row without smoothing (e_y = 1, hi near 1) the first difference
            // is exact and the second 0, where p_y total_weight - q_y w_y would cancel
            // the digits away. Against probabilities, the same for the max class of a row
            // whose sum is below 2 (its only logit at the max) and whose target mass is
            // finite: a one-hot or confident target's q_c is near 1 there too (an infinite
            // mass makes the entry inf or NaN either way, and this form's inf - inf NaN).
            const auto paired_grad = [&](double e, double target) {
                return narrow<C>(inv_divisor * (total_weight * ((e - hi) - lo) / hi +
                                                (total_weight - target)));
            };
            C label_grad = 0;
            if (!PROBS && computed) {
                const double label_exp = widen(fl_exp(z_label - row_max));
                const double label_target = hard + (has_soft ? soft.at<false>(label, (C)0) : 0.0);
                label_grad = paired_grad(label_exp, label_target);
            }
            const bool unique_max =
                PROBS && at_max != 0.0 && hi < 2.0 && fabs(total_weight) < infinity<double>();
            for (i64 tile = 0; tile < tiles; ++tile) {
                if (tiles > 1 && computed) {
                    Tiles::load(z_row, classes, tile, g, aligned, neg_inf, z);
                    if (PROBS) Tiles::load(t_row, classes, tile, g, aligned, (C)0, t);
                }
#pragma unroll
                for (int i = 0; i < Tiles::per_thread; ++i) {
                    const i64 start = Tiles::first(tile, i, g);
                    if (start >= classes) continue;  // a packet past the row's end
                    T out[Packet<T>::size];
#pragma unroll
                    for (int e = 0; e < pack; ++e) {
                        const int j = i * pack + e;
                        const i64 c = start + e;
                        C grad = label_grad;
                        if (unique_max && z[j] == row_max) {
                            grad = paired_grad(1.0, soft.at<true>(c, t[j]));
                        } else if (c != label) {
                            // q_c w_c rounded once, so that it cancels p_c S exactly
                            // where the two agree.
                            const C target = has_soft && c < classes
                                                 ? narrow<C>(soft.at<PROBS>(c, t[j]))
                                                 : (C)0;
                            const C p = fl_exp(z[j] - row_max) * inv_sum;
                            grad = scale * (p * weight_c - target);
                        }
                        out[e] = computed ? Cv::from(grad) : fill;
                    }
                    if (active) store_packet(g_row, start, classes, aligned, out);
                }
            }
        }
    }

    store_block_partial(g, loss_sum, group_loss, partials);
}

}  // namespace fl

// Separate entries for label and probability targets: each gets its own
// register allocation (the probability path keeps a second tile live), and the
// probability entry its own resident-block hint.
#define FL_CE_ENTRIES(SUFFIX, T, PROBS_MIN_BLOCKS)                                                \
    extern "C" __global__ void __launch_bounds__(FL_ROW_MAX_THREADS, FL_CE_MIN_BLOCKS)            \
        fl_softmax_cross_entropy_##SUFFIX(                                                        \
            const T* logits, const long long* labels, const double* weight, T* grad_out,          \
            double* loss_out, double* partials, long long rows, long long classes,                \
            long long ignore_index, double label_smoothing, double divisor,                       \
            const double* device_divisor, int row_lanes) {                                        \
        fl::softmax_cross_entropy_rows<T, false>(logits, labels, (const T*)0, weight, grad_out,  \
                                                 loss_out, partials, rows, classes,              \
                                                 ignore_index, label_smoothing, divisor,          \
                                                 device_divisor, row_lanes);                      \
    }                                                                                             \
    extern "C" __global__ void __launch_bounds__(FL_ROW_MAX_THREADS, PROBS_MIN_BLOCKS)            \
        fl_softmax_cross_entropy_probs_##SUFFIX(                                                  \
            const T* logits, const T* probs, const double* weight, T* grad_out,                   \
            double* loss_out, double* partials, long long rows, long long classes,                \
            double label_smoothing, double divisor, const double* device_divisor,                 \
            int row_lanes) {                                                                      \
        fl::softmax_cross_entropy_rows<T, true>(logits, (const long long*)0, probs, weight,      \
                                                grad_out, loss_out, partials, rows, classes, 0,  \
                                                label_smoothing, divisor, device_divisor,         \
                                                row_lanes);                                       \
    }

FL_CE_ENTRIES(float16, fl::half_t, FL_CE_MIN_BLOCKS)
FL_CE_ENTRIES(bfloat16, fl::bfloat16_t, FL_CE_MIN_BLOCKS)
FL_CE_ENTRIES(float32, float, FL_CE_MIN_BLOCKS)
FL_CE_ENTRIES(float64, double, FL_CE_PROBS_FLOAT64_MIN_BLOCKS)

FL_FINISH_ENTRY(fl_softmax_cross_entropy_finish_float16, fl::half_t)
FL_FINISH_ENTRY(fl_softmax_cross_entropy_finish_bfloat16, fl::bfloat16_t)
FL_FINISH_ENTRY(fl_softmax_cross_entropy_finish_float32, float)
FL_FINISH_ENTRY(fl_softmax_cross_entropy_finish_float64, double)

// The divisor of a "mean" over class indices, PyTorch's: the weight sum (the
// count when weight is null) of the rows whose label is not ignore_index, as one
// float64 partial per block (blocks stride over the rows); the launcher sums
// them with fl_softmax_cross_entropy_finish_float64. An invalid label adds its
// clipped class's weight; its row's loss is NaN anyway.
extern "C" __global__ void __launch_bounds__(FL_CE_DIVISOR_THREADS)
    fl_softmax_cross_entropy_mean_divisor(const long long* labels, const double* weight,
                                          long long rows, long long classes,
                                          long long ignore_index, double* partials) {
    __shared__ double scratch[32];
    double acc = 0.0;
    const long long stride = (long long)gridDim.x * blockDim.x;
#pragma unroll 4
    for (long long row = (long long)blockIdx.x * blockDim.x + threadIdx.x; row < rows;
         row += stride) {
        const long long label = labels[row];
        if (label == ignore_index) continue;
        const long long c = label < 0 ? 0 : (label >= classes ? classes - 1 : label);
        acc += weight ? weight[c] : 1.0;
    }
    acc = fl::block_allreduce(acc, fl::SumOp(), 0.0, scratch);
    if (threadIdx.x == 0) partials[blockIdx.x] = acc;
}
