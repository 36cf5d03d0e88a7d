// The multi-class margin loss over class indices (PyTorch's multi_margin_loss
// on (N, k) input): per-row loss, the gradient (optionally in place over the
// input) and one float64 partial sum of the row losses per block.
//
// Row x with label y, margin m, power p (1 or 2), class weight w_y (1 when
// null), divisor d:
//   h_j = max(0, (m - x_y) + x_j) for j != y, h_y = 0
//   L   = w_y sum_j h_j^p / k
//   dL/dx_j / d = w_y p h_j^(p-1) / (k d) where h_j > 0, else 0 (j != y)
//   dL/dx_y / d = -sum_{j != y} of those
// A label outside [0, k) gives a NaN loss and a NaN gradient row (nothing of
// the row beyond its label is read). As PyTorch, a term with h_j NaN (from a
// NaN or inf - inf) fails h_j > 0 and adds nothing.
//
// Precision: h_j in the compute type (float for float16, bfloat16 and float32;
// double for float64), in PyTorch's order (m - x_y) + x_j; each thread's shares
// of sum w_y h^p (each term weighed, as PyTorch: a sum of h^p near the largest
// double may overflow where the weighed terms do not) and of the slopes (p = 1:
// their count; p = 2: each h times w_y p / (k d), so that the sum is finite
// wherever the gradient is)
// accumulate in double and the group combines them in a fixed tree, so the
// bits depend on (rows, k) only. The loss is formed in
// double; the gradient at j != y in the compute type from w_y p / (k d) rounded
// to it; the gradient at y in double; each rounded once to the storage type.
//
// Launch: common/rows.cuh's geometry (the launcher's launch_shape, as for
// softmax entropy and cross-entropy), blocks striding over rows; then
// fl_multi_margin_finish_<dtype> with one block of FL_SUM_THREADS threads,
// which writes the loss. The partition depends on (rows, k) only.
//
// Traffic: rank 0 of a row's group alone reads the label, its weight and x_y,
// and hands them to the group through its reductions. Each thread keeps
// FL_ROW_TILE elements of a row in registers per tile: a row of at most one
// tile per thread (k <= 4096) is read once and its gradient written once; a
// longer row is streamed: read once for the sums and a second time to write
// the gradient. Without a gradient every row is read once. A thread writes
// only the elements it read itself, after the group's reductions (which follow
// rank 0's read of x_y), so a gradient written in place needs no further barrier.
//
// The divisor comes as a value, or (device_divisor non-null) as a float64 in
// device memory, read only when there is a gradient to scale.

#include "common/rows.cuh"

#define FL_MARGIN_MIN_BLOCKS 2

namespace fl {

template <typename T>
__device__ __forceinline__ void multi_margin_rows(const T* x, const i64* labels,
                                                  const double* weight, T* grad_out,
                                                  double* loss_out, double* partials, i64 rows,
                                                  i64 classes, int power, double margin,
                                                  double divisor, const double* device_divisor,
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
    const C zero = (C)0;
    const C m = narrow<C>(margin);
    // p / (k d): the gradient's scale but for w_y.
    const double base_scale =
        grad_out ? (double)power / ((double)classes * fl::loss_divisor(divisor, device_divisor))
                 : 0.0;

    double loss_sum = 0.0;  // this group's rows, in row order (used by rank 0)
    // `first` is the block's first row of the round, so every thread runs the
    // loop equally often: a group past the last row still takes part in its
    // warp's shuffles and the block's barriers, reading and writing nothing.
    for (i64 first = (i64)blockIdx.x * groups_per_block; first < rows;
         first += (i64)gridDim.x * groups_per_block) {
        const i64 row = first + group_index;
        const bool active = row < rows;
        const i64 offset = active ? row * classes : 0;
        const T* x_row = x + offset;
        T* g_row = grad_out ? grad_out + offset : (T*)0;
        const bool aligned = aligned16(x_row, g_row, (const void*)0, (const void*)0);

        // Rank 0 reads the label, w_y and x_y; the group gets them as sums in
        // which every other rank adds 0 (exact, NaN and inf included). An
        // invalid label comes as -1 with w_y NaN.
        double label_share = 0.0, weight_share = 0.0, target_share = 0.0;
        if (active && g.rank == 0) {
            const i64 label = labels[row];
            if (label < 0 || label >= classes) {
                label_share = -1.0;
                weight_share = quiet_nan();
            } else {
                label_share = (double)label;
                weight_share = weight ? weight[label] : 1.0;
                target_share = widen(Cv::to_compute(x_row[label]));
            }
        }
        const double label_d = g.sum(label_share);
        const double w = g.sum(weight_share);
        const C target = narrow<C>(g.sum(target_share));
        const bool valid = label_d >= 0.0;
        const i64 y = valid ? (i64)label_d : -1;
        const C base = m - target;

        // Pass 1: sum h^p and the slopes over tiles (p = 1: their count, scaled after; p = 2:
        // each h times w_y p / (k d), the term's own slope, as PyTorch sums them: a sum of h
        // may overflow where the gradient does not, and h p / (k d) may round to 0 where w_y h
        // p / (k d) does not); a single tile stays in registers.
        const double scale = w * base_scale;
        C z[FL_ROW_TILE];
        double loss_part = 0.0, slope_part = 0.0;
        for (i64 tile = 0; tile < tiles; ++tile) {
            if (active && valid) {
                Tiles::load(x_row, classes, tile, g, aligned, zero, z);
#pragma unroll
                for (int i = 0; i < Tiles::per_thread; ++i) {
                    const i64 start = Tiles::first(tile, i, g);
                    if (start >= classes) continue;  // a packet past the row's end
#pragma unroll
                    for (int e = 0; e < pack; ++e) {
                        const i64 c = start + e;
                        const C h = base + z[i * pack + e];
                        if (c < classes && c != y && h > zero) {
                            const double hd = widen(h);
                            loss_part += w * (power == 1 ? hd : hd * hd);
                            slope_part += power == 1 ? 1.0 : hd * scale;
                        }
                    }
                }
            } else {
#pragma unroll
                for (int j = 0; j < FL_ROW_TILE; ++j) z[j] = zero;
            }
        }
        const double loss_total = g.sum(loss_part);
        const double slope_total = g.sum(slope_part);
        // w weighs only the terms that count: none is 0, even for an infinite or NaN w.
        const double loss = valid ? loss_total / (double)classes : quiet_nan();
        if (active && g.rank == 0) {
            if (loss_out) loss_out[row] = loss;
            loss_sum += loss;
        }

        // Pass 2: the gradient, from registers for a one-tile row, else re-read.
        if (grad_out && active) {
            const C scale_c = narrow<C>(scale);
            // 0 - terms, as PyTorch: +0, not -0, when there are none.
            const double slopes = power == 1 ? scale * slope_total : slope_total;
            const T at_label = Cv::from(!valid              ? quiet_nan()
                                        : slope_total != 0.0 ? 0.0 - slopes
                                                             : 0.0);
            const T nan = Cv::from(quiet_nan());
            for (i64 tile = 0; tile < tiles; ++tile) {
                if (tiles > 1 && valid) Tiles::load(x_row, classes, tile, g, aligned, zero, z);
#pragma unroll
                for (int i = 0; i < Tiles::per_thread; ++i) {
                    const i64 start = Tiles::first(tile, i, g);
                    if (start >= classes) continue;  // a packet past the row's end
                    T out[Packet<T>::size];
#pragma unroll
                    for (int e = 0; e < pack; ++e) {
                        const i64 c = start + e;
                        const C h = base + z[i * pack + e];
                        out[e] = !valid  ? nan
                                 : c == y ? at_label
                                 : h > zero ? Cv::from(power == 1 ? scale_c : scale_c * h)
                                            : Cv::from(zero);
                    }
                    store_packet(g_row, start, classes, aligned, out);
                }
            }
        }
    }

    store_block_partial(g, loss_sum, group_loss, partials);
}

}  // namespace fl

#define FL_MARGIN_ENTRY(SUFFIX, T)                                                               \
    extern "C" __global__ void __launch_bounds__(FL_ROW_MAX_THREADS, FL_MARGIN_MIN_BLOCKS)      \
        fl_multi_margin_##SUFFIX(const T* x, const long long* labels, const double* weight,    \
                                 T* grad_out, double* loss_out, double* partials,              \
                                 long long rows, long long classes, int power, double margin,  \
                                 double divisor, const double* device_divisor, int row_lanes) { \
        fl::multi_margin_rows<T>(x, labels, weight, grad_out, loss_out, partials, rows, classes, \
                                 power, margin, divisor, device_divisor, row_lanes);            \
    }

FL_MARGIN_ENTRY(float16, fl::half_t)
FL_MARGIN_ENTRY(bfloat16, fl::bfloat16_t)
FL_MARGIN_ENTRY(float32, float)
FL_MARGIN_ENTRY(float64, double)

FL_FINISH_ENTRY(fl_multi_margin_finish_float16, fl::half_t)
FL_FINISH_ENTRY(fl_multi_margin_finish_bfloat16, fl::bfloat16_t)
FL_FINISH_ENTRY(fl_multi_margin_finish_float32, float)
FL_FINISH_ENTRY(fl_multi_margin_finish_float64, double)
