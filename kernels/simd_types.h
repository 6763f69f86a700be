/* FD_BODY for float and double (part of simd_instantiate.h). */
#define FD_REAL float
#define FD_T f
#define FD_FLOAT 1 /* for float-only paths of a body */
#define FD_SQRT sqrtf
#define FD_MATH(name) name##f /* libm in the body's precision */
#define FD_FAST(name) name##_f /* fastexp.h likewise */
#include FD_BODY
#undef FD_REAL
#undef FD_T
#undef FD_FLOAT
#undef FD_SQRT
#undef FD_MATH
#undef FD_FAST

#define FD_REAL double
#define FD_T d
#define FD_FLOAT 0
#define FD_SQRT sqrt
#define FD_MATH(name) name
#define FD_FAST(name) name##_d
#include FD_BODY
#undef FD_REAL
#undef FD_T
#undef FD_FLOAT
#undef FD_SQRT
#undef FD_MATH
#undef FD_FAST
