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
 * The transform is a mixed-radix FFT in double, planned once in tfq_frontend_create.  An even
 * n_fft is transformed as a complex signal of half the length (even samples real, odd ones
 * imaginary) and split into the n_fft/2 + 1 bins afterwards; an odd one as a complex signal
 * with zero imaginary parts.  The complex transform is an iterative Stockham (self-sorting)
 * decimation in time, one pass per factor: radix 4 while 4 divides, then 2, 3, 5 and any other
 * prime p by a generic pass of cost O(n_fft * p), so every n_fft in 2..16384 works.  Each pass
 * reads and writes consecutive elements of split real/imaginary arrays and takes its twiddles
 * from a table of its own, in the order it uses them (computed with cos/sin, no recurrence:
 * the power spectrum is a few 1e-15 of the largest bin off a long-double DFT), so the
 * compiler vectorizes its inner loop (two doubles with SSE2 or NEON) and a frame allocates
 * nothing.  n_fft = 400: a 200-point transform in passes of 4, 2, 5 and 5, about 7,600 flops
 * of which 420 complex twiddle multiplications; 0.6 us on one Zen 4 core (the recursive FFT this
 * replaced, with strided reads and modular table walks, took 4 us; a direct DFT of the 201 bins
 * would cost 80,400 real multiply-add pairs).  A whole frame takes about 1.5 us, a quarter of
 * it the 80 calls to log.  The mel projection visits each filter's non-zero band only, its
 * weights stored once more in double, back to back.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tfq/stream.h"

/* The FFT passes and the frame's other loops get an AVX2 clone (TFQ_AVX2_CLONE, kernels.h):
 * four doubles a vector instead of SSE2's two, the same operations on each element, so the
 * frames agree bit for bit; the frontend took 10% of a conformer-ctc-xs step at 160 ms, 0.3 us
 * per frame less. */

#define MAX_STAGES 32  /* 16384 has 14 prime factors */
#define PI 3.14159265358979323846

/* One pass of the FFT (see fft_run). */
typedef struct fft_stage fft_stage;
typedef void (*fft_pass)(const fft_stage *st, const double *restrict xr,
                         const double *restrict xi, double *restrict yr, double *restrict yi);
struct fft_stage {
  fft_pass run;           /* pass2 .. pass5 or pass_odd */
  size_t radix;           /* 2, 3, 4, 5 or an odd prime */
  size_t l, m;            /* merges m * radix transforms of length l into m of length l radix */
  const double *wr, *wi;  /* [(radix-1) l]: the twiddles W_(l radix)^(r b) at (r-1) l + b */
  const double *cs;       /* pass_odd: cos(2 pi j / radix) [radix], then sin */
  double *tmp;            /* pass_odd: [4 radix] scratch */
};

struct tfq_frontend {
  tfq_frontend_params p;
  int n_bins;
  float *window;      /* [win] */
  float *basis;       /* [n_mels, n_bins] */
  int *band;          /* [n_mels][2]: the bins [begin, end) where a filter is non-zero */
  double *band_w;     /* the weights of those bands in double, filter after filter */
  /* The FFT plan: a complex transform of fft_n = n_fft/2 (even n_fft) or n_fft points. */
  size_t fft_n;
  int n_stages;
  fft_stage stage[MAX_STAGES];
  double *fft_tw;     /* every pass's twiddles (and tables, scratch), in the order of use */
  double *fft_re[2], *fft_im[2];  /* [fft_n + 1]: the passes go back and forth between them */
  double *split_c, *split_s;      /* even n_fft: cos/sin(2 pi k / n_fft), k < n_bins */
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
  size_t total = 0;
  for (int i = 0; i < m; i++) {
    const float *w = f->basis + (size_t)i * (size_t)nb;
    int b = 0, e = nb;
    while (b < nb && w[b] == 0.0f) b++;
    while (e > b && w[e - 1] == 0.0f) e--;
    f->band[2 * i] = b;
    f->band[2 * i + 1] = e;
    total += (size_t)(e - b);
  }
  /* The bands' weights once more in double, back to back: the projection reads them in order. */
  f->band_w = malloc(sizeof(double) * (total ? total : 1));
  if (!f->band_w) return 0;
  size_t at = 0;
  for (int i = 0; i < m; i++)
    for (int k = f->band[2 * i]; k < f->band[2 * i + 1]; k++)
      f->band_w[at++] = (double)f->basis[(size_t)i * (size_t)nb + (size_t)k];
  return 1;
}

/* ---- FFT ---------------------------------------------------------------------------------- */
/* A complex transform of length N (the plan's fft_n) as an iterative Stockham decimation in
 * time.  Before a pass of radix R the array holds N/l transforms of length l, block c (at c*l)
 * being the transform of the samples c, c + N/l, c + 2N/l, ...  The pass merges blocks a,
 * a + m, ..., a + (R-1)m (m = N/(l R), q = m l apart) into block a of length l R, written to
 * the other array:
 *   out[a l R + b + k l] = sum_r W_R^(r k) (W_(l R)^(r b) in[a l + b + r q]),  b < l, k < R.
 * So reads and writes run over consecutive b (the compiler vectorizes the inner loop), the
 * twiddles W_(l R)^(r b) are read in the same order from the pass's own table, and the result
 * comes out in natural order (no bit reversal).  The first pass (l = 1) has no twiddles. */

typedef struct { double r, i; } cplx;

static inline cplx ld(const double *re, const double *im, size_t j) { return (cplx){re[j], im[j]}; }

/* v W, for the twiddle W = wr + i wi */
static inline cplx twid(cplx v, double wr, double wi) {
  return (cplx){v.r * wr - v.i * wi, v.r * wi + v.i * wr};
}

/* The R-point DFTs (W_R = exp(-2 pi i / R)), output k to y[k st]. */
static inline void dft2(cplx v0, cplx v1, double *yr, double *yi, size_t st) {
  yr[0] = v0.r + v1.r, yi[0] = v0.i + v1.i;
  yr[st] = v0.r - v1.r, yi[st] = v0.i - v1.i;
}

static inline void dft3(cplx v0, cplx v1, cplx v2, double *yr, double *yi, size_t st) {
  const double s = 0.86602540378443864676;  /* sin(2 pi / 3); cos(2 pi / 3) = -1/2 */
  double tr = v1.r + v2.r, ti = v1.i + v2.i, dr = s * (v1.r - v2.r), di = s * (v1.i - v2.i);
  double mr = v0.r - 0.5 * tr, mi = v0.i - 0.5 * ti;
  yr[0] = v0.r + tr, yi[0] = v0.i + ti;
  yr[st] = mr + di, yi[st] = mi - dr;          /* m - i d */
  yr[2 * st] = mr - di, yi[2 * st] = mi + dr;  /* m + i d */
}

static inline void dft4(cplx v0, cplx v1, cplx v2, cplx v3, double *yr, double *yi, size_t st) {
  double sr = v0.r + v2.r, si = v0.i + v2.i, dr = v0.r - v2.r, di = v0.i - v2.i;
  double tr = v1.r + v3.r, ti = v1.i + v3.i, er = v1.r - v3.r, ei = v1.i - v3.i;
  yr[0] = sr + tr, yi[0] = si + ti;
  yr[st] = dr + ei, yi[st] = di - er;            /* d - i e */
  yr[2 * st] = sr - tr, yi[2 * st] = si - ti;
  yr[3 * st] = dr - ei, yi[3 * st] = di + er;    /* d + i e */
}

/* With its symmetries: X1,4 = A1 -+ i B1, X2,3 = A2 -+ i B2, four real constants. */
static inline void dft5(cplx v0, cplx v1, cplx v2, cplx v3, cplx v4, double *yr, double *yi,
                        size_t st) {
  const double c1 = 0.30901699437494742410, c2 = -0.80901699437494742410;  /* cos(2 pi k/5) */
  const double s1 = 0.95105651629515357212, s2 = 0.58778525229247312917;   /* sin(2 pi k/5) */
  double a1r = v1.r + v4.r, a1i = v1.i + v4.i, b1r = v1.r - v4.r, b1i = v1.i - v4.i;
  double a2r = v2.r + v3.r, a2i = v2.i + v3.i, b2r = v2.r - v3.r, b2i = v2.i - v3.i;
  double A1r = v0.r + c1 * a1r + c2 * a2r, A1i = v0.i + c1 * a1i + c2 * a2i;
  double A2r = v0.r + c2 * a1r + c1 * a2r, A2i = v0.i + c2 * a1i + c1 * a2i;
  double B1r = s1 * b1r + s2 * b2r, B1i = s1 * b1i + s2 * b2i;
  double B2r = s2 * b1r - s1 * b2r, B2i = s2 * b1i - s1 * b2i;
  yr[0] = v0.r + a1r + a2r, yi[0] = v0.i + a1i + a2i;
  yr[st] = A1r + B1i, yi[st] = A1i - B1r;
  yr[2 * st] = A2r + B2i, yi[2 * st] = A2i - B2r;
  yr[3 * st] = A2r - B2i, yi[3 * st] = A2i + B2r;
  yr[4 * st] = A1r - B1i, yi[4 * st] = A1i + B1r;
}

/* The inner loops over b have no loop-carried dependence (out[b + k l], k < R, never meet for
 * b < l), but the compiler cannot know l >= its vector width: tell it, where it has a way. */
#if defined(__clang__)
#define INDEPENDENT _Pragma("clang loop vectorize(assume_safety)")
#elif defined(__GNUC__)
#define INDEPENDENT _Pragma("GCC ivdep")
#else
#define INDEPENDENT
#endif

/* A pass of radix 2..5.  The first (l = 1) has no twiddles and loops over the blocks; the
 * others loop over b inside each block. */
#define PASS_BEGIN                                                          \
  size_t l = st->l, m = st->m, q = l * m;                                   \
  const double *restrict wr = st->wr, *restrict wi = st->wi
#define X(j) ld(xr, xi, (j))
#define T(j, r) twid(X(j), wr[(r - 1) * l + b], wi[(r - 1) * l + b])
TFQ_AVX2_CLONE
static void pass2(const fft_stage *st, const double *restrict xr, const double *restrict xi,
                  double *restrict yr, double *restrict yi) {
  PASS_BEGIN;
  if (l == 1) {
    for (size_t a = 0; a < m; a++) dft2(X(a), X(a + q), yr + 2 * a, yi + 2 * a, 1);
    return;
  }
  for (size_t a = 0; a < m; a++, xr += l, xi += l, yr += 2 * l, yi += 2 * l)
    INDEPENDENT for (size_t b = 0; b < l; b++) dft2(X(b), T(b + q, 1), yr + b, yi + b, l);
}

TFQ_AVX2_CLONE
static void pass3(const fft_stage *st, const double *restrict xr, const double *restrict xi,
                  double *restrict yr, double *restrict yi) {
  PASS_BEGIN;
  if (l == 1) {
    for (size_t a = 0; a < m; a++) dft3(X(a), X(a + q), X(a + 2 * q), yr + 3 * a, yi + 3 * a, 1);
    return;
  }
  for (size_t a = 0; a < m; a++, xr += l, xi += l, yr += 3 * l, yi += 3 * l)
    INDEPENDENT for (size_t b = 0; b < l; b++)
      dft3(X(b), T(b + q, 1), T(b + 2 * q, 2), yr + b, yi + b, l);
}

TFQ_AVX2_CLONE
static void pass4(const fft_stage *st, const double *restrict xr, const double *restrict xi,
                  double *restrict yr, double *restrict yi) {
  PASS_BEGIN;
  if (l == 1) {
    for (size_t a = 0; a < m; a++)
      dft4(X(a), X(a + q), X(a + 2 * q), X(a + 3 * q), yr + 4 * a, yi + 4 * a, 1);
    return;
  }
  for (size_t a = 0; a < m; a++, xr += l, xi += l, yr += 4 * l, yi += 4 * l)
    INDEPENDENT for (size_t b = 0; b < l; b++)
      dft4(X(b), T(b + q, 1), T(b + 2 * q, 2), T(b + 3 * q, 3), yr + b, yi + b, l);
}

TFQ_AVX2_CLONE
static void pass5(const fft_stage *st, const double *restrict xr, const double *restrict xi,
                  double *restrict yr, double *restrict yi) {
  PASS_BEGIN;
  if (l == 1) {
    for (size_t a = 0; a < m; a++)
      dft5(X(a), X(a + q), X(a + 2 * q), X(a + 3 * q), X(a + 4 * q), yr + 5 * a, yi + 5 * a, 1);
    return;
  }
  for (size_t a = 0; a < m; a++, xr += l, xi += l, yr += 5 * l, yi += 5 * l)
    INDEPENDENT for (size_t b = 0; b < l; b++)
      dft5(X(b), T(b + q, 1), T(b + 2 * q, 2), T(b + 3 * q, 3), T(b + 4 * q, 4), yr + b, yi + b, l);
}
#undef T
#undef X

/* A pass of an odd prime radix p > 5: O(p^2) per butterfly, halved by pairing r with p - r:
 * v_r W^(r k) + v_(p-r) W^(-r k) = (v_r + v_(p-r)) cos - i (v_r - v_(p-r)) sin. */
static void pass_odd(const fft_stage *st, const double *restrict xr, const double *restrict xi,
                     double *restrict yr, double *restrict yi) {
  PASS_BEGIN;
  size_t p = st->radix, h = (p - 1) / 2;
  const double *cos_p = st->cs, *sin_p = st->cs + p;
  double *sr = st->tmp, *si = sr + p, *dr = si + p, *di = dr + p;  /* [1..h] used */
  for (size_t a = 0; a < m; a++, xr += l, xi += l, yr += p * l, yi += p * l) {
    for (size_t b = 0; b < l; b++) {
      double v0r = xr[b], v0i = xi[b], y0r = v0r, y0i = v0i;
      for (size_t r = 1; r <= h; r++) {
        cplx u = twid(ld(xr, xi, b + r * q), wr[(r - 1) * l + b], wi[(r - 1) * l + b]);
        cplx v = twid(ld(xr, xi, b + (p - r) * q), wr[(p - r - 1) * l + b], wi[(p - r - 1) * l + b]);
        sr[r] = u.r + v.r, si[r] = u.i + v.i, dr[r] = u.r - v.r, di[r] = u.i - v.i;
        y0r += sr[r], y0i += si[r];
      }
      yr[b] = y0r, yi[b] = y0i;
      for (size_t k = 1; k <= h; k++) {
        double Ar = v0r, Ai = v0i, Br = 0.0, Bi = 0.0;
        for (size_t r = 1, j = 0; r <= h; r++) {
          j += k;  /* j = r k mod p */
          if (j >= p) j -= p;
          Ar += sr[r] * cos_p[j], Ai += si[r] * cos_p[j];
          Br += dr[r] * sin_p[j], Bi += di[r] * sin_p[j];
        }
        yr[b + k * l] = Ar + Bi, yi[b + k * l] = Ai - Br;              /* A - i B */
        yr[b + (p - k) * l] = Ar - Bi, yi[b + (p - k) * l] = Ai + Br;  /* A + i B */
      }
    }
  }
}
#undef PASS_BEGIN

/* Transforms fft_re[0] + i fft_im[0] (fft_n values); returns the index of the buffer pair that
 * holds the result.  The passes are called through the plan's pointers, so each stays a
 * function of its own: inlined together here they spilled more registers, 8% slower. */
static int fft_run(tfq_frontend *f) {
  int cur = 0;
  for (int s = 0; s < f->n_stages; s++, cur ^= 1) {
    const fft_stage *st = &f->stage[s];
    st->run(st, f->fft_re[cur], f->fft_im[cur], f->fft_re[cur ^ 1], f->fft_im[cur ^ 1]);
  }
  return cur;
}

/* cos and sin of 2 pi j / n */
static void unit_root(size_t j, size_t n, double *c, double *s) {
  *c = cos(2.0 * PI * (double)j / (double)n);
  *s = sin(2.0 * PI * (double)j / (double)n);
}

/* The plan of the complex transform of length fft_n: its prime factors with 2 * 2 paired into
 * 4 (fewer passes), in the order 4, 2, 3, 5, larger primes (for 200, none of the other orders
 * of 4, 2, 5, 5 was faster).  Each pass's twiddles W_(l R)^(r b) are computed directly (no
 * recurrence: full double accuracy) into one array, pass after pass. */
static int fft_plan(tfq_frontend *f) {
  size_t n = f->fft_n, rest = n, radix[MAX_STAGES];
  int k = 0;
  while (rest % 4 == 0) radix[k++] = 4, rest /= 4;
  if (rest % 2 == 0) radix[k++] = 2, rest /= 2;
  for (size_t d = 3; rest > 1; d += 2)
    while (rest % d == 0) radix[k++] = d, rest /= d;
  f->n_stages = k;
  /* The twiddles of all passes: sum of (R - 1) l = n - 1 complex values; pass_odd also needs
   * its cos/sin table and 4 R of scratch. */
  size_t size = 2 * n;
  for (int i = 0; i < k; i++)
    if (radix[i] > 5) size += 6 * radix[i];
  f->fft_tw = malloc(sizeof(double) * size);
  if (!f->fft_tw) return 0;
  double *w = f->fft_tw;
  size_t l = 1;
  for (int i = 0; i < k; i++) {
    fft_stage *st = &f->stage[i];
    size_t R = radix[i];
    st->run = R == 2 ? pass2 : R == 3 ? pass3 : R == 4 ? pass4 : R == 5 ? pass5 : pass_odd;
    st->radix = R;
    st->l = l;
    st->m = n / (l * R);
    double *wr = w, *wi = w + (R - 1) * l;
    for (size_t r = 1; r < R; r++)
      for (size_t b = 0; b < l; b++) {  /* W_(l R)^(r b) = W_n^(r b m) */
        double c, s;
        unit_root(r * b * st->m, n, &c, &s);
        wr[(r - 1) * l + b] = c;
        wi[(r - 1) * l + b] = -s;
      }
    st->wr = wr;
    st->wi = wi;
    w += 2 * (R - 1) * l;
    st->cs = NULL;
    st->tmp = NULL;
    if (R > 5) {
      for (size_t j = 0; j < R; j++) unit_root(j, R, w + j, w + R + j);
      st->cs = w;
      st->tmp = w + 2 * R;
      w += 6 * R;
    }
    l *= R;
  }
  return 1;
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
  f->fft_n = n % 2 == 0 ? n / 2 : n;
  f->window = malloc(sizeof(float) * (size_t)p->win);
  f->basis = malloc(sizeof(float) * nb * (size_t)p->n_mels);
  f->band = malloc(sizeof(int) * 2 * (size_t)p->n_mels);
  for (int i = 0; i < 2; i++) {
    f->fft_re[i] = malloc(sizeof(double) * (f->fft_n + 1));
    f->fft_im[i] = malloc(sizeof(double) * (f->fft_n + 1));
  }
  f->split_c = malloc(sizeof(double) * nb);
  f->split_s = malloc(sizeof(double) * nb);
  f->power = malloc(sizeof(double) * nb);
  f->buf = malloc(sizeof(float) * (size_t)p->win);
  if (!f->window || !f->basis || !f->band || !f->fft_re[0] || !f->fft_im[0] || !f->fft_re[1] ||
      !f->fft_im[1] || !f->split_c || !f->split_s || !f->power || !f->buf)
    goto oom;
  /* scipy.signal.get_window("hann", win, fftbins=True): 0.5 - 0.5 cos(2 pi i / win), float32 */
  for (int i = 0; i < p->win; i++)
    f->window[i] = (float)(0.5 - 0.5 * cos(2.0 * PI * (double)i / (double)p->win));
  for (size_t k = 0; k < nb; k++) unit_root(k, n, &f->split_c[k], &f->split_s[k]);
  if (!fft_plan(f) || !mel_basis(f)) goto oom;
  return f;
oom:
  tfq_frontend_destroy(f);
  if (err && err_size) snprintf(err, err_size, "frontend: out of memory");
  return NULL;
}

void tfq_frontend_destroy(tfq_frontend *f) {
  if (!f) return;
  free(f->window); free(f->basis); free(f->band); free(f->band_w); free(f->fft_tw);
  for (int i = 0; i < 2; i++) { free(f->fft_re[i]); free(f->fft_im[i]); }
  free(f->split_c); free(f->split_s); free(f->power); free(f->buf);
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
TFQ_AVX2_CLONE
static void compute_frame(tfq_frontend *f, float *out) {
  size_t n = (size_t)f->p.n_fft, win = (size_t)f->p.win, nb = (size_t)f->n_bins, h = f->fft_n;
  double *xr = f->fft_re[0], *xi = f->fft_im[0];
  const float *x = f->buf, *w = f->window;
  if (n % 2 == 0) {
    /* A real signal of even length n as the complex signal z[j] = x[2j] + i x[2j+1] of
     * length h = n/2: one transform of half the length, then X[k] for k = 0..h from Z[k] and
     * Z[h-k].  rfft zero-pads a frame shorter than n_fft. */
    size_t j = 0;
    for (; 2 * j + 1 < win; j++) {
      xr[j] = (double)(x[2 * j] * w[2 * j]);
      xi[j] = (double)(x[2 * j + 1] * w[2 * j + 1]);
    }
    for (; j < h; j++) {
      xr[j] = 2 * j < win ? (double)(x[2 * j] * w[2 * j]) : 0.0;
      xi[j] = 0.0;
    }
    int o = fft_run(f);
    double *zr = f->fft_re[o], *zi = f->fft_im[o];
    zr[h] = zr[0], zi[h] = zi[0];  /* Z is h-periodic: Z[h] = Z[0] keeps the loop branch-free */
    for (size_t k = 0; k < nb; k++) {
      double ar = zr[k], ai = zi[k], cr = zr[h - k], ci = -zi[h - k];  /* Z[k], conj Z[h-k] */
      double er = 0.5 * (ar + cr), ei = 0.5 * (ai + ci);  /* transform of the even samples */
      double or_ = 0.5 * (ai - ci), oi = -0.5 * (ar - cr);  /* of the odd ones: (Z - conj)/(2i) */
      double c = f->split_c[k], s = f->split_s[k];         /* W_n^k = c - i s */
      double yr = er + c * or_ + s * oi, yi = ei + c * oi - s * or_;
      f->power[k] = yr * yr + yi * yi;
    }
  } else {
    for (size_t i = 0; i < n; i++) {
      xr[i] = i < win ? (double)(x[i] * w[i]) : 0.0;
      xi[i] = 0.0;
    }
    int o = fft_run(f);
    const double *zr = f->fft_re[o], *zi = f->fft_im[o];
    for (size_t k = 0; k < nb; k++) f->power[k] = zr[k] * zr[k] + zi[k] * zi[k];
  }
  /* In the order of log_mel's einsum over the non-zero band (the zeros outside add nothing),
   * in double, rounded to float32 once. */
  const double *bw = f->band_w;
  for (int m = 0; m < f->p.n_mels; m++) {
    int b = f->band[2 * m], e = f->band[2 * m + 1];
    double acc = 0.0;
    for (int k = b; k < e; k++) acc += f->power[k] * bw[k - b];
    bw += e - b;
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
