"""e^x - 1 and e^x for x <= 0 (float64, and e^x - 1 in float32 too) written so that LLVM vectorises the loops calling them (the numba mirror
of ``kernels/fastexp.h``): no libm call, no branch, no fast-math. Cody-Waite reduction
x = n ln2 + r, |r| <= ln2/2, a degree-14 Taylor polynomial for e^r - 1 (within ~1 ulp in
float64, the precision every activation here is computed in), and 2^n built from its bits;
e^x - 1 = 2^n p + (2^n - 1) keeps full relative precision near 0 (n = 0 there), e^x = 2^n p + 2^n
everywhere. Below the smallest normal number the results are -1 and 0; NaN stays NaN.
"""
import math

import numba
import numpy as np
from numba import types
from llvmlite import ir
from numba.extending import intrinsic, overload

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

    def _scale_f32(shifted):
        bits = (int(np.float32(shifted).view(np.uint32)) + 127) << 23
        return np.uint32(bits & 0xFFFFFFFF).view(np.float32)
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

    @intrinsic
    def _scale_f32(typingctx, shifted):
        """2^n from a float32 holding n in its low mantissa bits (see _reduced_f32)."""
        def codegen(context, builder, signature, args):
            i32 = ir.IntType(32)
            bits = builder.shl(builder.add(builder.bitcast(args[0], i32), ir.Constant(i32, 127)),
                               ir.Constant(i32, 23))
            return builder.bitcast(bits, ir.FloatType())
        return types.float32(types.float32), codegen


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


#: float32 constants of kernels/fastexp.h's fd_reduce_f (a degree-8 polynomial is within ~1 ulp
#: in float32): the float32 loops then run on twice the lanes, with half the terms
_F = np.float32
_LOWEST_F = _F(-87.33654)  # e^_LOWEST_F = the smallest normal float32
_ROUNDING_F, _LOG2_E_F = _F(12582912.0), _F(1.44269504088896341)
_LN2_HI_F, _LN2_LO_F = _F(0.693359375), _F(2.12194440e-4)
_C = [_F(1.0 / math.factorial(i)) for i in range(1, 9)]
_C1, _C2, _C3, _C4, _C5, _C6, _C7, _C8 = _C


@inline_kernel
def _reduced_f32(x):
    """_reduced in float32 (x >= _LOWEST_F or NaN)."""
    shifted = x * _LOG2_E_F + _ROUNDING_F
    n = shifted - _ROUNDING_F
    r = (x - n * _LN2_HI_F) + n * _LN2_LO_F
    p = r * (_C1 + r * (_C2 + r * (_C3 + r * (_C4 + r * (_C5 + r * (_C6 + r * (_C7 + r * _C8)))))))
    return p, _scale_f32(shifted)


@inline_kernel
def expm1_nonpos_f32(x):
    """e^x - 1 for float32 x <= 0 (or NaN), in float32."""
    p, scale = _reduced_f32(_LOWEST_F if x < _LOWEST_F else x)
    return _F(-1.0) if x < _LOWEST_F else p * scale + (scale - _C1)


@inline_kernel
def exp_nonpos_f32(x):
    """e^x for float32 x <= 0 (or NaN), in float32; 0 below the smallest normal float32."""
    p, scale = _reduced_f32(_LOWEST_F if x < _LOWEST_F else x)
    return _F(0.0) if x < _LOWEST_F else p * scale + scale


def exp_nonpos_of(x):
    """e^x for x <= 0 in x's precision: exp_nonpos_f32 for float32, else exp_nonpos."""
    return exp_nonpos(x)


@overload(exp_nonpos_of, jit_options={"fastmath": {"contract"}})
def _exp_nonpos_of(x):
    if x == types.float32:
        return lambda x: exp_nonpos_f32(x)
    return lambda x: exp_nonpos(np.float64(x))
