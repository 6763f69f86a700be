/* Small-matrix products for shapes where a BLAS call costs more than the arithmetic
 * (batch 1-64, widths up to ~1024): register-blocked loops written so that GCC vectorizes
 * them without fast-math (each accumulator lane is its own variable, so no reassociation).
 *
 * The body is written once in microkernels_body.h and instantiated here for float (_f) and
 * double (_d). target_clones compiles each function for Haswell (AVX2 + FMA) and for any
 * x86-64; the loader picks the best one for the CPU at run time.
 */
#ifndef FUSEDENSE_MICROKERNELS_H
#define FUSEDENSE_MICROKERNELS_H

#include <stddef.h>

#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && !defined(FUSEDENSE_NO_CLONES)
#define FD_CLONES __attribute__((target_clones("arch=haswell", "default")))
#else
#define FD_CLONES
#endif

#define FD_REAL float
#define FD_NAME(name) name##_f
#define FD_LANES 16  /* a register tile is 2 AVX2 vectors wide */
#include "microkernels_body.h"
#undef FD_REAL
#undef FD_NAME
#undef FD_LANES

#define FD_REAL double
#define FD_NAME(name) name##_d
#define FD_LANES 8
#include "microkernels_body.h"
#undef FD_REAL
#undef FD_NAME
#undef FD_LANES

#endif
