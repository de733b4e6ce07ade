/* A small strict JSON reader for the model metadata (model-file input: every read is bounds
 * checked against the buffer, nesting is limited, numbers and strings are validated).  The
 * parse builds a tree of nodes owned by one tfq_json document. */
#ifndef TFQ_STREAM_JSON_H
#define TFQ_STREAM_JSON_H

#include <stddef.h>

typedef enum tfq_json_type {
  TFQ_JSON_NULL, TFQ_JSON_BOOL, TFQ_JSON_NUMBER, TFQ_JSON_STRING, TFQ_JSON_ARRAY, TFQ_JSON_OBJECT
} tfq_json_type;

typedef struct tfq_json {
  tfq_json_type type;
  double number;            /* NUMBER; BOOL: 0 or 1 */
  char *string;             /* STRING (NUL-terminated, UTF-8, may hold no NUL) */
  size_t length;            /* STRING: bytes; ARRAY / OBJECT: children */
  char *key;                /* member name when the parent is an OBJECT */
  struct tfq_json *child;   /* first child of an ARRAY / OBJECT */
  struct tfq_json *next;    /* next sibling */
} tfq_json;

/* Parse size bytes (no terminator needed).  NULL on error, with a message in err
 * ("... at byte N"). Free with tfq_json_free. */
tfq_json *tfq_json_parse(const char *text, size_t size, char *err, size_t err_size);
void tfq_json_free(tfq_json *root);

const tfq_json *tfq_json_get(const tfq_json *object, const char *key);  /* NULL if absent */
const tfq_json *tfq_json_at(const tfq_json *array, size_t index);
/* 1 if node is a NUMBER holding an integer within [lo, hi], stored in *out. */
int tfq_json_int(const tfq_json *node, long lo, long hi, long *out);

#endif
