/* aarch64 Advanced SIMD kernels for CPUs without the dot-product extension (Cortex-A53/A72
 * class): widening byte multiplies, pairwise accumulation into int32. */
#include <arm_neon.h>

#include "internal.h"

#define TFQ_NEON_DOT16(acc, u, a)                                    \
  do {                                                               \
    int16x8_t prod_ = vmull_s8(vget_low_s8(u), vget_low_s8(a));      \
    prod_ = vmlal_high_s8(prod_, (u), (a));                          \
    (acc) = vpadalq_s16((acc), prod_);                               \
  } while (0)
#include "matmul_neon_tile.h"

static void tfq_matmul_q4_sym_neon(const tfq_q8_job *job) { tfq_neon_run(job, 4, 1); }
static void tfq_matmul_q4_asym_neon(const tfq_q8_job *job) { tfq_neon_run(job, 4, 0); }
static void tfq_matmul_q2_sym_neon(const tfq_q8_job *job) { tfq_neon_run(job, 2, 1); }
static void tfq_matmul_q2_asym_neon(const tfq_q8_job *job) { tfq_neon_run(job, 2, 0); }

/* The float-activation entries: the reference's sums blocked for the compiler's vectorizer. */
const tfq_kernel_table tfq_kernels_neon = {
    .isa = TFQ_ISA_NEON,
    .interleaved = 1,
    .q8 = {{tfq_matmul_q4_asym_neon, tfq_matmul_q4_sym_neon},
           {tfq_matmul_q2_asym_neon, tfq_matmul_q2_sym_neon}},
    .f32 = {{tfq_linear_f32_blocked, tfq_linear_f32_blocked},
            {tfq_linear_f32_blocked, tfq_linear_f32_blocked}},
    .quantize = NULL,
    .prepare = NULL,
};
