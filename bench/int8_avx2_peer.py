"""int8 with AVX2 only on an AVX-512 CPU: fusedense (run with FUSEDENSE_SIMD=avx2) against PyTorch's
dynamic int8 on its oneDNN engine capped to AVX2 (run with ONEDNN_MAX_CPU_ISA=AVX2), one thread;
one system and workload per process (ONNX Runtime's MLAS has no such cap):

    FUSEDENSE_SIMD=avx2 python bench/int8_avx2_peer.py fd mlp 32
    ONEDNN_MAX_CPU_ISA=AVX2 python bench/int8_avx2_peer.py torch mlp 32
"""
import os
import sys
import time

import numpy as np

system, work, batch = sys.argv[1], sys.argv[2], int(sys.argv[3])
sizes = [784, 128, 64, 10] if work == "mlp" else [1024, 4096, 1024]
x = np.random.default_rng(0).random((batch, sizes[0]), dtype=np.float32)
if system == "fd":
    import fusedense as fd
    fd.set_num_threads(1)
    acts = ["relu", "relu", "softmax"] if work == "mlp" else ["gelu", "identity"]
    net = fd.MLP(sizes, acts, random_state=0)
    q = fd.quantize(net, "int8")
    from fusedense._kernels import quantized
    path = quantized.paths()["int8"]
    run = lambda: q.predict(x)
else:
    import torch
    torch.set_num_threads(1)
    torch.backends.quantized.engine = "onednn"
    layers = []
    for i, (a, b) in enumerate(zip(sizes, sizes[1:])):
        layers.append(torch.nn.Linear(a, b))
        if i < len(sizes) - 2:
            layers.append(torch.nn.ReLU() if work == "mlp" else torch.nn.GELU())
    m = torch.ao.quantization.quantize_dynamic(torch.nn.Sequential(*layers), {torch.nn.Linear}, dtype=torch.qint8)
    xt = torch.from_numpy(x)
    path = os.environ.get("ONEDNN_MAX_CPU_ISA")
    def run():
        with torch.no_grad():
            return m(xt)
reps = max(3, int(20000 / batch)) if work == "mlp" else max(3, int(200 / batch))
for _ in range(3): run()
ts = []
for _ in range(9):
    t = time.perf_counter()
    for _ in range(reps): run()
    ts.append((time.perf_counter() - t) / reps)
print(f"{system} {work} b{batch} {path}: {np.median(ts)*1e6:.1f} us")
