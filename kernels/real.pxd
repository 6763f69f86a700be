# The one fused floating type of the compiled kernels: every kernel has a single body that
# Cython specializes for float32 and float64.
ctypedef fused real:
    float
    double
