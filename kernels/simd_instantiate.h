/* Compiles FD_BODY once per (type, ISA); see simd.h. Included by a kernel header. */
#define FD_NAME(name) FD_CAT3(name, FD_T, FD_ISA)

#define FD_ISA generic
#define FD_TARGET FD_BODY_ATTRIBUTES
#if defined(__AVX512F__)  /* -march=native (FUSEDENSE_NATIVE=1) on an AVX-512 CPU */
#define FD_VBYTES 64
#elif defined(__AVX2__)
#define FD_VBYTES 32
#else
#define FD_VBYTES 16
#endif
#include "simd_types.h"
#undef FD_ISA
#undef FD_TARGET
#undef FD_VBYTES

#ifdef FD_RUNTIME_DISPATCH
#define FD_ISA avx2
#define FD_TARGET __attribute__((target("avx2,fma"))) FD_BODY_ATTRIBUTES
#define FD_VBYTES 32
#include "simd_types.h"
#undef FD_ISA
#undef FD_TARGET
#undef FD_VBYTES

#define FD_ISA avx512
#define FD_TARGET __attribute__((target("avx512f,avx2,fma"))) FD_BODY_ATTRIBUTES
#define FD_VBYTES 64
#include "simd_types.h"
#undef FD_ISA
#undef FD_TARGET
#undef FD_VBYTES
#endif

#undef FD_NAME
