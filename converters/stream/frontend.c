/*
 * Log-mel frontend equal to tfq_asr.frontend.log_mel, incremental.
 *
 * Frame i covers samples [i*hop, i*hop + win): x * periodic Hann in float32 (as NumPy
 * multiplies the float32 frame by the float32 window), then in double precision |rfft(n_fft)|^2,
 * the Slaney mel filterbank of librosa.filters.mel (float32 weights, built here the way
 * librosa builds them: bit-identical) and log(mel + log_floor), rounded to float32 once.
 * log_mel does the same in float64, so the frames agree bit for bit unless two double results
 * straddle a float32 rounding boundary (odds about 1e-8 per value).
 *
 * The transform is a mixed-radix FFT in double (decimation in time over the prime factors of
 * n_fft, twiddles from one table of cos/sin(2 pi j / n_fft)); an even n_fft is transformed as
 * a complex signal of half the length (even samples real, odd ones imaginary) and split into
 * the n_fft/2 + 1 bins afterwards.  n_fft = 400: a 200-point transform, 200 * (2+2+2+5+5) =
 * 3,200 complex multiply-adds per frame; a direct DFT of the 201 bins with precomputed tables
 * costs 80,400 real multiply-add pairs, about twenty times more for the same result.  Any n_fft works (a large prime
 * factor p costs O(n_fft * p)).  The mel projection visits each filter's non-zero band only.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tfq/stream.h"

#define MAX_FACTORS 32
#define PI 3.14159265358979323846

struct tfq_frontend {
  tfq_frontend_params p;
  int n_bins;
  float *window;      /* [win] */
  float *basis;       /* [n_mels, n_bins] */
  int *band;          /* [n_mels][2]: the bins [begin, end) where a filter is non-zero */
  double *cos_tab, *sin_tab;  /* [n_fft]: cos/sin(2 pi j / n_fft) */
  int factors[MAX_FACTORS];
  int n_factors;
  double *re, *im, *scratch_re, *scratch_im;  /* [n_fft] */
  double *power;      /* [n_bins] */
  float *buf;         /* [win]: samples of the frame being filled */
  size_t have;        /* samples in buf */
};

void tfq_frontend_default_params(tfq_frontend_params *p) {
  p->sample_rate = 16000;
  p->n_mels = 80;
  p->win = 400;
  p->hop = 160;
  p->n_fft = 400;
  p->fmin = 20.0;
  p->fmax = 7600.0;
  p->log_floor = 1e-6;
}

/* ---- Slaney mel scale (librosa.hz_to_mel / mel_to_hz with htk=False) ------------------- */
static const double F_SP = 200.0 / 3.0, MIN_LOG_HZ = 1000.0;

static double hz_to_mel(double f) {
  double min_log_mel = MIN_LOG_HZ / F_SP, logstep = log(6.4) / 27.0;
  return f >= MIN_LOG_HZ ? min_log_mel + log(f / MIN_LOG_HZ) / logstep : f / F_SP;
}

static double mel_to_hz(double m) {
  double min_log_mel = MIN_LOG_HZ / F_SP, logstep = log(6.4) / 27.0;
  return m >= min_log_mel ? MIN_LOG_HZ * exp(logstep * (m - min_log_mel)) : F_SP * m;
}

/* librosa.filters.mel(sr, n_fft, n_mels, fmin, fmax), norm="slaney", float32: the triangle
 * weights are stored as float32, then scaled by 2 / (f[i+2] - f[i]) in double and rounded. */
static int mel_basis(tfq_frontend *f) {
  const tfq_frontend_params *p = &f->p;
  int m = p->n_mels, nb = f->n_bins;
  double *mel_f = malloc(sizeof(double) * (size_t)(m + 2));
  if (!mel_f) return 0;
  double lo = hz_to_mel(p->fmin), hi = hz_to_mel(p->fmax);
  double step = (hi - lo) / (double)(m + 1);   /* np.linspace(lo, hi, m + 2) */
  for (int i = 0; i < m + 2; i++) mel_f[i] = mel_to_hz(i == m + 1 ? hi : lo + (double)i * step);
  double bin_hz = 1.0 / ((double)p->n_fft * (1.0 / (double)p->sample_rate));  /* np.fft.rfftfreq */
  for (int i = 0; i < m; i++) {
    double d0 = mel_f[i + 1] - mel_f[i], d1 = mel_f[i + 2] - mel_f[i + 1];
    double enorm = 2.0 / (mel_f[i + 2] - mel_f[i]);
    for (int k = 0; k < nb; k++) {
      double hz = (double)k * bin_hz;
      double lower = -(mel_f[i] - hz) / d0, upper = (mel_f[i + 2] - hz) / d1;
      double w = fmax(0.0, fmin(lower, upper));
      f->basis[(size_t)i * (size_t)nb + (size_t)k] = (float)((double)(float)w * enorm);
    }
  }
  free(mel_f);
  for (int i = 0; i < m; i++) {
    const float *w = f->basis + (size_t)i * (size_t)nb;
    int b = 0, e = nb;
    while (b < nb && w[b] == 0.0f) b++;
    while (e > b && w[e - 1] == 0.0f) e--;
    f->band[2 * i] = b;
    f->band[2 * i + 1] = e;
  }
  return 1;
}

/* ---- FFT ---------------------------------------------------------------------------------- */
/* out[0..n) = DFT of in[0], in[stride], ... (n values); n = product of factors[level..]. */
static void fft_rec(const tfq_frontend *f, const double *in_re, const double *in_im,
                    size_t stride, double *out_re, double *out_im, size_t n, int level,
                    double *tmp_re, double *tmp_im) {
  if (n == 1) { out_re[0] = in_re[0]; out_im[0] = in_im[0]; return; }
  size_t p = (size_t)f->factors[level], m = n / p, N = (size_t)f->p.n_fft;
  for (size_t r = 0; r < p; r++) {  /* sub-transforms of the p decimated sequences */
    if (m == 1) {  /* a transform of length 1 is a copy: no call per sample */
      out_re[r] = in_re[r * stride];
      out_im[r] = in_im[r * stride];
    } else {
      fft_rec(f, in_re + r * stride, in_im + r * stride, stride * p, out_re + r * m,
              out_im + r * m, m, level + 1, tmp_re, tmp_im);
    }
  }
  size_t tw = N / n, wp = N / p;  /* W_n^j = W_N^(j tw), W_p^j = W_N^(j wp) */
  for (size_t k = 0; k < m; k++) {
    tmp_re[0] = out_re[k];
    tmp_im[0] = out_im[k];
    for (size_t r = 1, j = k * tw; r < p; r++, j += k * tw) {  /* t_r = W_n^(r k) sub_r[k]; r k < n */
      double c = f->cos_tab[j], s = -f->sin_tab[j];
      double a = out_re[r * m + k], b = out_im[r * m + k];
      tmp_re[r] = a * c - b * s;
      tmp_im[r] = a * s + b * c;
    }
    if (p == 2) {
      out_re[k] = tmp_re[0] + tmp_re[1];
      out_im[k] = tmp_im[0] + tmp_im[1];
      out_re[m + k] = tmp_re[0] - tmp_re[1];
      out_im[m + k] = tmp_im[0] - tmp_im[1];
      continue;
    }
    if (p == 5) {  /* the 5-point DFT with its symmetries: 4 real constants, no table walk */
      double c1 = f->cos_tab[wp], c2 = f->cos_tab[2 * wp], s1 = f->sin_tab[wp], s2 = f->sin_tab[2 * wp];
      double a1r = tmp_re[1] + tmp_re[4], a1i = tmp_im[1] + tmp_im[4];
      double b1r = tmp_re[1] - tmp_re[4], b1i = tmp_im[1] - tmp_im[4];
      double a2r = tmp_re[2] + tmp_re[3], a2i = tmp_im[2] + tmp_im[3];
      double b2r = tmp_re[2] - tmp_re[3], b2i = tmp_im[2] - tmp_im[3];
      double A1r = tmp_re[0] + c1 * a1r + c2 * a2r, A1i = tmp_im[0] + c1 * a1i + c2 * a2i;
      double A2r = tmp_re[0] + c2 * a1r + c1 * a2r, A2i = tmp_im[0] + c2 * a1i + c1 * a2i;
      double B1r = s1 * b1r + s2 * b2r, B1i = s1 * b1i + s2 * b2i;  /* X1 = A1 - i B1, X4 = A1 + i B1 */
      double B2r = s2 * b1r - s1 * b2r, B2i = s2 * b1i - s1 * b2i;  /* X2 = A2 - i B2, X3 = A2 + i B2 */
      out_re[k] = tmp_re[0] + a1r + a2r;
      out_im[k] = tmp_im[0] + a1i + a2i;
      out_re[m + k] = A1r + B1i, out_im[m + k] = A1i - B1r;
      out_re[2 * m + k] = A2r + B2i, out_im[2 * m + k] = A2i - B2r;
      out_re[3 * m + k] = A2r - B2i, out_im[3 * m + k] = A2i + B2r;
      out_re[4 * m + k] = A1r - B1i, out_im[4 * m + k] = A1i + B1r;
      continue;
    }
    for (size_t q = 0; q < p; q++) {  /* out[k + q m] = sum_r t_r W_p^(r q) */
      double sr = tmp_re[0], si = tmp_im[0];
      for (size_t r = 1, j = q * wp; r < p; r++) {
        double c = f->cos_tab[j], s = -f->sin_tab[j];
        sr += tmp_re[r] * c - tmp_im[r] * s;
        si += tmp_re[r] * s + tmp_im[r] * c;
        j += q * wp;
        if (j >= N) j -= N;
      }
      out_re[q * m + k] = sr;
      out_im[q * m + k] = si;
    }
  }
}

/* ---- Lifecycle ---------------------------------------------------------------------------- */
tfq_frontend *tfq_frontend_create(const tfq_frontend_params *p, char *err, size_t err_size) {
  const char *why = NULL;
  if (!p) why = "no parameters";
  else if (p->sample_rate < 1000 || p->sample_rate > 192000) why = "sample_rate outside 1000..192000";
  else if (p->n_mels < 1 || p->n_mels > 512) why = "n_mels outside 1..512";
  else if (p->n_fft < 2 || p->n_fft > 16384) why = "n_fft outside 2..16384";
  else if (p->win < 2 || p->win > p->n_fft) why = "win outside 2..n_fft";
  else if (p->hop < 1 || p->hop > p->win) why = "hop outside 1..win";
  else if (!(p->fmin >= 0.0) || !(p->fmax > p->fmin) || !(p->fmax <= p->sample_rate / 2.0))
    why = "need 0 <= fmin < fmax <= sample_rate / 2";
  else if (!(p->log_floor > 0.0) || !(p->log_floor < 1.0)) why = "log_floor outside (0, 1)";
  if (why) {
    if (err && err_size) snprintf(err, err_size, "frontend: %s", why);
    return NULL;
  }
  tfq_frontend *f = calloc(1, sizeof *f);
  if (!f) goto oom;
  f->p = *p;
  f->n_bins = p->n_fft / 2 + 1;
  size_t n = (size_t)p->n_fft, nb = (size_t)f->n_bins;
  f->window = malloc(sizeof(float) * (size_t)p->win);
  f->basis = malloc(sizeof(float) * nb * (size_t)p->n_mels);
  f->band = malloc(sizeof(int) * 2 * (size_t)p->n_mels);
  f->cos_tab = malloc(sizeof(double) * n);
  f->sin_tab = malloc(sizeof(double) * n);
  f->re = malloc(sizeof(double) * n);
  f->im = malloc(sizeof(double) * n);
  f->scratch_re = malloc(sizeof(double) * n);
  f->scratch_im = malloc(sizeof(double) * n);
  f->power = malloc(sizeof(double) * nb);
  f->buf = malloc(sizeof(float) * (size_t)p->win);
  if (!f->window || !f->basis || !f->band || !f->cos_tab || !f->sin_tab || !f->re || !f->im ||
      !f->scratch_re || !f->scratch_im || !f->power || !f->buf)
    goto oom;
  /* scipy.signal.get_window("hann", win, fftbins=True): 0.5 - 0.5 cos(2 pi i / win), float32 */
  for (int i = 0; i < p->win; i++)
    f->window[i] = (float)(0.5 - 0.5 * cos(2.0 * PI * (double)i / (double)p->win));
  for (size_t j = 0; j < n; j++) {
    f->cos_tab[j] = cos(2.0 * PI * (double)j / (double)n);
    f->sin_tab[j] = sin(2.0 * PI * (double)j / (double)n);
  }
  int rest = p->n_fft;
  for (int d = 2; rest > 1; d++)
    while (rest % d == 0 && f->n_factors < MAX_FACTORS) { f->factors[f->n_factors++] = d; rest /= d; }
  if (!mel_basis(f)) goto oom;
  return f;
oom:
  tfq_frontend_destroy(f);
  if (err && err_size) snprintf(err, err_size, "frontend: out of memory");
  return NULL;
}

void tfq_frontend_destroy(tfq_frontend *f) {
  if (!f) return;
  free(f->window); free(f->basis); free(f->band); free(f->cos_tab); free(f->sin_tab); free(f->re); free(f->im);
  free(f->scratch_re); free(f->scratch_im); free(f->power); free(f->buf);
  free(f);
}

void tfq_frontend_reset(tfq_frontend *f) {
  if (f) f->have = 0;
}

const float *tfq_frontend_mel_basis(const tfq_frontend *f, int *n_mels, int *n_bins) {
  if (!f) return NULL;
  if (n_mels) *n_mels = f->p.n_mels;
  if (n_bins) *n_bins = f->n_bins;
  return f->basis;
}

size_t tfq_frontend_pending_frames(const tfq_frontend *f, size_t n) {
  size_t win = (size_t)f->p.win, hop = (size_t)f->p.hop, total = f->have + n;
  return total < win ? 0 : 1 + (total - win) / hop;
}

/* One frame of f->buf (full) into out[n_mels]. */
static void compute_frame(tfq_frontend *f, float *out) {
  size_t n = (size_t)f->p.n_fft, win = (size_t)f->p.win, nb = (size_t)f->n_bins;
  /* The combination step of a radix-p stage needs p scratch values per output column. */
  double t_re[64], t_im[64];
  double *tr = t_re, *ti = t_im, *heap = NULL;
  int pmax = 0;
  for (int i = 0; i < f->n_factors; i++) if (f->factors[i] > pmax) pmax = f->factors[i];
  if (pmax > 64) {
    heap = malloc(sizeof(double) * 2 * (size_t)pmax);
    if (!heap) {  /* cannot happen in practice; a NaN frame makes the failure visible */
      for (int m = 0; m < f->p.n_mels; m++) out[m] = NAN;
      return;
    }
    tr = heap;
    ti = heap + pmax;
  }
  if (n % 2 == 0) {
    /* A real signal of even length n as the complex signal z[j] = x[2j] + i x[2j+1] of
     * length h = n/2: one transform of half the length, then X[k] for k = 0..h from Z[k] and
     * Z[h-k] (factors[0] is 2, so factors[1..] factor h). */
    size_t h = n / 2;
    for (size_t j = 0; j < h; j++) {  /* rfft zero-pads a frame shorter than n_fft */
      size_t a = 2 * j, b = a + 1;
      f->scratch_re[j] = a < win ? (double)(f->buf[a] * f->window[a]) : 0.0;
      f->scratch_im[j] = b < win ? (double)(f->buf[b] * f->window[b]) : 0.0;
    }
    if (h == 1) {
      f->re[0] = f->scratch_re[0];
      f->im[0] = f->scratch_im[0];
    } else {
      fft_rec(f, f->scratch_re, f->scratch_im, 1, f->re, f->im, h, 1, tr, ti);
    }
    for (size_t k = 0; k < nb; k++) {
      size_t k1 = k == h ? 0 : k, k2 = k == 0 ? 0 : h - k;
      double zr = f->re[k1], zi = f->im[k1], cr = f->re[k2], ci = -f->im[k2];  /* Z[k], conj Z[h-k] */
      double er = 0.5 * (zr + cr), ei = 0.5 * (zi + ci);  /* transform of the even samples */
      double or_ = 0.5 * (zi - ci), oi = -0.5 * (zr - cr);  /* of the odd ones: (Z - conj)/(2i) */
      double c = f->cos_tab[k], s = f->sin_tab[k];        /* W_n^k = c - i s */
      double xr = er + c * or_ + s * oi, xi = ei + c * oi - s * or_;
      f->power[k] = xr * xr + xi * xi;
    }
  } else {
    for (size_t i = 0; i < n; i++) {
      f->scratch_re[i] = i < win ? (double)(f->buf[i] * f->window[i]) : 0.0;
      f->scratch_im[i] = 0.0;
    }
    fft_rec(f, f->scratch_re, f->scratch_im, 1, f->re, f->im, n, 0, tr, ti);
    for (size_t k = 0; k < nb; k++) f->power[k] = f->re[k] * f->re[k] + f->im[k] * f->im[k];
  }
  free(heap);
  for (int m = 0; m < f->p.n_mels; m++) {
    const float *w = f->basis + (size_t)m * nb;
    double acc = 0.0;  /* the zeros outside the band add nothing */
    for (int k = f->band[2 * m]; k < f->band[2 * m + 1]; k++) acc += f->power[k] * (double)w[k];
    out[m] = (float)log(acc + f->p.log_floor);
  }
}

/* For the stream: consumes samples until one frame completes (then *got = 1 and out holds it)
 * or all n are used; returns the number consumed.  Samples must be finite. */
size_t tfq_frontend_feed_one(tfq_frontend *f, const float *samples, size_t n, float *out,
                             int *got) {
  size_t win = (size_t)f->p.win, hop = (size_t)f->p.hop;
  size_t take = win - f->have < n ? win - f->have : n;
  memcpy(f->buf + f->have, samples, take * sizeof(float));
  f->have += take;
  *got = 0;
  if (f->have == win) {
    compute_frame(f, out);
    memmove(f->buf, f->buf + hop, (win - hop) * sizeof(float));
    f->have = win - hop;
    *got = 1;
  }
  return take;
}

long tfq_frontend_accept(tfq_frontend *f, const float *samples, size_t n, float *out,
                         size_t out_frames) {
  if (!f || (n && !samples)) return -1;
  size_t frames = tfq_frontend_pending_frames(f, n);
  if (frames > out_frames || (frames && !out)) return -1;
  for (size_t i = 0; i < n; i++)
    if (!isfinite(samples[i])) return -1;
  size_t done = 0;
  while (n > 0) {
    int got;
    size_t take = tfq_frontend_feed_one(f, samples, n, out + done * (size_t)f->p.n_mels, &got);
    samples += take;
    n -= take;
    done += (size_t)got;
  }
  return (long)done;
}
