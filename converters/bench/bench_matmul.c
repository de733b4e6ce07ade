/*
 * tfq_bench: single-thread speed of tfq_linear_q8 (quantize + int8 matmul, the op's whole
 * cost) per ISA, and of the float-activation path at small M.
 *   build/native/tfq_bench [seconds-per-point [group-size]]
 * GOPS counts 2 * M * N * K operations per call.  Not a test: numbers for BENCHMARKS.md.
 *
 *   build/native/tfq_bench layers BITS GROUP SYM F16 M SECONDS KxN [KxN ...]
 * is the kernel alone as the LiteRT op runs it (tfq_repack copy where the CPU takes one,
 * TFQ_ISA_AUTO, tfq_linear_q8 with a bias) for one call of each listed layer in turn, each
 * with its own weights (a list longer than L2 streams its weights from memory): prints
 * `us <median microseconds per pass over the list>` (thread CPU time) and `isa <name> repacked <0|1>`.
 * tools/benchmark.py --kernels uses it to split our op's time from LiteRT's dispatch.
 * `layers-f32` times the float-activation path (tfq_linear_f32) the same way.
 */
#define _POSIX_C_SOURCE 200112L /* clock_gettime under -std=c11 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "tfq/kernels.h"

static double now(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

/* CPU time of this thread (the `layers` mode): time spent waiting for a core is left out. */
static double now_cpu(void) {
  struct timespec t;
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t);
  return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

typedef struct bench_layer {
  tfq_packed_weights w;
  uint8_t *data;
  uint16_t *scales;
} bench_layer;

static void make(bench_layer *b, int bits, int32_t k, int32_t n, int32_t g) {
  size_t rb = tfq_row_bytes(k, bits), groups = (size_t)tfq_num_groups(k, g);
  b->data = aligned_alloc(64, ((size_t)n * rb + 63) / 64 * 64);
  b->scales = aligned_alloc(64, ((size_t)n * groups * 2 + 63) / 64 * 64);
  uint32_t s = 12345;
  for (size_t i = 0; i < (size_t)n * rb; i++) {
    s = s * 1664525u + 1013904223u;
    b->data[i] = (uint8_t)(s >> 24);
  }
  for (size_t i = 0; i < (size_t)n * groups; i++) b->scales[i] = 0x2000; /* 2^-7 in f16 */
  tfq_packed_weights w = {.bits = bits, .symmetric = 1, .k = k, .n = n, .group_size = g,
                          .scale_is_f16 = 1, .data = b->data, .data_bytes = (size_t)n * rb,
                          .scales = b->scales, .scales_bytes = (size_t)n * groups * 2};
  b->w = w;
}

/* GOPS of one configuration, measured over about `seconds` (at least one call). */
static double gops(tfq_isa isa, int f32_path, const tfq_packed_weights *w, int32_t m,
                   double seconds) {
  size_t xc = (size_t)m * (size_t)w->k, yc = (size_t)m * (size_t)w->n;
  float *x = aligned_alloc(64, (xc * 4 + 63) / 64 * 64);
  float *y = aligned_alloc(64, (yc * 4 + 63) / 64 * 64);
  for (size_t i = 0; i < xc; i++) x[i] = (float)((int)(i * 7919 % 255) - 127) * 0.01f;
  size_t wsb = tfq_workspace_bytes(w, m);
  void *ws = aligned_alloc(64, (wsb + 63) / 64 * 64);
  long calls = 0;
  double t0 = now(), t = t0;
  do {
    int st = f32_path ? tfq_linear_f32(isa, w, x, xc, (size_t)w->k, m, y, yc, (size_t)w->n)
                      : tfq_linear_q8(isa, w, x, xc, (size_t)w->k, m, y, yc, (size_t)w->n, ws,
                                      wsb);
    if (st != TFQ_OK) {
      fprintf(stderr, "error: %s\n", tfq_status_str(st));
      exit(1);
    }
    calls++;
    t = now();
  } while (t - t0 < seconds);
  free(x);
  free(y);
  free(ws);
  return 2.0 * (double)m * (double)w->n * (double)w->k * (double)calls / (t - t0) * 1e-9;
}

static int cmp_double(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return (x > y) - (x < y);
}

/* `tfq_bench layers ...` (see the top of the file); f32_path: `layers-f32`. */
static int layers_main(int argc, char **argv, int f32_path) {
  if (argc < 9) {
    fprintf(stderr, "usage: tfq_bench layers|layers-f32 BITS GROUP SYM F16 M SECONDS KxN [KxN ...]\n");
    return 2;
  }
  int bits = atoi(argv[2]), group = atoi(argv[3]), sym = atoi(argv[4]), f16 = atoi(argv[5]);
  int32_t m = atoi(argv[6]);
  double seconds = atof(argv[7]);
  int nl = argc - 8;
  if ((bits != 4 && bits != 2) || group < 1 || m < 1 || seconds <= 0.0) {
    fprintf(stderr, "tfq_bench layers: bad arguments\n");
    return 2;
  }
  tfq_packed_weights *w = calloc((size_t)nl, sizeof *w);
  tfq_arena *arenas = NULL;  /* the repacked copies, kept until exit */
  int32_t kmax = 0, nmax = 0;
  size_t wsmax = 0;
  uint32_t s = 12345;
  for (int l = 0; l < nl; l++) {
    int k = 0, n = 0;
    if (sscanf(argv[8 + l], "%dx%d", &k, &n) != 2 || k < 1 || n < 1) {
      fprintf(stderr, "tfq_bench layers: %s is not KxN\n", argv[8 + l]);
      return 2;
    }
    size_t rb = tfq_row_bytes(k, bits), groups = (size_t)tfq_num_groups(k, group);
    size_t ssz = f16 ? 2 : 4, db = (size_t)n * rb, sb = (size_t)n * groups * ssz;
    uint8_t *data = aligned_alloc(64, (db + 63) / 64 * 64);
    uint8_t *scales = aligned_alloc(64, (sb + 63) / 64 * 64);
    uint8_t *zp = sym ? NULL : aligned_alloc(64, ((size_t)n * groups + 63) / 64 * 64);
    float *bias = aligned_alloc(64, ((size_t)n * 4 + 63) / 64 * 64);
    for (size_t i = 0; i < db; i++) {
      s = s * 1664525u + 1013904223u;
      data[i] = (uint8_t)(s >> 24);
    }
    for (size_t i = 0; i < (size_t)n * groups; i++) {
      if (f16)
        ((uint16_t *)scales)[i] = 0x2000; /* 2^-7 */
      else
        ((float *)scales)[i] = 0.0078125f;
      if (zp) zp[i] = (uint8_t)(1u << (bits - 1));
    }
    for (int i = 0; i < n; i++) bias[i] = 0.01f * (float)(i % 7);
    tfq_packed_weights x = {.bits = bits, .symmetric = sym, .k = k, .n = n, .group_size = group,
                            .scale_is_f16 = f16, .data = data, .data_bytes = db,
                            .scales = scales, .scales_bytes = sb, .zero_points = zp,
                            .zero_points_bytes = zp ? (size_t)n * groups : 0, .bias = bias,
                            .bias_count = (size_t)n};
    size_t rp = tfq_repacked_bytes(&x);
    if (rp) {
      int in_arena;  /* as the LiteRT op allocates its copies (huge pages on Linux) */
      void *copy = tfq_arena_alloc(&arenas, rp, &in_arena);
      if (tfq_repack(&x, copy, rp) != TFQ_OK) {
        fprintf(stderr, "tfq_repack failed\n");
        return 1;
      }
      x.repacked = copy;
      x.repacked_bytes = rp;
    }
    w[l] = x;
    if (k > kmax) kmax = k;
    if (n > nmax) nmax = n;
    size_t wsb = tfq_workspace_bytes(&x, m);
    if (wsb > wsmax) wsmax = wsb;
  }
  size_t xc = (size_t)m * (size_t)kmax, yc = (size_t)m * (size_t)nmax;
  float *x = aligned_alloc(64, (xc * 4 + 63) / 64 * 64);
  float *y = aligned_alloc(64, (yc * 4 + 63) / 64 * 64);
  void *ws = aligned_alloc(64, (wsmax + 63) / 64 * 64);
  for (size_t i = 0; i < xc; i++) x[i] = (float)((int)(i * 7919 % 255) - 127) * 0.01f;
  enum { REPEATS = 5 };
  double per_call = 0.0, times[REPEATS];
  long calls = 1;
  for (int r = -1; r < REPEATS; r++) { /* r = -1: warm-up and calibration */
    double t0 = now_cpu();
    for (long c = 0; c < calls; c++)
      for (int l = 0; l < nl; l++) {
        size_t xn = (size_t)m * (size_t)w[l].k, yn = (size_t)m * (size_t)w[l].n;
        int st = f32_path ? tfq_linear_f32(TFQ_ISA_AUTO, &w[l], x, xn, (size_t)w[l].k, m, y, yn,
                                           (size_t)w[l].n)
                          : tfq_linear_q8(TFQ_ISA_AUTO, &w[l], x, xn, (size_t)w[l].k, m, y, yn,
                                          (size_t)w[l].n, ws, wsmax);
        if (st != TFQ_OK) {
          fprintf(stderr, "error: %s\n", tfq_status_str(st));
          return 1;
        }
      }
    double dt = now_cpu() - t0;
    if (r < 0) {
      per_call = dt;
      calls = (long)(seconds / REPEATS / (per_call > 1e-7 ? per_call : 1e-7)) + 1;
      continue;
    }
    times[r] = dt / (double)calls;
  }
  qsort(times, REPEATS, sizeof times[0], cmp_double);
  printf("us %.3f\n", 1e6 * times[REPEATS / 2]);
  printf("isa %s repacked %d\n", tfq_isa_name(tfq_select_isa(&w[0], m)), w[0].repacked != NULL);
  return 0;
}

int main(int argc, char **argv) {
  if (argc > 1 && strcmp(argv[1], "layers") == 0) return layers_main(argc, argv, 0);
  if (argc > 1 && strcmp(argv[1], "layers-f32") == 0) return layers_main(argc, argv, 1);
  double seconds = argc > 1 ? atof(argv[1]) : 0.3;
  int32_t group = argc > 2 ? atoi(argv[2]) : 128;
  if (seconds <= 0.0 || group < 1) {
    fprintf(stderr, "usage: tfq_bench [seconds-per-point [group-size]]\n");
    return 2;
  }
  static const int32_t sizes[] = {1024, 4096};
  static const int32_t ms[] = {1, 4, 16, 64};
  printf("single thread, tfq_linear_q8 (quantize + matmul), symmetric, G = %d, f16 scales; "
         "GOPS\n", group);
  printf("%-5s %5s %4s", "bits", "K=N", "M");
  for (int isa = TFQ_ISA_REF; isa < TFQ_ISA_COUNT; isa++)
    if (tfq_isa_available((tfq_isa)isa)) printf(" %12s", tfq_isa_name((tfq_isa)isa));
  printf(" %12s %12s\n", "f32-ref", "f32-best");
  for (int bits = 4; bits >= 2; bits -= 2) {
    for (size_t si = 0; si < 2; si++) {
      bench_layer b;
      make(&b, bits, sizes[si], sizes[si], group);
      for (size_t mi = 0; mi < 4; mi++) {
        int32_t m = ms[mi];
        printf("int%-2d %5d %4d", bits, sizes[si], m);
        for (int isa = TFQ_ISA_REF; isa < TFQ_ISA_COUNT; isa++) {
          if (!tfq_isa_available((tfq_isa)isa)) continue;
          /* The reference is slow: a shorter window is still many calls at small M. */
          double window = isa == TFQ_ISA_REF ? seconds / 3 : seconds;
          printf(" %12.2f", gops((tfq_isa)isa, 0, &b.w, m, window));
          fflush(stdout);
        }
        if (m <= 4)
          printf(" %12.2f %12.2f", gops(TFQ_ISA_REF, 1, &b.w, m, seconds / 3),
                 gops(TFQ_ISA_AUTO, 1, &b.w, m, seconds));
        printf("\n");
      }
      free(b.data);
      free(b.scales);
    }
  }
  return 0;
}
