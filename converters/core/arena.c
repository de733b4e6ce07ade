/* Memory for repacked copies (kernels.h, tfq_arena_alloc).  A streaming step reads every
 * layer's weights once, and in Conformer L (33-56 MB of repacked weights next to a 32 MiB L3)
 * they come from DRAM.  In 4 KB pages each page starts with a TLB walk and with demand misses,
 * as hardware prefetchers stop at page boundaries.  So on Linux the copies are cut from chunks
 * of anonymous memory, 2 MiB aligned and advised MADV_HUGEPAGE (transparent huge pages; where
 * they are off or refused, ordinary pages as before).  On a 17-layer Conformer L stack of
 * layers at M = 4 (tfq_bench layers): w4 3.0 -> 2.5 ms, w2 2.7 -> 2.5 ms; no change where
 * weights fit in cache (Conformer M).  Chunks reserve address space only (MAP_NORESERVE):
 * memory is committed as copies fill it, at most one partly used huge page per chunk beyond
 * the copies.  Under AddressSanitizer each copy stays its own allocation, so that an overrun
 * is caught. */
#ifndef _DEFAULT_SOURCE
#define _DEFAULT_SOURCE /* MAP_ANONYMOUS, MAP_NORESERVE and madvise under -std=c11 */
#endif
#include <stdint.h>
#include <stdlib.h>

#include "tfq/kernels.h"

#if defined(__SANITIZE_ADDRESS__)
#define TFQ_ASAN 1
#elif defined(__has_feature) /* clang's spelling */
#if __has_feature(address_sanitizer)
#define TFQ_ASAN 1
#endif
#endif
#if defined(__linux__) && !defined(TFQ_ASAN)
#include <sys/mman.h>
#define TFQ_USE_ARENA 1
#else
#define TFQ_USE_ARENA 0
#endif

#define TFQ_HUGE_PAGE ((size_t)2 << 20)
#define TFQ_ARENA_CHUNK ((size_t)64 << 20)

/* A chunk that copies are cut from, one after another. */
struct tfq_arena {
  struct tfq_arena *next;
  void *map;      /* as mapped, for munmap */
  size_t map_bytes;
  uint8_t *base;  /* 2 MiB aligned */
  size_t size, used;
};

void *tfq_arena_alloc(tfq_arena **arenas, size_t bytes, int *in_arena) {
  size_t need = (bytes + 63) / 64 * 64;
  *in_arena = 0;
#if TFQ_USE_ARENA
  tfq_arena *a = *arenas;
  if (!a || a->size - a->used < need) {
    size_t size = need > TFQ_ARENA_CHUNK ? (need + TFQ_HUGE_PAGE - 1) / TFQ_HUGE_PAGE * TFQ_HUGE_PAGE
                                         : TFQ_ARENA_CHUNK;
    size_t map_bytes = size + TFQ_HUGE_PAGE;
    void *map = mmap(NULL, map_bytes, PROT_READ | PROT_WRITE,
                     MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    a = map == MAP_FAILED ? NULL : (tfq_arena *)malloc(sizeof *a);
    if (!a) {
      if (map != MAP_FAILED) munmap(map, map_bytes);
      return aligned_alloc(64, need);
    }
    a->map = map, a->map_bytes = map_bytes, a->size = size, a->used = 0;
    a->base = (uint8_t *)(((uintptr_t)map + TFQ_HUGE_PAGE - 1) & ~(uintptr_t)(TFQ_HUGE_PAGE - 1));
#ifdef MADV_HUGEPAGE
    (void)madvise(a->base, size, MADV_HUGEPAGE);  /* advice only: refused means small pages */
#endif
    a->next = *arenas;
    *arenas = a;
  }
  void *p = a->base + a->used;
  a->used += need;
  *in_arena = 1;
  return p;
#else
  (void)arenas;
  return aligned_alloc(64, need);
#endif
}

void tfq_arena_free_all(tfq_arena **arenas) {
#if TFQ_USE_ARENA
  for (tfq_arena *a = *arenas, *next; a; a = next) {
    next = a->next;
    munmap(a->map, a->map_bytes);
    free(a);
  }
#endif
  *arenas = NULL;
}
