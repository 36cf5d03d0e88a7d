// The entropy of each row's softmax over a (rows, k) C-contiguous array of
// logits: per-row entropy, its gradient (optionally in place over the logits)
// and one float64 partial sum of the row entropies per block.
//
// Row z, m = max z, e_c = exp(z_c - m), s = sum e_c, p_c = e_c / s,
// log p_c = (z_c - m) - log s, divisor d:
//   H     = -sum_c p_c log p_c = log s + u / s      u = sum_c e_c (m - z_c)
//   dH/dz_c / d = -p_c (log p_c + H) / d
// log s and u / s are both non-negative, so no cancellation in H, and the
// online rebase of u to a new max M >= m, u' = exp(m - M) (u + (M - m) s),
// adds non-negative terms too. A class with p_c = 0 (z_c = -inf, or exp
// underflowed) contributes 0 to u and gets gradient 0: the 0 * -inf of
// p log p is never formed. A row of only -inf has s = 0 and gives NaN (its
// entropy and gradient, as softmax's); a NaN or +inf in a row makes the row NaN.
//
// Precision: elements in the compute type (float for float16, bfloat16 and
// float32; double for float64); each thread's shares of s and u accumulate in
// double and the group combines them in a fixed tree, so the bits depend on
// (rows, k) only. H is formed in double (loss_out and the partials get it so);
// the gradient is computed in the compute type from m, log s, 1 / s, H and
// 1 / d rounded to it, and rounded once to the storage type.
//
// Launch: common/rows.cuh's geometry (the launcher's launch_shape, as for
// softmax and cross-entropy), blocks striding over rows; then
// fl_softmax_entropy_finish_<dtype> with one block of FL_SUM_THREADS threads,
// which writes the loss. The partition depends on (rows, k) only.
//
// Traffic: each thread keeps FL_ROW_TILE logits of a row in registers per
// tile. A row of at most one tile per thread (k <= 4096) is read once and its
// gradient written once; a longer row is read once for the online max and
// sums and a second time to write the gradient. Without a gradient every row
// is read once. A thread writes only the elements it read itself, after the
// group's reductions, so a gradient written in place needs no further barrier.
//
// The divisor comes as a value, or (device_divisor non-null) as a float64 in
// device memory, read only when there is a gradient to scale.

#include "common/rows.cuh"

// Two resident blocks per SM: at most 128 registers per thread (one tile of
// the compute type, as softmax's forward entries).
#define FL_ENTROPY_MIN_BLOCKS 2

namespace fl {

// One thread's share of a row: its MaxShare of s = sum exp(z - m), and
// u = sum exp(z - m) (m - z) in double (a logit counted at the max has no term
// of u), so that a confident row's s = 1 + e keeps e's digits, which its
// entropy log s + u / s is made of.
template <typename C> struct EntropyState {
    MaxShare<C> share;
    double gap;

    // Adds a logit's terms (max already at least z; z not -inf).
    __device__ __forceinline__ void add(C z) {
        if (share.count_at_max(z)) return;
        const C d = z - share.max;
        const double ex = widen(fl_exp(d));
        share.rest += ex;
        if (ex != 0.0) gap -= ex * widen(d);
    }

    // Moves the reference point to new_max > max. A share with s = 0 (only
    // -inf so far) stays 0; a NaN share stays NaN.
    __device__ __forceinline__ void rebase(C new_max) {
        const double total = share.rest + share.at_max;
        if (total == 0.0) {
            share.max = new_max;
            return;
        }
        const double f = widen(fl_exp(share.max - new_max));  // share.rebase's own
        // f = 0: the old terms vanish, and M - m may overflow to inf (0 * inf).
        gap = f == 0.0 ? 0.0 : f * (gap + total * (widen(new_max) - widen(share.max)));
        share.rebase(new_max);
    }
};

template <typename T>
__device__ __forceinline__ void softmax_entropy_rows(const T* logits, T* grad_out,
                                                     double* loss_out, double* partials,
                                                     i64 rows, i64 classes, double divisor,
                                                     const double* device_divisor,
                                                     int row_lanes) {
    typedef Convert<T> Cv;
    typedef typename Cv::compute_t C;
    typedef RowTiles<T> Tiles;
    const int pack = Packet<T>::size;
    __shared__ double scratch[32];
    __shared__ double group_loss[FL_ROW_GROUP_BLOCK];

    const RowGroup g = RowGroup::of(row_lanes, scratch);
    const int groups_per_block = g.per_block();
    const int group_index = g.index();
    const i64 tiles = Tiles::count(classes, g);
    const C neg_inf = -infinity<C>();
    const C neg_scale =
        grad_out ? narrow<C>(-1.0 / fl::loss_divisor(divisor, device_divisor)) : (C)0;

    double loss_sum = 0.0;  // this group's rows, in row order (used by rank 0)
    // `first` is the block's first row of the round, so every thread runs the
    // loop equally often: a group past the last row still takes part in its
    // warp's shuffles and the block's barriers, reading and writing nothing.
    for (i64 first = (i64)blockIdx.x * groups_per_block; first < rows;
         first += (i64)gridDim.x * groups_per_block) {
        const i64 row = first + group_index;
        const bool active = row < rows;
        const i64 offset = active ? row * classes : 0;
        const T* z_row = logits + offset;
        T* g_row = grad_out ? grad_out + offset : (T*)0;
        const bool aligned = aligned16(z_row, g_row, (const void*)0, (const void*)0);

        // Pass 1: online max and sums over tiles; a single tile stays in registers.
        C z[FL_ROW_TILE];
        EntropyState<C> st;
        st.share.start();
        st.gap = 0.0;
        for (i64 tile = 0; tile < tiles; ++tile) {
            if (active) {
                Tiles::load(z_row, classes, tile, g, aligned, neg_inf, z);
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
                if (start >= classes) continue;  // a packet past the row's end
#pragma unroll
                for (int e = 0; e < pack; ++e) {
                    const int j = i * pack + e;
                    // exp(-inf - m) is 0 even while m is still -inf; and 0 * inf is no term.
                    if (start + e < classes && z[j] != neg_inf) st.add(z[j]);
                }
            }
        }

        // Combine the group: the common max first, then the sums relative to it.
        const C row_max = narrow<C>(g.max(widen(st.share.max)));
        if (row_max > st.share.max) st.rebase(row_max);
        const double ones = g.sum(st.share.at_max);  // the group's reductions in a fixed order
        const ExpSum exp_sum = ExpSum::of(ones, g.sum(st.share.rest));
        const double gap = g.sum(st.gap);
        const double sum = exp_sum.hi;
        const double log_sum = exp_sum.log_sum();
        const double entropy = log_sum + gap / sum;
        if (active && g.rank == 0) {
            if (loss_out) loss_out[row] = entropy;
            loss_sum += entropy;
        }

        // Pass 2: the gradient, from registers for a one-tile row, else re-read.
        if (grad_out && active) {
            const C log_s = narrow<C>(log_sum);
            const C inv_s = narrow<C>(1.0 / sum);
            const C h = narrow<C>(entropy);
            for (i64 tile = 0; tile < tiles; ++tile) {
                if (tiles > 1) Tiles::load(z_row, classes, tile, g, aligned, neg_inf, z);
#pragma unroll
                for (int i = 0; i < Tiles::per_thread; ++i) {
                    const i64 start = Tiles::first(tile, i, g);
                    if (start >= classes) continue;  // a packet past the row's end
                    T out[Packet<T>::size];
#pragma unroll
                    for (int e = 0; e < pack; ++e) {
                        const C d = z[i * pack + e] - row_max;
                        const C p = fl_exp(d) * inv_s;
                        out[e] = Cv::from(p == (C)0 ? (C)0 : p * ((d - log_s) + h) * neg_scale);
                    }
                    store_packet(g_row, start, classes, aligned, out);
                }
            }
        }
    }

    store_block_partial(g, loss_sum, group_loss, partials);
}

}  // namespace fl

#define FL_ENTROPY_ENTRY(SUFFIX, T)                                                             \
    extern "C" __global__ void __launch_bounds__(FL_ROW_MAX_THREADS, FL_ENTROPY_MIN_BLOCKS)    \
        fl_softmax_entropy_##SUFFIX(const T* logits, T* grad_out, double* loss_out,            \
                                    double* partials, long long rows, long long classes,       \
                                    double divisor, const double* device_divisor,              \
                                    int row_lanes) {                                            \
        fl::softmax_entropy_rows<T>(logits, grad_out, loss_out, partials, rows, classes,       \
                                    divisor, device_divisor, row_lanes);                        \
    }

FL_ENTROPY_ENTRY(float16, fl::half_t)
FL_ENTROPY_ENTRY(bfloat16, fl::bfloat16_t)
FL_ENTROPY_ENTRY(float32, float)
FL_ENTROPY_ENTRY(float64, double)

FL_FINISH_ENTRY(fl_softmax_entropy_finish_float16, fl::half_t)
FL_FINISH_ENTRY(fl_softmax_entropy_finish_bfloat16, fl::bfloat16_t)
FL_FINISH_ENTRY(fl_softmax_entropy_finish_float32, float)
FL_FINISH_ENTRY(fl_softmax_entropy_finish_float64, double)
