/* FD_BODY for float and double (part of simd_instantiate.h). */
#define FD_REAL float
#define FD_T f
#define FD_SQRT sqrtf
#include FD_BODY
#undef FD_REAL
#undef FD_T
#undef FD_SQRT

#define FD_REAL double
#define FD_T d
#define FD_SQRT sqrt
#include FD_BODY
#undef FD_REAL
#undef FD_T
#undef FD_SQRT
