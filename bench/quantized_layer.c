/* One quantized int8 layer timed in C, through kernels/quantized.h's own dispatch (so
 * FUSEDENSE_SIMD caps it): docs/performance-notes.md, "int8 on AVX2 at batch >= 2".
 *
 *   gcc -O3 -fno-math-errno -fno-trapping-math -fopenmp -Ikernels -Ibuild/generated \
 *       bench/quantized_layer.c -o /tmp/quantized_layer -lm
 *   FUSEDENSE_SIMD=avx2 /tmp/quantized_layer 256 784 128     # batch, fan_in, fan_out
 *
 * Prints the best of 9 rounds and a checksum of the outputs (the same for every FUSEDENSE_SIMD:
 * the integer sums are exact; the column sums VNNI needs are filled in too). */
#include <math.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include "quantized.h"

static double now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + 1e-9 * t.tv_nsec;
}

int main(int argc, char **argv)
{
    ptrdiff_t B = argc > 1 ? atol(argv[1]) : 256, k = argc > 2 ? atol(argv[2]) : 784, n = argc > 3 ? atol(argv[3]) : 128;
    ptrdiff_t k_pad = (k + 3) / 4 * 4, n_pad = (n + 15) / 16 * 16;
    size_t wbytes = (size_t)(k_pad * n_pad);
    uint8_t *buffer = aligned_alloc(64, wbytes + 12 * (size_t)n_pad + 64);
    int8_t *W = calloc(k_pad * n_pad, 1);
    fd_qlayer L;
    memset(&L, 0, sizeof L);
    L.scales = wbytes, L.bias = wbytes + 4 * n_pad, L.colsum = wbytes + 8 * n_pad;
    L.fan_in = k, L.fan_out = n, L.k_pad = k_pad, L.n_pad = n_pad;  /* identity, int8, dynamic scales */
    srand(1);
    for (ptrdiff_t i = 0; i < k; i++)
        for (ptrdiff_t j = 0; j < n; j++)
            W[i * n_pad + j] = (int8_t)(rand() % 255 - 127);
    /* pack_panels (fusedense.layout): panels of 64 columns, 4 k per 32-bit lane */
    for (ptrdiff_t j0 = 0, at = 0; j0 < n_pad; j0 += FD_Q_PANEL) {
        ptrdiff_t nb = n_pad - j0 < FD_Q_PANEL ? n_pad - j0 : FD_Q_PANEL;
        for (ptrdiff_t p = 0; p < k_pad / 4; p++)
            for (ptrdiff_t j = 0; j < nb; j++)
                for (int t = 0; t < 4; t++)
                    buffer[at++] = (uint8_t)W[(4 * p + t) * n_pad + j0 + j];
    }
    for (ptrdiff_t j = 0; j < n_pad; j++) {
        int32_t sum = 0;
        for (ptrdiff_t i = 0; i < k_pad; i++)
            sum += W[i * n_pad + j];
        ((float *)(buffer + L.scales))[j] = 0.01f;
        ((float *)(buffer + L.bias))[j] = 0;
        ((int32_t *)(buffer + L.colsum))[j] = 128 * sum;
    }
    float *x = malloc(B * k * sizeof(float)), *y = malloc(B * n * sizeof(float));
    for (ptrdiff_t i = 0; i < B * k; i++)
        x[i] = (float)rand() / RAND_MAX - 0.5f;
    int reps = (int)(1e9 / (double)(B * k * n)) + 1;
    double best = 1e9, checksum = 0;
    for (int round = 0; round < 9; round++) {
        double start = now();
        for (int r = 0; r < reps; r++)
            if (fd_q_dense_forward(&L, 1, 0, buffer, B, x, y, NULL))
                return 1;
        double t = (now() - start) / reps;
        best = t < best ? t : best;
    }
    for (ptrdiff_t i = 0; i < B * n; i++)
        checksum += y[i];
    printf("int8 path %s, batch %ld, %ld -> %ld: %.1f us, %.1f GMAC/s (checksum %.6g)\n", fd_q_int8_path(), (long)B,
           (long)k, (long)n, best * 1e6, (double)(B * k * n) / best * 1e-9, checksum);
    return 0;
}
