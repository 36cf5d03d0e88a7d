// L1: |x - t|, through the fused elementwise pass (common/elementwise.cuh).

#include "common/elementwise.cuh"

namespace fl {

struct AbsoluteError {
    static constexpr double scale = 1.0;
    static constexpr bool weighted = false;
    static __device__ __forceinline__ void apply(double x, double t, double, double,
                                                 double& loss, double& slope) {
        const double diff = x - t;
        loss = fabs(diff);
        slope = signum(diff);
    }
};

}  // namespace fl

FL_ELEMENTWISE_ENTRIES(l1, fl::AbsoluteError)
