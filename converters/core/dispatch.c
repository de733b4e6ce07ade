/* Kernel selection: the one place that maps CPU features and shapes to a kernel table. */
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

#if defined(TFQ_BUILD_X86)
#include <cpuid.h>
#endif
#if defined(TFQ_BUILD_NEON)
#include <sys/auxv.h>
#ifndef HWCAP_ASIMDDP
#define HWCAP_ASIMDDP (1UL << 20) /* asm/hwcap.h value, for C libraries that lack the name */
#endif
#endif

static const char *const tfq_isa_names[TFQ_ISA_COUNT] = {
    "auto", "ref", "avx2", "avx512vnni", "neon", "neon_dotprod",
};

const char *tfq_isa_name(tfq_isa isa) {
  if ((int)isa < 0 || isa >= TFQ_ISA_COUNT) return "unknown";
  return tfq_isa_names[isa];
}

#if defined(TFQ_BUILD_X86)
/* F16C (half to float conversion of f16 scales) comes with every AVX2 CPU made, but is its own
 * CPUID bit; read directly, since not every compiler's __builtin_cpu_supports knows "f16c". */
static int tfq_x86_has_avx2_fma_f16c(void) {
  unsigned int eax, ebx, ecx, edx;
  __builtin_cpu_init();
  if (!__builtin_cpu_supports("avx2") || !__builtin_cpu_supports("fma")) return 0;
  return __get_cpuid(1, &eax, &ebx, &ecx, &edx) && (ecx & bit_F16C) != 0;
}
#endif

/* The CPU (and the OS, which must save the vector registers) supports the ISA, and this build
 * compiled its kernels.  __builtin_cpu_supports checks XCR0 for the AVX state as well. */
static int tfq_detect(tfq_isa isa) {
  switch (isa) {
    case TFQ_ISA_AUTO:
    case TFQ_ISA_REF:
      return 1;
#if defined(TFQ_BUILD_X86)
    case TFQ_ISA_AVX2:
      return tfq_x86_has_avx2_fma_f16c();
    case TFQ_ISA_AVX512VNNI:
      return tfq_x86_has_avx2_fma_f16c() && __builtin_cpu_supports("avx512f") &&
             __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512vnni");
#endif
#if defined(TFQ_BUILD_NEON)
    case TFQ_ISA_NEON:
      return 1; /* Advanced SIMD is part of the aarch64 base architecture */
    case TFQ_ISA_NEON_DOTPROD:
      return (getauxval(AT_HWCAP) & HWCAP_ASIMDDP) != 0;
#endif
    default:
      return 0;
  }
}

/* Bit i set: ISA i available.  Detected once: CPUID traps to the hypervisor in a virtual
 * machine and costs microseconds, more than a whole small matmul.  Concurrent first calls
 * compute the same value, so the race is benign. */
static atomic_int tfq_isa_mask = -1;

int tfq_isa_available(tfq_isa isa) {
  if ((int)isa < 0 || isa >= TFQ_ISA_COUNT) return 0;
  int mask = atomic_load_explicit(&tfq_isa_mask, memory_order_relaxed);
  if (mask < 0) {
    mask = 0;
    for (int i = 0; i < TFQ_ISA_COUNT; i++) mask |= tfq_detect((tfq_isa)i) << i;
    atomic_store_explicit(&tfq_isa_mask, mask, memory_order_relaxed);
  }
  return (mask >> isa) & 1;
}

void tfq_clean_vector_state(void) {
#if defined(TFQ_BUILD_X86)
  if (tfq_isa_available(TFQ_ISA_AVX2)) __asm__ volatile("vzeroupper" ::: "memory");
#endif
}

const tfq_kernel_table *tfq_kernel_table_for(tfq_isa isa) {
  switch (isa) {
#if defined(TFQ_BUILD_X86)
    case TFQ_ISA_AVX2:
      return &tfq_kernels_avx2;
    case TFQ_ISA_AVX512VNNI:
      return &tfq_kernels_avx512vnni;
#endif
#if defined(TFQ_BUILD_NEON)
    case TFQ_ISA_NEON:
      return &tfq_kernels_neon;
    case TFQ_ISA_NEON_DOTPROD:
      return &tfq_kernels_neon_dotprod;
#endif
    default:
      return &tfq_kernels_ref;
  }
}

int tfq_n16_cpu(void) {
#if defined(TFQ_BUILD_X86)
  return tfq_isa_available(TFQ_ISA_AVX512VNNI) && __builtin_cpu_supports("avx512f");
#elif defined(TFQ_BUILD_NEON)
  return tfq_isa_available(TFQ_ISA_NEON_DOTPROD);
#else
  return 0;
#endif
}

/* TFQ_KERNELS_ISA, parsed once; -1 until read, 0 (auto) when unset or unknown. */
static atomic_int tfq_env_isa = -1;

static tfq_isa tfq_isa_from_env(void) {
  int v = atomic_load_explicit(&tfq_env_isa, memory_order_relaxed);
  if (v < 0) {
    const char *s = getenv("TFQ_KERNELS_ISA");
    v = TFQ_ISA_AUTO;
    for (int i = 1; s && i < TFQ_ISA_COUNT; i++)
      if (strcmp(s, tfq_isa_names[i]) == 0) v = i;
    atomic_store_explicit(&tfq_env_isa, v, memory_order_relaxed);
  }
  return (tfq_isa)v;
}

/* The SIMD kernels work in chunks of 32 elements that must not straddle two groups, so they
 * take G a multiple of 32, or one group per channel (G >= K, any K).  Other G run the
 * reference.  (The packing pads every row to a multiple of 32, so K itself is free.) */
int tfq_simd_supports(const tfq_packed_weights *w) {
  return w->group_size % 32 == 0 || w->group_size >= w->k;
}

/* Fastest first.  x86: VNNI does in one instruction what AVX2 needs three for.  aarch64:
 * SDOT likewise replaces two widening multiplies and a pairwise add.  M does not enter the
 * choice: the kernels pick their own row tiles, and the int8 path stays ahead of the float
 * path down to M = 1 (measured with tfq_bench), so the float path is never substituted. */
static const tfq_isa tfq_isa_preference[] = {
    TFQ_ISA_AVX512VNNI, TFQ_ISA_AVX2, TFQ_ISA_NEON_DOTPROD, TFQ_ISA_NEON,
};

tfq_isa tfq_select_isa(const tfq_packed_weights *w, int32_t m) {
  (void)m;
  if (!w || w->k < 1 || w->group_size < 1) return TFQ_ISA_REF;
  return tfq_select_isa_checked(w);
}

tfq_isa tfq_select_isa_checked(const tfq_packed_weights *w) {
  return tfq_simd_supports(w) ? tfq_best_isa() : TFQ_ISA_REF;
}

tfq_isa tfq_best_isa(void) {
  tfq_isa forced = tfq_isa_from_env();
  if (forced != TFQ_ISA_AUTO && tfq_isa_available(forced)) return forced;
  for (size_t i = 0; i < sizeof tfq_isa_preference / sizeof tfq_isa_preference[0]; i++)
    if (tfq_isa_available(tfq_isa_preference[i])) return tfq_isa_preference[i];
  return TFQ_ISA_REF;
}
