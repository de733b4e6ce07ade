/*
 * tfq_bandwidth: the machine's single-core limits that a packed-weight kernel is held against.
 *   build/native/tfq_bandwidth [seconds-per-point [size-KiB ...]]
 *
 * read  <KiB> <GB/s>   sums a buffer of that size with 256-bit loads (AVX2; 64-bit scalar
 *                      loads without it), four independent
 *                      accumulators, over and over (best of several passes): L2-, L3- and
 *                      DRAM-sized buffers by default (512 KiB, 16 MiB, 512 MiB;
 *                      tools/benchmark.py passes L2/2, 4 x L2 and max(4 x L3, 256 MiB))
 * peak  <isa> <GMAC/s> a loop of independent int8 multiply-accumulates that never touches
 *                      memory: AVX-512 VNNI vpdpbusd on 512-bit vectors (64 MACs each) and
 *                      AVX2 vpmaddubsw + vpmaddwd + vpaddd (32 MACs per triple), each only if
 *                      cpuid reports it (GCC's __builtin_cpu_supports)
 *
 * Times are CPU time of the thread (CLOCK_THREAD_CPUTIME_ID), so another busy process on the
 * same core lengthens no measurement (it still shares caches and memory).
 * One line per figure, `name value...`, so tools/benchmark.py --kernels can parse it.
 * Not a test: numbers for BENCHMARKS.md.
 */
#define _POSIX_C_SOURCE 200112L /* clock_gettime under -std=c11 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#if defined(__x86_64__) || defined(_M_X64)
#include <immintrin.h>
#define BENCH_X86 1
#else
#define BENCH_X86 0
#endif

/* CPU time of this thread: on a shared machine, time spent waiting for a core is left out. */
static double now(void) {
  struct timespec t;
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t);
  return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

static volatile uint64_t sink; /* keeps the sums alive */

/* One pass over `words` 64-bit words: independent add chains (four 256-bit ones with AVX2). */
static uint64_t sum_pass_scalar(const uint64_t *p, size_t words) {
  uint64_t s0 = 0, s1 = 0, s2 = 0, s3 = 0;
  size_t i = 0;
  for (; i + 4 <= words; i += 4) {
    s0 += p[i];
    s1 += p[i + 1];
    s2 += p[i + 2];
    s3 += p[i + 3];
  }
  for (; i < words; i++) s0 += p[i];
  return s0 + s1 + s2 + s3;
}

#if BENCH_X86
__attribute__((target("avx2"))) static uint64_t sum_pass_avx2(const uint64_t *p, size_t words) {
  __m256i a0 = _mm256_setzero_si256(), a1 = a0, a2 = a0, a3 = a0;
  size_t i = 0;
  for (; i + 16 <= words; i += 16) {
    a0 = _mm256_add_epi64(a0, _mm256_load_si256((const __m256i *)(p + i)));
    a1 = _mm256_add_epi64(a1, _mm256_load_si256((const __m256i *)(p + i + 4)));
    a2 = _mm256_add_epi64(a2, _mm256_load_si256((const __m256i *)(p + i + 8)));
    a3 = _mm256_add_epi64(a3, _mm256_load_si256((const __m256i *)(p + i + 12)));
  }
  __m256i s = _mm256_add_epi64(_mm256_add_epi64(a0, a1), _mm256_add_epi64(a2, a3));
  uint64_t lanes[4];
  _mm256_storeu_si256((__m256i *)lanes, s);
  uint64_t t = lanes[0] + lanes[1] + lanes[2] + lanes[3];
  for (; i < words; i++) t += p[i];
  return t;
}
#endif

static uint64_t (*sum_pass)(const uint64_t *, size_t) = sum_pass_scalar;

/* Read bandwidth of a buffer of `bytes`: passes for about `seconds`, the best GB/s of
 * blocks of passes, each block at least ~10 ms long. */
static double read_gbs(size_t bytes, double seconds) {
  size_t words = bytes / 8;
  uint64_t *buf = aligned_alloc(64, words * 8);
  if (!buf) return -1.0;
  for (size_t i = 0; i < words; i++) buf[i] = i * 0x9E3779B97F4A7C15ull;
  uint64_t acc = sum_pass(buf, words); /* warm: pages touched, caches filled */
  long per_block = (long)(2e7 / (double)bytes) + 1; /* ~20 MB read per block */
  double best = 0.0, t_end = now() + seconds;
  do {
    double t0 = now();
    for (long r = 0; r < per_block; r++) acc += sum_pass(buf, words);
    double dt = now() - t0;
    double gbs = (double)bytes * (double)per_block / dt * 1e-9;
    if (gbs > best) best = gbs;
  } while (now() < t_end);
  sink = acc;
  free(buf);
  return best;
}

#if BENCH_X86
#define PEAK_CHAINS 12 /* independent accumulators: more than latency x throughput */

__attribute__((target("avx512f,avx512bw,avx512vnni"))) static double peak_vnni(double seconds) {
  __m512i acc[PEAK_CHAINS];
  for (int i = 0; i < PEAK_CHAINS; i++) acc[i] = _mm512_set1_epi32(i);
  __m512i a = _mm512_set1_epi8(3), b = _mm512_set1_epi8(-2);
  const long iters = 1000000;
  long total = 0;
  double t0 = now(), t = t0;
  do {
    for (long it = 0; it < iters; it++) {
      for (int i = 0; i < PEAK_CHAINS; i++) acc[i] = _mm512_dpbusd_epi32(acc[i], a, b);
      __asm__ volatile("" : "+v"(a), "+v"(b)); /* the inputs stay opaque: no hoisting */
    }
    total += iters;
    t = now();
  } while (t - t0 < seconds);
  __m512i s = acc[0];
  for (int i = 1; i < PEAK_CHAINS; i++) s = _mm512_add_epi32(s, acc[i]);
  sink = (uint64_t)_mm512_reduce_add_epi32(s);
  return (double)total * PEAK_CHAINS * 64.0 / (t - t0) * 1e-9;
}

__attribute__((target("avx2"))) static double peak_avx2(double seconds) {
  __m256i acc[PEAK_CHAINS];
  for (int i = 0; i < PEAK_CHAINS; i++) acc[i] = _mm256_set1_epi32(i);
  __m256i a = _mm256_set1_epi8(3), b = _mm256_set1_epi8(-2), ones = _mm256_set1_epi16(1);
  const long iters = 1000000;
  long total = 0;
  double t0 = now(), t = t0;
  do {
    for (long it = 0; it < iters; it++) {
      for (int i = 0; i < PEAK_CHAINS; i++)
        acc[i] = _mm256_add_epi32(acc[i], _mm256_madd_epi16(_mm256_maddubs_epi16(a, b), ones));
      __asm__ volatile("" : "+x"(a), "+x"(b));
    }
    total += iters;
    t = now();
  } while (t - t0 < seconds);
  __m256i s = acc[0];
  for (int i = 1; i < PEAK_CHAINS; i++) s = _mm256_add_epi32(s, acc[i]);
  int32_t lanes[8];
  _mm256_storeu_si256((__m256i *)lanes, s);
  sink = (uint64_t)(lanes[0] + lanes[7]);
  return (double)total * PEAK_CHAINS * 32.0 / (t - t0) * 1e-9;
}
#endif

int main(int argc, char **argv) {
  double seconds = argc > 1 ? atof(argv[1]) : 0.3;
  if (seconds <= 0.0) {
    fprintf(stderr, "usage: tfq_bandwidth [seconds-per-point [size-KiB ...]]\n");
    return 2;
  }
  static const size_t default_kib[] = {512, 16 * 1024, 512 * 1024};
#if BENCH_X86
  __builtin_cpu_init();
  if (__builtin_cpu_supports("avx2")) sum_pass = sum_pass_avx2;
#endif
  size_t nsizes = argc > 2 ? (size_t)(argc - 2) : 3;
  for (size_t i = 0; i < nsizes; i++) {
    size_t kib = argc > 2 ? (size_t)strtoull(argv[2 + i], NULL, 10) : default_kib[i];
    if (kib < 4) {
      fprintf(stderr, "size %s KiB: at least 4\n", argv[2 + i]);
      return 2;
    }
    double gbs = read_gbs(kib * 1024, seconds);
    if (gbs < 0) {
      fprintf(stderr, "cannot allocate %zu KiB\n", kib);
      return 1;
    }
    printf("read %zu %.2f\n", kib, gbs);
    fflush(stdout);
  }
#if BENCH_X86
  if (__builtin_cpu_supports("avx512vnni") && __builtin_cpu_supports("avx512bw"))
    printf("peak avx512vnni %.1f\n", peak_vnni(seconds));
  else
    printf("peak avx512vnni unavailable\n");
  if (__builtin_cpu_supports("avx2"))
    printf("peak avx2 %.1f\n", peak_avx2(seconds));
  else
    printf("peak avx2 unavailable\n");
#else
  printf("peak none unavailable\n");
#endif
  return 0;
}
