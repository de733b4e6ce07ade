/* AVX-512 VNNI kernels on 256-bit vectors (compiled with -mavx2 -mfma -mf16c -mavx512vl
 * -mavx512vnni).  vpdpbusd does the unsigned x signed byte dot product and the int32 add in
 * one instruction, replacing maddubs + madd + add of the AVX2 kernel; the rest of the kernel
 * is the same (matmul_x86_tile.h).  Activations are quantized by quantize_avx512.c.  256-bit rather than 512-bit vectors keep one tile shape
 * and activation order for both x86 kernels, and avoid the frequency drop of 512-bit
 * instructions on some Intel parts.  The float-activation path is the AVX2 one. */
#include <immintrin.h>

#include "internal.h"

#define TFQ_X86_DOT(acc, u, a) ((acc) = _mm256_dpbusd_epi32((acc), (u), (a)))
/* (b & mask) ^ flip in one vpternlogd: 0x6A is that function of the inputs (0xF0, 0xCC, 0xAA). */
#define TFQ_X86_AND_XOR(b, mask, flip) _mm256_ternarylogic_epi32((b), (mask), (flip), 0x6A)
#include "matmul_x86_tile.h"

static void tfq_matmul_q4_sym_avx512vnni(const tfq_q8_job *job) { tfq_x86_run(job, 4, 1); }
static void tfq_matmul_q4_asym_avx512vnni(const tfq_q8_job *job) { tfq_x86_run(job, 4, 0); }
static void tfq_matmul_q2_sym_avx512vnni(const tfq_q8_job *job) { tfq_x86_run(job, 2, 1); }
static void tfq_matmul_q2_asym_avx512vnni(const tfq_q8_job *job) { tfq_x86_run(job, 2, 0); }

const tfq_kernel_table tfq_kernels_avx512vnni = {
    .isa = TFQ_ISA_AVX512VNNI,
    .interleaved = 1,
    .q8 = {{tfq_matmul_q4_asym_avx512vnni, tfq_matmul_q4_sym_avx512vnni},
           {tfq_matmul_q2_asym_avx512vnni, tfq_matmul_q2_sym_avx512vnni}},
    .f32 = {{tfq_linear_f32_q4_asym_avx2, tfq_linear_f32_q4_sym_avx2},
            {tfq_linear_f32_q2_asym_avx2, tfq_linear_f32_q2_sym_avx2}},
    .quantize = tfq_quantize_rows_q8_avx512,
    .prepare = tfq_prepare_q8_interleaved32_avx2,
};
