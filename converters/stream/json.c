/* Strict JSON (RFC 8259) reader: see json.h. */
#include "json.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_DEPTH 32
#define MAX_NUMBER_CHARS 64

typedef struct parser {
  const char *p;
  size_t size, pos;
  char *err;
  size_t err_size;
  int failed;
} parser;

static void fail(parser *ps, const char *fmt, ...) {
  if (ps->failed) return;
  ps->failed = 1;
  if (ps->err && ps->err_size) {
    char msg[160];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    snprintf(ps->err, ps->err_size, "%s at byte %zu", msg, ps->pos);
  }
}

static void skip_ws(parser *ps) {
  while (ps->pos < ps->size) {
    char c = ps->p[ps->pos];
    if (c != ' ' && c != '\t' && c != '\n' && c != '\r') break;
    ps->pos++;
  }
}

static int peek(parser *ps) { return ps->pos < ps->size ? (unsigned char)ps->p[ps->pos] : -1; }

static tfq_json *new_node(parser *ps, tfq_json_type type) {
  tfq_json *n = calloc(1, sizeof *n);
  if (!n) fail(ps, "out of memory");
  else n->type = type;
  return n;
}

static int literal(parser *ps, const char *word) {
  size_t len = strlen(word);
  if (ps->size - ps->pos < len || memcmp(ps->p + ps->pos, word, len) != 0) {
    fail(ps, "invalid literal");
    return 0;
  }
  ps->pos += len;
  return 1;
}

static int hex4(parser *ps, unsigned *out) {
  unsigned v = 0;
  if (ps->size - ps->pos < 4) { fail(ps, "truncated \\u escape"); return 0; }
  for (int i = 0; i < 4; i++) {
    char c = ps->p[ps->pos++];
    v <<= 4;
    if (c >= '0' && c <= '9') v |= (unsigned)(c - '0');
    else if (c >= 'a' && c <= 'f') v |= (unsigned)(c - 'a' + 10);
    else if (c >= 'A' && c <= 'F') v |= (unsigned)(c - 'A' + 10);
    else { fail(ps, "bad \\u escape"); return 0; }
  }
  *out = v;
  return 1;
}

static size_t put_utf8(char *dst, unsigned cp) {
  if (cp < 0x80) { dst[0] = (char)cp; return 1; }
  if (cp < 0x800) { dst[0] = (char)(0xC0 | (cp >> 6)); dst[1] = (char)(0x80 | (cp & 0x3F)); return 2; }
  if (cp < 0x10000) {
    dst[0] = (char)(0xE0 | (cp >> 12)); dst[1] = (char)(0x80 | ((cp >> 6) & 0x3F));
    dst[2] = (char)(0x80 | (cp & 0x3F)); return 3;
  }
  dst[0] = (char)(0xF0 | (cp >> 18)); dst[1] = (char)(0x80 | ((cp >> 12) & 0x3F));
  dst[2] = (char)(0x80 | ((cp >> 6) & 0x3F)); dst[3] = (char)(0x80 | (cp & 0x3F));
  return 4;
}

/* ps->pos at the opening quote.  The decoded string is never longer than the raw one. */
static char *parse_string(parser *ps, size_t *length) {
  ps->pos++;
  size_t start = ps->pos, end = start;
  while (end < ps->size && ps->p[end] != '"') end += (ps->p[end] == '\\') ? 2 : 1;
  if (end >= ps->size) { fail(ps, "unterminated string"); return NULL; }
  char *out = malloc(end - start + 1);
  if (!out) { fail(ps, "out of memory"); return NULL; }
  size_t n = 0;
  while (ps->pos < end) {
    unsigned char c = (unsigned char)ps->p[ps->pos];
    if (c < 0x20) { fail(ps, "control character in string"); break; }
    if (c != '\\') { out[n++] = (char)c; ps->pos++; continue; }
    ps->pos++;
    char e = ps->p[ps->pos++];  /* pos < end here: a backslash always has a next byte before end */
    switch (e) {
      case '"': out[n++] = '"'; break;
      case '\\': out[n++] = '\\'; break;
      case '/': out[n++] = '/'; break;
      case 'b': out[n++] = '\b'; break;
      case 'f': out[n++] = '\f'; break;
      case 'n': out[n++] = '\n'; break;
      case 'r': out[n++] = '\r'; break;
      case 't': out[n++] = '\t'; break;
      case 'u': {
        unsigned cp, lo;
        if (ps->pos + 4 > end || !hex4(ps, &cp)) { fail(ps, "bad \\u escape"); break; }
        if (cp >= 0xD800 && cp < 0xDC00) {  /* a high surrogate needs its low half: 6 + 6 raw bytes -> 4 */
          if (ps->pos + 6 > end || ps->p[ps->pos] != '\\' || ps->p[ps->pos + 1] != 'u') {
            fail(ps, "unpaired surrogate"); break;
          }
          ps->pos += 2;
          if (!hex4(ps, &lo) || lo < 0xDC00 || lo > 0xDFFF) { fail(ps, "unpaired surrogate"); break; }
          cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
        } else if (cp >= 0xDC00 && cp < 0xE000) {
          fail(ps, "unpaired surrogate"); break;
        }
        if (cp == 0) { fail(ps, "NUL in string"); break; }
        n += put_utf8(out + n, cp);  /* 6 raw bytes give at most 3, 12 give 4 */
        break;
      }
      default: fail(ps, "bad escape"); break;
    }
    if (ps->failed) break;
  }
  if (ps->failed) { free(out); return NULL; }
  out[n] = '\0';
  ps->pos = end + 1;
  *length = n;
  return out;
}

static int parse_number(parser *ps, double *out) {
  size_t start = ps->pos, i = ps->pos;
  const char *p = ps->p;
  if (i < ps->size && p[i] == '-') i++;
  if (i >= ps->size || p[i] < '0' || p[i] > '9') { fail(ps, "invalid number"); return 0; }
  if (p[i] == '0') i++;
  else while (i < ps->size && p[i] >= '0' && p[i] <= '9') i++;
  if (i < ps->size && p[i] == '.') {
    i++;
    if (i >= ps->size || p[i] < '0' || p[i] > '9') { fail(ps, "invalid number"); return 0; }
    while (i < ps->size && p[i] >= '0' && p[i] <= '9') i++;
  }
  if (i < ps->size && (p[i] == 'e' || p[i] == 'E')) {
    i++;
    if (i < ps->size && (p[i] == '+' || p[i] == '-')) i++;
    if (i >= ps->size || p[i] < '0' || p[i] > '9') { fail(ps, "invalid number"); return 0; }
    while (i < ps->size && p[i] >= '0' && p[i] <= '9') i++;
  }
  if (i - start >= MAX_NUMBER_CHARS) { fail(ps, "number too long"); return 0; }
  char buf[MAX_NUMBER_CHARS];
  memcpy(buf, p + start, i - start);
  buf[i - start] = '\0';
  double v = strtod(buf, NULL);  /* the syntax was checked above; "C" locale decimal point */
  if (!isfinite(v)) { fail(ps, "number out of range"); return 0; }
  *out = v;
  ps->pos = i;
  return 1;
}

static tfq_json *parse_value(parser *ps, int depth);

static tfq_json *parse_container(parser *ps, int depth, int object) {
  tfq_json *node = new_node(ps, object ? TFQ_JSON_OBJECT : TFQ_JSON_ARRAY);
  if (!node) return NULL;
  char close = object ? '}' : ']';
  ps->pos++;
  skip_ws(ps);
  if (peek(ps) == close) { ps->pos++; return node; }
  tfq_json **tail = &node->child;
  for (;;) {
    char *key = NULL;
    skip_ws(ps);
    if (object) {
      size_t klen;
      if (peek(ps) != '"') { fail(ps, "object key expected"); break; }
      key = parse_string(ps, &klen);
      if (!key) break;
      skip_ws(ps);
      if (peek(ps) != ':') { free(key); fail(ps, "':' expected"); break; }
      ps->pos++;
    }
    tfq_json *child = parse_value(ps, depth + 1);
    if (!child) { free(key); break; }
    child->key = key;
    *tail = child;
    tail = &child->next;
    node->length++;
    skip_ws(ps);
    int c = peek(ps);
    if (c == ',') { ps->pos++; continue; }
    if (c == close) { ps->pos++; return node; }
    fail(ps, object ? "',' or '}' expected" : "',' or ']' expected");
    break;
  }
  tfq_json_free(node);
  return NULL;
}

static tfq_json *parse_value(parser *ps, int depth) {
  if (depth > MAX_DEPTH) { fail(ps, "nesting deeper than %d", MAX_DEPTH); return NULL; }
  skip_ws(ps);
  int c = peek(ps);
  tfq_json *n = NULL;
  switch (c) {
    case -1: fail(ps, "unexpected end of input"); return NULL;
    case '{': return parse_container(ps, depth, 1);
    case '[': return parse_container(ps, depth, 0);
    case '"': {
      size_t len;
      char *s = parse_string(ps, &len);
      if (!s) return NULL;
      n = new_node(ps, TFQ_JSON_STRING);
      if (!n) { free(s); return NULL; }
      n->string = s;
      n->length = len;
      return n;
    }
    case 't': case 'f':
      if (!literal(ps, c == 't' ? "true" : "false")) return NULL;
      n = new_node(ps, TFQ_JSON_BOOL);
      if (n) n->number = (c == 't');
      return n;
    case 'n':
      if (!literal(ps, "null")) return NULL;
      return new_node(ps, TFQ_JSON_NULL);
    default: {
      double v;
      if (!parse_number(ps, &v)) return NULL;
      n = new_node(ps, TFQ_JSON_NUMBER);
      if (n) n->number = v;
      return n;
    }
  }
}

tfq_json *tfq_json_parse(const char *text, size_t size, char *err, size_t err_size) {
  parser ps = {text, size, 0, err, err_size, 0};
  if (err && err_size) err[0] = '\0';
  if (!text) { fail(&ps, "no input"); return NULL; }
  tfq_json *root = parse_value(&ps, 0);
  if (!root) return NULL;
  skip_ws(&ps);
  /* A trailing NUL (the metadata buffer may be a C string) is allowed, nothing else. */
  while (ps.pos < ps.size && ps.p[ps.pos] == '\0') ps.pos++;
  if (ps.pos != ps.size) {
    fail(&ps, "trailing characters");
    tfq_json_free(root);
    return NULL;
  }
  return root;
}

void tfq_json_free(tfq_json *node) {
  while (node) {
    tfq_json *next = node->next;
    tfq_json_free(node->child);
    free(node->string);
    free(node->key);
    free(node);
    node = next;
  }
}

const tfq_json *tfq_json_get(const tfq_json *object, const char *key) {
  if (!object || object->type != TFQ_JSON_OBJECT) return NULL;
  const tfq_json *found = NULL;
  for (const tfq_json *c = object->child; c; c = c->next)
    if (strcmp(c->key, key) == 0) found = c;  /* the last duplicate wins, as in Python's json */
  return found;
}

const tfq_json *tfq_json_at(const tfq_json *array, size_t index) {
  if (!array || array->type != TFQ_JSON_ARRAY) return NULL;
  const tfq_json *c = array->child;
  while (c && index--) c = c->next;
  return c;
}

int tfq_json_int(const tfq_json *node, long lo, long hi, long *out) {
  if (!node || node->type != TFQ_JSON_NUMBER) return 0;
  double v = node->number;
  if (v != floor(v) || v < (double)lo || v > (double)hi) return 0;
  *out = (long)v;
  return 1;
}
