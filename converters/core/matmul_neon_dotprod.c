/* aarch64 kernels using the dot-product extension (ARMv8.2-A DotProd, Cortex-A55/A76 and
 * later); compiled with -march=armv8.2-a+dotprod, chosen only when HWCAP_ASIMDDP is set. */
#include <arm_neon.h>

#include "internal.h"

#define TFQ_NEON_DOT16(acc, u, a) ((acc) = vdotq_s32((acc), (u), (a)))
#include "matmul_neon_tile.h"

static void tfq_matmul_q4_sym_neon_dotprod(const tfq_q8_job *job) { tfq_neon_run(job, 4, 1); }
static void tfq_matmul_q4_asym_neon_dotprod(const tfq_q8_job *job) { tfq_neon_run(job, 4, 0); }
static void tfq_matmul_q2_sym_neon_dotprod(const tfq_q8_job *job) { tfq_neon_run(job, 2, 1); }
static void tfq_matmul_q2_asym_neon_dotprod(const tfq_q8_job *job) { tfq_neon_run(job, 2, 0); }

const tfq_kernel_table tfq_kernels_neon_dotprod = {
    .isa = TFQ_ISA_NEON_DOTPROD,
    .interleaved = 1,
    .q8 = {{tfq_matmul_q4_asym_neon_dotprod, tfq_matmul_q4_sym_neon_dotprod},
           {tfq_matmul_q2_asym_neon_dotprod, tfq_matmul_q2_sym_neon_dotprod}},
    .f32 = {{tfq_linear_f32_blocked, tfq_linear_f32_blocked},
            {tfq_linear_f32_blocked, tfq_linear_f32_blocked}},
    .quantize = NULL,
    .prepare = NULL,
};
