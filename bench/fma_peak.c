/* A vectorised fp32 FMA loop for bench.peak: independent accumulator chains per thread,
   enough of them to cover the FMA latency on every port; built at run time with the
   machine's own instruction set (-march=native). */
#include <omp.h>

/* the widest vector register this build targets */
#if defined(__AVX512F__)
#define VEC_BYTES 64
#elif defined(__AVX__)
#define VEC_BYTES 32
#else
#define VEC_BYTES 16
#endif
typedef float vec __attribute__((vector_size(VEC_BYTES)));
#define CHAINS 12

/* Runs `iterations` rounds of CHAINS vector FMAs on each of `threads` threads; returns a
   sum of the results so that the compiler keeps the loop. */
double fma_loop(long iterations, int threads) {
    double total = 0.0;
#pragma omp parallel num_threads(threads) reduction(+ : total)
    {
        vec acc[CHAINS];
        vec scale, shift;
        for (int lane = 0; lane < (int)(sizeof(vec) / sizeof(float)); lane++) {
            scale[lane] = 0.999f;
            shift[lane] = 1e-3f * (float)(lane + 1 + omp_get_thread_num());
        }
        for (int chain = 0; chain < CHAINS; chain++) acc[chain] = shift * (float)(chain + 1);
        for (long i = 0; i < iterations; i++) {
#pragma GCC unroll 12
            for (int chain = 0; chain < CHAINS; chain++) acc[chain] = acc[chain] * scale + shift;
        }
        for (int chain = 0; chain < CHAINS; chain++)
            for (int lane = 0; lane < (int)(sizeof(vec) / sizeof(float)); lane++) total += acc[chain][lane];
    }
    return total;
}

/* Floating-point operations of one call per thread and iteration (2 per FMA lane). */
int flops_per_iteration(void) { return CHAINS * (int)(sizeof(vec) / sizeof(float)) * 2; }
