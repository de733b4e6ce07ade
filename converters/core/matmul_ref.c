/* Reference kernels: the numerics contract of kernels.h written as plain loops over the packed
 * format of format.h.  Every SIMD kernel is tested against these, bit for bit. */
#include "internal.h"

void tfq_matmul_q8_ref(const tfq_q8_job *job) {
  const tfq_packed_weights *w = job->w;
  for (int32_t i = 0; i < job->m; i++) {
    const int8_t *a = job->qa + (size_t)i * (size_t)job->kp;
    for (int32_t n = job->n_begin; n < job->n_end; n++) {
      const uint8_t *row = w->data + (size_t)n * job->row_bytes;
      float sum = 0.0f;
      for (int32_t g = 0; g < job->groups; g++) {
        int32_t k0 = g * job->span;
        int32_t k1 = k0 + job->span < w->k ? k0 + job->span : w->k;
        int32_t zp = tfq_zero_point_at(w, n, g);
        int32_t acc = 0;
        for (int32_t k = k0; k < k1; k++)
          acc += (int32_t)a[k] * (tfq_weight_value_ref(row, k, w->bits, w->symmetric) - zp);
        float term = tfq_scale_at(w, n, g) * (float)acc;
        sum = sum + term;
      }
      float out = job->sa[i] * sum;
      if (w->bias) out = out + w->bias[n];
      job->y[(size_t)i * job->y_stride + (size_t)n] = out;
    }
  }
}

void tfq_linear_f32_ref(const tfq_f32_job *job) {
  const tfq_packed_weights *w = job->w;
  int32_t span = w->group_size < w->k ? w->group_size : w->k;
  for (int32_t i = 0; i < job->m; i++) {
    const float *x = job->x + (size_t)i * job->x_stride;
    for (int32_t n = 0; n < w->n; n++) {
      const uint8_t *row = w->data + (size_t)n * job->row_bytes;
      float sum = 0.0f;
      for (int32_t g = 0; g < job->groups; g++) {
        int32_t k0 = g * span;
        int32_t k1 = k0 + span < w->k ? k0 + span : w->k;
        int32_t zp = tfq_zero_point_at(w, n, g);
        float part = 0.0f;
        for (int32_t k = k0; k < k1; k++)
          part += x[k] * (float)(tfq_weight_value_ref(row, k, w->bits, w->symmetric) - zp);
        sum += tfq_scale_at(w, n, g) * part;
      }
      if (w->bias) sum += w->bias[n];
      job->y[(size_t)i * job->y_stride + (size_t)n] = sum;
    }
  }
}

const tfq_kernel_table tfq_kernels_ref = {
    .isa = TFQ_ISA_REF,
    .interleaved = 0,
    .q8 = {{tfq_matmul_q8_ref, tfq_matmul_q8_ref}, {tfq_matmul_q8_ref, tfq_matmul_q8_ref}},
    .f32 = {{tfq_linear_f32_ref, tfq_linear_f32_ref}, {tfq_linear_f32_ref, tfq_linear_f32_ref}},
    .quantize = tfq_quantize_rows_q8_ref,
    .prepare = NULL,
};
