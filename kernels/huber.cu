// Huber with param = delta > 0, through the fused elementwise pass
// (common/elementwise.cuh).

#include "common/elementwise.cuh"

namespace fl {

struct Huber {
    static constexpr double scale = 1.0;
    static constexpr bool weighted = false;
    static __device__ __forceinline__ void apply(double x, double t, double, double delta,
                                                 double& loss, double& slope) {
        const double diff = x - t;
        const double size = fabs(diff);
        if (size < delta) {
            loss = __dmul_rn(0.5 * diff, diff);
            slope = diff;
        } else {
            // The rounded product, then the difference: no FMA, as on the CPU.
            loss = delta * __dadd_rn(size, -__dmul_rn(0.5, delta));
            slope = delta * signum(diff);
        }
    }
};

}  // namespace fl

FL_ELEMENTWISE_ENTRIES(huber, fl::Huber)
