// Mean squared error: (x - t)^2, through the fused elementwise pass
// (common/elementwise.cuh).

#include "common/elementwise.cuh"

namespace fl {

struct SquaredError {
    // d/dx (x - t)^2 = 2 (x - t): the 2 joins the divisor once, per launch.
    static constexpr double scale = 2.0;
    static constexpr bool weighted = false;
    static __device__ __forceinline__ void apply(double x, double t, double, double,
                                                 double& loss, double& slope) {
        // Of two float32 or half values widened exactly, the difference is
        // rounded at most once.
        const double diff = x - t;
        loss = __dmul_rn(diff, diff);
        slope = diff;
    }
};

}  // namespace fl

FL_ELEMENTWISE_ENTRIES(mse, fl::SquaredError)
