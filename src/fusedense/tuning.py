"""The tuning table: every blocking size and threshold of the compiled engines, in one place.

Both compiled engines read this file: ``setup.py`` turns it into ``tuning.h`` (one
``#define FD_TUNE_<ISA>_<NAME>`` per entry, plus ``FD_TUNE_<NAME>`` for the ISA-independent
entries) for the Cython build, and the Numba engine imports it and takes the row of the
instruction set LLVM compiles for. A constant that both engines use is written here once; a
value that must differ between engines is a separate, named entry with the reason beside it.

This module must import nothing but the standard library: ``setup.py`` executes it before
the package (or NumPy) can be imported. The measurements behind the values are in
``docs/performance-notes.md``.
"""

#: Instruction sets the compiled engines dispatch between, narrowest first.
ISAS = ("generic", "avx2", "avx512")

#: Entries that depend on the vector width: one value per ISA.
PER_ISA = {
    # rows of a batch tile (tile = rows x 2 vectors of accumulators): half of AVX-512's 32
    # registers, 12 of AVX2's 16 (as BLIS/OpenBLAS on Haswell), 8 of SSE2's 16
    "TILE_ROWS": {"generic": 4, "avx2": 6, "avx512": 8},
    # k slice of the in-place micro-kernels: a strip of B stays in L1 while the row tiles pass
    "KC": {"generic": 256, "avx2": 256, "avx512": 256},
    # k slice of the packed path's copy of B (AVX2: C reloaded a quarter as often)
    "PACKED_KC": {"generic": 256, "avx2": 1024, "avx512": 256},
    # Cython's packed path copies one k slice of B times as many columns as fit this: the copy
    # (in L2) and the next chunk, fetched while the copy is used, must fit L2 together. On
    # AVX-512 (Zen 4, 1 MiB L2), with the prefetch, 256 KiB took 0.95-0.99x the time of 1 MiB
    # on the FFN's b64 products, 1.0x at 64x1024x1024, 1.04x at 256 rows (docs/performance-notes.md,
    # "The large-weight products at one thread")
    "PACKED_CHUNK_BYTES": {"generic": 1 << 20, "avx2": 1 << 20, "avx512": 1 << 18},
}

#: Entries shared by every ISA.
COMMON = {
    # A product goes to BLAS from this many multiply-adds, with at least BLAS_MIN_ROWS rows and
    # columns: below it the micro-kernels match single-thread BLAS and wake no BLAS pool.
    "BLAS_MIN_WORK": 1 << 23,
    "BLAS_MIN_ROWS": 8,
    # A product packs B (and streams it from L1) from this size of B and this many rows of A.
    "PACKED_MIN_B_BYTES": 1 << 22,
    "PACKED_MIN_ROWS": 16,
    # Cython: the packed micro-kernels beat single-thread BLAS on a large W up to this batch.
    "PACKED_MAX_ROWS": 256,
    # Numba: its packed loops beat BLAS only up to this batch (its tiles are slower than C's).
    "NUMBA_PACKED_MAX_ROWS": 64,
    # Element-wise passes (activations, losses, optimizers) split across threads only in
    # blocks of at least this many elements: each parallel region costs a barrier.
    "PARALLEL_MIN_ELEMENTS": 1 << 16,
    # A network call uses OpenMP threads from this many multiply-adds (batch x sum of weight
    # sizes); below it one thread is faster on a shared machine.
    "PARALLEL_MIN_WORK": 1 << 24,
    # A training step uses OpenMP threads from this many multiply-adds. Its four regions a step
    # cost more than they share out at batch 32 of the 784-128-64-10 network (3.5 M): on the
    # 2-core VM two threads took 2.2-3.3x the one-thread time with 2^21 here (issue 17,
    # docs/performance-notes.md); batch 256 (28 M) gains 1.2-1.8x.
    "TRAIN_PARALLEL_MIN_WORK": 1 << 24,
    # --- Numba engine ---------------------------------------------------------------------
    # vectors of a lone row's tile: 8 independent accumulators hide the FMA latency (Cython's
    # FD_WIDE)
    "ROW_VECTORS": 8,
    # the packed path copies one k slice of B times as many columns as fit this (in L2;
    # Cython's PACKED_CHUNK_BYTES)
    "PACKED_B_BYTES": 1 << 20,
    # mlp_forward's and dense_forward's row blocks hold about this many bytes of output: in L2
    # for the epilogue, yet large, since every BLAS call re-packs W and wakes its threads
    "NUMBA_FORWARD_BLOCK_BYTES": 1 << 21,
}


#: Entries of the Cython kernels alone (no Numba counterpart), shared by every ISA.
CYTHON = {
    # with a transposed A (dW = xᵀ dz) every k step of a tile reads its own cache line of A:
    # shorter k slices, so those lines and the B strip fit L1 together
    "KC_TRANSPOSED": 64,
    # gemm_nb streams every row (B front to back) from this size of B, past a 512 KiB L2 ...
    "STREAM_ALL_MIN_B_BYTES": 1 << 20,
    # ... and the rows of 2- and 1-row tiles from this size, when those tiles do not span n
    "STREAM_MIN_B_BYTES": 1 << 16,
    # a lone streamed row reads 8 rows of B per pass (not 4) from this size: B comes from memory
    "STREAM_DEEP_B_BYTES": 1 << 23,
    # micro_gemm_atb makes a dW narrower than this transposed (lanes of a vector along its rows),
    # this many rows per pass
    "NARROW_COLUMNS": 16,
    "NARROW_PASS_ROWS": 16,
    # rows per block between a product and its epilogue: L1-sized after the micro-kernels,
    # large after BLAS, which re-packs all of W at every call
    "MICRO_BLOCK_BYTES": 1 << 15,
    "BLAS_BLOCK_BYTES": 1 << 24,
    # a network call carries this many rows through every layer before the next block
    "NETWORK_MICRO_ROWS": 32,
    "NETWORK_BLAS_ROWS": 256,
    # weights up to this size stay in a core's L2 across row blocks: the micro-kernel path
    "MICRO_MAX_WEIGHT_BYTES": 1 << 20,
    # With several threads, a layer's product of up to PACKED_MAX_ROWS rows and at least this many
    # multiply-adds is split over output columns, one slice of W per thread (batch 1 is bound by
    # memory bandwidth, which one core cannot draw alone; mid batches by the FMA units); slices
    # are whole multiples of SPLIT_COLUMNS (two AVX-512 tile widths: no slice ends mid-tile)
    "SPLIT_MIN_WORK": 1 << 20,
    "SPLIT_COLUMNS": 64,
    # the training step's backward tasks: rows of dW, batch rows of dx
    "DW_ROWS": 16,
    "DX_ROWS": 32,
    # elements per task of an element-wise pass (activations, optimizers)
    "ACTIVATION_CHUNK": 1 << 12,
    "OPTIMIZER_CHUNK": 1 << 13,
}


def table(isa: str) -> dict:
    """Every entry's value for ``isa`` (one of ISAS)."""
    if isa not in ISAS:
        raise ValueError(f"isa: expected one of {', '.join(ISAS)}, got {isa!r}")
    return {**COMMON, **{name: values[isa] for name, values in PER_ISA.items()}}


def c_header() -> str:
    """The C header setup.py writes for the Cython build."""
    lines = ["/* Generated by setup.py from src/fusedense/tuning.py: edit that file, not this one. */",
             "#ifndef FUSEDENSE_TUNING_H", "#define FUSEDENSE_TUNING_H"]
    lines += [f"#define FD_TUNE_{name} ({value})" for name, value in {**COMMON, **CYTHON}.items()]
    for name, values in PER_ISA.items():
        lines += [f"#define FD_TUNE_{isa}_{name} ({values[isa]})" for isa in ISAS]
    lines.append("#endif")
    return "\n".join(lines) + "\n"
