// Smooth L1 with param = beta >= 0 (beta = 0 is L1), through the fused
// elementwise pass (common/elementwise.cuh).

#include "common/elementwise.cuh"

namespace fl {

struct SmoothL1 {
    static constexpr double scale = 1.0;
    static constexpr bool weighted = false;
    static __device__ __forceinline__ void apply(double x, double t, double, double beta,
                                                 double& loss, double& slope) {
        const double diff = x - t;
        const double size = fabs(diff);
        if (size < beta) {
            // d (d / beta), not (d d) / beta: d d underflows for a beta below 1e-154.
            slope = diff / beta;
            loss = __dmul_rn(0.5 * diff, slope);
        } else {
            // The rounded product, then the difference: no FMA, as on the CPU.
            loss = __dadd_rn(size, -__dmul_rn(0.5, beta));
            slope = signum(diff);
        }
    }
};

}  // namespace fl

FL_ELEMENTWISE_ENTRIES(smooth_l1, fl::SmoothL1)
