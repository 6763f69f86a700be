/* DRAM read bandwidth on 1 and 2 threads (docs/performance-notes.md, "All cores"):
   gcc -O2 -mavx512f -fopenmp -o /tmp/read_bandwidth bench/read_bandwidth.c && /tmp/read_bandwidth */
#include <stdio.h>
#include <stdlib.h>
#include <omp.h>
#include <immintrin.h>
/* read bandwidth: sum a 512 MiB float array, best of 10, on 1 and 2 threads */
int main(){ size_t n = (size_t)1 << 27; float* a = aligned_alloc(64, n * 4);
#pragma omp parallel for
for (size_t i = 0; i < n; i++) a[i] = 1.0f;
for (int t = 1; t <= 2; t++) { double best = 1e9; float sink = 0;
  for (int r = 0; r < 10; r++) { double s = omp_get_wtime(); float tot = 0;
#pragma omp parallel for num_threads(t) reduction(+:tot)
    for (size_t i = 0; i < n; i += 16) { __m512 v = _mm512_load_ps(a + i); tot += _mm512_reduce_add_ps(v); }
    double e = omp_get_wtime() - s; if (e < best) best = e; sink += tot; }
  printf("%d thread(s): %.1f GB/s (sink %g)\n", t, n * 4 / best / 1e9, sink); }
}
