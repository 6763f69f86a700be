"""e^x - 1 and e^x for x <= 0 written so that LLVM vectorises the loops calling them (the numba mirror
of ``kernels/fastexp.h``): no libm call, no branch, no fast-math. Cody-Waite reduction
x = n ln2 + r, |r| <= ln2/2, a degree-14 Taylor polynomial for e^r - 1 (within ~1 ulp in
float64, the precision every activation here is computed in), and 2^n built from its bits;
e^x - 1 = 2^n p + (2^n - 1) keeps full relative precision near 0 (n = 0 there), e^x = 2^n p + 2^n
everywhere. Below the smallest normal number the results are -1 and 0; NaN stays NaN.
"""
import numba
import numpy as np
from numba import types
from numba.extending import intrinsic

from .jit import inline_kernel

_LOWEST = -708.3964185322641  # e^_LOWEST = the smallest normal float64
_ROUNDING = 6755399441055744.0  # 1.5 * 2^52: adding it rounds to an integer kept in the low bits
_LOG2_E = 1.4426950408889634074
_LN2_HI, _LN2_LO = 6.93147180369123816490e-01, 1.90821492927058770002e-10

if numba.config.DISABLE_JIT:  # the kernels run as plain Python: the intrinsics cannot
    def _bits(x):
        return np.float64(x).view(np.int64)

    def _from_bits(bits):
        return np.int64(bits).view(np.float64)
else:
    @intrinsic
    def _bits(typingctx, x):
        """The bits of a float64 as an int64."""
        def codegen(context, builder, signature, args):
            return builder.bitcast(args[0], context.get_value_type(types.int64))
        return types.int64(types.float64), codegen

    @intrinsic
    def _from_bits(typingctx, bits):
        """The float64 with these bits."""
        def codegen(context, builder, signature, args):
            return builder.bitcast(args[0], context.get_value_type(types.float64))
        return types.float64(types.int64), codegen


@inline_kernel
def _reduced(c):
    """(p, 2^n) with e^c = 2^n (1 + p): c = n ln2 + r, p = e^r - 1 (c >= _LOWEST or NaN)."""
    shifted = c * _LOG2_E + _ROUNDING
    n = shifted - _ROUNDING  # round(c / ln 2)
    r = (c - n * _LN2_HI) - n * _LN2_LO
    scale = _from_bits((_bits(shifted) + 1023) << 52)  # 2^n (the rounding constant shifts out)
    p = r * (1.0 + r * (1.0 / 2 + r * (1.0 / 6 + r * (1.0 / 24 + r * (1.0 / 120 + r * (
        1.0 / 720 + r * (1.0 / 5040 + r * (1.0 / 40320 + r * (1.0 / 362880 + r * (
            1.0 / 3628800 + r * (1.0 / 39916800 + r * (1.0 / 479001600 + r * (
                1.0 / 6227020800.0 + r * (1.0 / 87178291200.0))))))))))))))
    return p, scale


@inline_kernel
def expm1_nonpos(x):
    """e^x - 1 for x <= 0 (or NaN), in float64."""
    p, scale = _reduced(_LOWEST if x < _LOWEST else x)  # NaN < _LOWEST is false: NaN goes on
    return -1.0 if x < _LOWEST else p * scale + (scale - 1.0)


@inline_kernel
def exp_nonpos(x):
    """e^x for x <= 0 (or NaN), in float64; 0 below the smallest normal number."""
    p, scale = _reduced(_LOWEST if x < _LOWEST else x)
    return 0.0 if x < _LOWEST else p * scale + scale
