/*
 * Structural check of a .tflite flatbuffer before LiteRT loads it.  LiteRT 2.3.0's
 * LiteRtCreateModelFromFile follows offsets unchecked on some paths: a truncated file crashed
 * it (SIGSEGV) or made it spin.  This walks the tables LiteRT reads at load (Model, operator
 * codes, subgraphs, tensors, quantization, operators, buffers, metadata, signatures) and checks
 * that every table, vtable, vector and string lies inside the file.  Builtin option tables are
 * checked for their own bounds only (their fields depend on the option type).
 */
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "tfq/litert_op.h"

enum kind { K_END, K_SCALAR, K_STRING, K_VEC, K_VEC_TABLES, K_TABLE, K_ANY_TABLE, K_VEC_ANY_TABLES };
enum type { T_MODEL, T_OPCODE, T_SUBGRAPH, T_TENSOR, T_QUANT, T_OPERATOR, T_BUFFER, T_METADATA,
            T_SIGDEF, T_TENSORMAP, T_COUNT };

typedef struct field { int id; int kind; int arg; } field;  /* arg: scalar/element size or type */

static const field *const SCHEMA[T_COUNT] = {
  [T_MODEL] = (const field[]){{0, K_SCALAR, 4}, {1, K_VEC_TABLES, T_OPCODE},
      {2, K_VEC_TABLES, T_SUBGRAPH}, {3, K_STRING, 0}, {4, K_VEC_TABLES, T_BUFFER},
      {5, K_VEC, 4}, {6, K_VEC_TABLES, T_METADATA}, {7, K_VEC_TABLES, T_SIGDEF}, {0, K_END, 0}},
  [T_OPCODE] = (const field[]){{0, K_SCALAR, 1}, {1, K_STRING, 0}, {2, K_SCALAR, 4},
      {3, K_SCALAR, 4}, {0, K_END, 0}},
  [T_SUBGRAPH] = (const field[]){{0, K_VEC_TABLES, T_TENSOR}, {1, K_VEC, 4}, {2, K_VEC, 4},
      {3, K_VEC_TABLES, T_OPERATOR}, {4, K_STRING, 0}, {0, K_END, 0}},
  [T_TENSOR] = (const field[]){{0, K_VEC, 4}, {1, K_SCALAR, 1}, {2, K_SCALAR, 4}, {3, K_STRING, 0},
      {4, K_TABLE, T_QUANT}, {5, K_SCALAR, 1}, {6, K_ANY_TABLE, 0}, {7, K_VEC, 4},
      {8, K_SCALAR, 1}, {9, K_VEC_ANY_TABLES, 0}, {0, K_END, 0}},
  [T_QUANT] = (const field[]){{0, K_VEC, 4}, {1, K_VEC, 4}, {2, K_VEC, 4}, {3, K_VEC, 8},
      {4, K_SCALAR, 1}, {5, K_ANY_TABLE, 0}, {6, K_SCALAR, 4}, {0, K_END, 0}},
  [T_OPERATOR] = (const field[]){{0, K_SCALAR, 4}, {1, K_VEC, 4}, {2, K_VEC, 4}, {3, K_SCALAR, 1},
      {4, K_ANY_TABLE, 0}, {5, K_VEC, 1}, {6, K_SCALAR, 1}, {7, K_VEC, 1}, {8, K_VEC, 4},
      {9, K_SCALAR, 8}, {10, K_SCALAR, 8}, {11, K_SCALAR, 1}, {12, K_ANY_TABLE, 0}, {0, K_END, 0}},
  [T_BUFFER] = (const field[]){{0, K_VEC, 1}, {1, K_SCALAR, 8}, {2, K_SCALAR, 8}, {0, K_END, 0}},
  [T_METADATA] = (const field[]){{0, K_STRING, 0}, {1, K_SCALAR, 4}, {0, K_END, 0}},
  [T_SIGDEF] = (const field[]){{0, K_VEC_TABLES, T_TENSORMAP}, {1, K_VEC_TABLES, T_TENSORMAP},
      {2, K_STRING, 0}, {3, K_STRING, 0}, {4, K_SCALAR, 4}, {0, K_END, 0}},
  [T_TENSORMAP] = (const field[]){{0, K_STRING, 0}, {1, K_SCALAR, 4}, {0, K_END, 0}},
};

typedef struct fb { const uint8_t *b; size_t n; const char *why; size_t at; } fb;

static uint32_t u32(const fb *f, size_t p) {
  return (uint32_t)f->b[p] | ((uint32_t)f->b[p + 1] << 8) | ((uint32_t)f->b[p + 2] << 16) |
         ((uint32_t)f->b[p + 3] << 24);
}
static uint16_t u16(const fb *f, size_t p) { return (uint16_t)(f->b[p] | (f->b[p + 1] << 8)); }
static int in(const fb *f, size_t p, size_t len) { return p <= f->n && len <= f->n - p; }
static int bad(fb *f, const char *why, size_t at) {
  if (!f->why) { f->why = why; f->at = at; }
  return 0;
}

/* Target of the uoffset stored at p. */
static int deref(fb *f, size_t p, size_t *out) {
  if (!in(f, p, 4)) return bad(f, "offset outside the file", p);
  uint32_t off = u32(f, p);
  if (off == 0 || off > f->n - p) return bad(f, "offset points outside the file", p);
  *out = p + off;
  return 1;
}

static int vector(fb *f, size_t p, size_t elem, size_t *count, size_t *data) {
  if (!in(f, p, 4)) return bad(f, "vector outside the file", p);
  size_t c = u32(f, p);
  if (c > (f->n - p - 4) / elem) return bad(f, "vector runs past the end of the file", p);
  *count = c;
  *data = p + 4;
  return 1;
}

static int table(fb *f, size_t t, int type, int depth);

static int any_table(fb *f, size_t t) { return table(f, t, -1, 0); }

static int table(fb *f, size_t t, int type, int depth) {
  if (depth > 8) return bad(f, "tables nested too deep", t);
  if (!in(f, t, 4)) return bad(f, "table outside the file", t);
  int64_t vt = (int64_t)t - (int64_t)(int32_t)u32(f, t);
  if (vt < 0 || !in(f, (size_t)vt, 4)) return bad(f, "vtable outside the file", t);
  size_t v = (size_t)vt, vsize = u16(f, v), tsize = u16(f, v + 2);
  if (vsize < 4 || (vsize & 1) || !in(f, v, vsize)) return bad(f, "bad vtable", v);
  if (tsize < 4 || !in(f, t, tsize)) return bad(f, "table runs past the end of the file", t);
  size_t nfields = (vsize - 4) / 2;
  for (size_t i = 0; i < nfields; i++) {  /* every present field lies inside its table */
    size_t fo = u16(f, v + 4 + 2 * i);
    if (fo && fo + 1 > tsize) return bad(f, "field outside its table", t);
  }
  if (type < 0) return 1;
  for (const field *fd = SCHEMA[type]; fd->kind != K_END; fd++) {
    if ((size_t)fd->id >= nfields) continue;
    size_t fo = u16(f, v + 4 + 2 * (size_t)fd->id);
    if (!fo) continue;
    size_t p = t + fo, target, count, data;
    size_t width = fd->kind == K_SCALAR ? (size_t)fd->arg : 4;
    if (fo + width > tsize) return bad(f, "field outside its table", t);
    switch (fd->kind) {
      case K_SCALAR: break;
      case K_STRING:
        if (!deref(f, p, &target) || !vector(f, target, 1, &count, &data)) return 0;
        if (!in(f, data, count + 1)) return bad(f, "string runs past the end of the file", target);
        break;
      case K_VEC:
        if (!deref(f, p, &target) || !vector(f, target, (size_t)fd->arg, &count, &data)) return 0;
        break;
      case K_TABLE:
        if (!deref(f, p, &target) || !table(f, target, fd->arg, depth + 1)) return 0;
        break;
      case K_ANY_TABLE:
        if (!deref(f, p, &target) || !any_table(f, target)) return 0;
        break;
      case K_VEC_TABLES: case K_VEC_ANY_TABLES:
        if (!deref(f, p, &target) || !vector(f, target, 4, &count, &data)) return 0;
        for (size_t i = 0; i < count; i++) {
          size_t e;
          if (!deref(f, data + 4 * i, &e)) return 0;
          if (fd->kind == K_VEC_TABLES ? !table(f, e, fd->arg, depth + 1) : !any_table(f, e)) return 0;
        }
        break;
    }
  }
  if (type == T_BUFFER) {  /* data outside the flatbuffer: offset and size inside the file */
    uint64_t off = 0, size = 0;
    size_t fo1 = nfields > 1 ? u16(f, v + 6) : 0, fo2 = nfields > 2 ? u16(f, v + 8) : 0;
    if (fo1) for (int i = 7; i >= 0; i--) off = (off << 8) | f->b[t + fo1 + (size_t)i];
    if (fo2) for (int i = 7; i >= 0; i--) size = (size << 8) | f->b[t + fo2 + (size_t)i];
    if (off > 1 && (off > f->n || size > f->n - off))
      return bad(f, "buffer data outside the file (truncated?)", t);
  }
  return 1;
}

int tfq_tflite_check(const uint8_t *bytes, size_t n, char *why, size_t why_size) {
  fb f = {bytes, n, NULL, 0};
  size_t root;
  if (n < 8 || memcmp(bytes + 4, "TFL3", 4) != 0) {
    snprintf(why, why_size, "no TFL3 flatbuffer identifier");
    return 0;
  }
  if (deref(&f, 0, &root) && table(&f, root, T_MODEL, 0)) return 1;
  snprintf(why, why_size, "%s at byte %zu of %zu: truncated or corrupt", f.why, f.at, n);
  return 0;
}
