/* The float-activation path in plain C for instruction sets without a kernel of their own
 * (NEON): the reference's sums, arranged so that the compiler vectorizes them.  A block of 16
 * channels' weights over a chunk of inputs is decoded to floats once and used by up to 8 rows,
 * and the innermost loop runs over the 16 channels.  Each output is still the reference's
 * arithmetic in the reference's order: part = part + x[k] * (field - zp) over its group in k
 * order, sum = sum + scale * part per group, then the bias (kernel_test checks it against the
 * reference as every path).  The reference decodes every weight once per row and multiplies
 * one channel at a time; on aarch64 that left the subsampling convolution (K = 9, 300+ rows a
 * step) and the LSTM kernels on scalar code. */
#include "internal.h"

#define TFQ_FB_CH 16   /* channels per block: the vectorized loop */
#define TFQ_FB_ROWS 8  /* rows that share one decoded chunk */
#define TFQ_FB_K 256   /* inputs per decoded chunk: 16 KB of floats */

/* wf[kk][l] = field - zero point of input c0 + kk (all in group g) of channel n0 + l, 0 past the
 * last channel.  Each channel's 2^bits values come from a small table: the same floats as the
 * reference's sign extension, subtraction and conversion, without them per weight. */
static void tfq_fb_decode(const tfq_f32_job *job, int32_t n0, int32_t nb, int32_t g, int32_t c0,
                          int32_t kn, float wf[][TFQ_FB_CH]) {
  const tfq_packed_weights *w = job->w;
  const int32_t values = 1 << w->bits;
  for (int32_t l = 0; l < TFQ_FB_CH; l++) {
    if (l >= nb) {
      for (int32_t kk = 0; kk < kn; kk++) wf[kk][l] = 0.0f;
      continue;
    }
    const uint8_t *row = w->data + (size_t)(n0 + l) * job->row_bytes;
    const int32_t zp = tfq_zero_point_at(w, n0 + l, g);
    float lut[16];
    for (int32_t v = 0; v < values; v++)
      lut[v] = (float)(tfq_field_value(v, w->bits, w->symmetric) - zp);
    /* Whole bytes from c0 where it starts one (always: the groups the SIMD tables take start at
     * multiples of 32), then the fields left one by one. */
    const int32_t per_byte = 8 / w->bits, whole_bytes = c0 % per_byte ? 0 : kn / per_byte;
    const uint8_t *bytes = row + c0 / per_byte;
    if (w->bits == 4)
      for (int32_t b = 0; b < whole_bytes; b++) {
        wf[2 * b][l] = lut[bytes[b] & 0xF];
        wf[2 * b + 1][l] = lut[bytes[b] >> 4];
      }
    else
      for (int32_t b = 0; b < whole_bytes; b++) {
        wf[4 * b][l] = lut[bytes[b] & 0x3];
        wf[4 * b + 1][l] = lut[(bytes[b] >> 2) & 0x3];
        wf[4 * b + 2][l] = lut[(bytes[b] >> 4) & 0x3];
        wf[4 * b + 3][l] = lut[bytes[b] >> 6];
      }
    for (int32_t kk = whole_bytes * per_byte; kk < kn; kk++)  /* the last byte's first fields */
      wf[kk][l] = (float)(tfq_weight_value_ref(row, c0 + kk, w->bits, w->symmetric) - zp);
  }
}

void tfq_linear_f32_blocked(const tfq_f32_job *job) {
  const tfq_packed_weights *w = job->w;
  const int32_t span = w->group_size < w->k ? w->group_size : w->k;
  /* A K that fits one chunk is decoded once per channel block for every row tile. */
  const int whole = w->k <= TFQ_FB_K;
  float wf[TFQ_FB_K][TFQ_FB_CH];
  for (int32_t n0 = 0; n0 < w->n; n0 += TFQ_FB_CH) {
    const int32_t nb = w->n - n0 < TFQ_FB_CH ? w->n - n0 : TFQ_FB_CH;
    for (int32_t g = 0; whole && g < job->groups; g++) {
      const int32_t k0 = g * span, k1 = k0 + span < w->k ? k0 + span : w->k;
      tfq_fb_decode(job, n0, nb, g, k0, k1 - k0, wf + k0);
    }
    for (int32_t i0 = 0; i0 < job->m; i0 += TFQ_FB_ROWS) {
      const int32_t mr = job->m - i0 < TFQ_FB_ROWS ? job->m - i0 : TFQ_FB_ROWS;
      float sum[TFQ_FB_ROWS][TFQ_FB_CH] = {{0.0f}};
      for (int32_t g = 0; g < job->groups; g++) {
        const int32_t k0 = g * span, k1 = k0 + span < w->k ? k0 + span : w->k;
        float part[TFQ_FB_ROWS][TFQ_FB_CH] = {{0.0f}};
        for (int32_t c0 = k0; c0 < k1; c0 += TFQ_FB_K) {
          const int32_t kn = k1 - c0 < TFQ_FB_K ? k1 - c0 : TFQ_FB_K;
          if (!whole) tfq_fb_decode(job, n0, nb, g, c0, kn, wf);
          const float(*chunk)[TFQ_FB_CH] = whole ? wf + c0 : wf;
          for (int32_t r = 0; r < mr; r++) {
            const float *x = job->x + (size_t)(i0 + r) * job->x_stride + (size_t)c0;
            for (int32_t kk = 0; kk < kn; kk++) {
              const float xv = x[kk];
              for (int32_t l = 0; l < TFQ_FB_CH; l++) part[r][l] += xv * chunk[kk][l];
            }
          }
        }
        for (int32_t r = 0; r < mr; r++)
          for (int32_t l = 0; l < nb; l++) sum[r][l] += tfq_scale_at(w, n0 + l, g) * part[r][l];
      }
      for (int32_t r = 0; r < mr; r++) {
        float *y = job->y + (size_t)(i0 + r) * job->y_stride + (size_t)n0;
        for (int32_t l = 0; l < nb; l++) y[l] = w->bias ? sum[r][l] + w->bias[n0 + l] : sum[r][l];
      }
    }
  }
}
