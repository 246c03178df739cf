"""PyTorch's attention on the shapes of benches/cuda/attention_bench.cu, same machine, same call.

scaled_dot_product_attention in bf16 (the flash backend for head dim 64), forward and backward
(`out.backward(dout)`), timed with CUDA events after warm-up, median of the runs. Prints the same
columns as the bench: ms and TFLOP/s (forward 4*B*H*Nq*Nk*64, backward 2.5x; causal half).
torch 2.11 on the GPU machine.
"""
import sys

import torch
import torch.nn.functional as F

RUNS = int(sys.argv[1]) if len(sys.argv) > 1 else 20


def timed(fn, runs):
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    times = []
    for r in range(runs + 3):
        start.record()
        fn()
        end.record()
        torch.cuda.synchronize()
        if r >= 3:
            times.append(start.elapsed_time(end))
    times.sort()
    return times[len(times) // 2]


def problem(name, b, h, nq, nk, causal):
    gen = torch.Generator(device="cuda").manual_seed(0)
    shape_q, shape_k = (b, h, nq, 64), (b, h, nk, 64)
    q = (torch.randn(shape_q, device="cuda", generator=gen) * 0.9).bfloat16().requires_grad_()
    k = (torch.randn(shape_k, device="cuda", generator=gen) * 0.9).bfloat16().requires_grad_()
    v = (torch.randn(shape_k, device="cuda", generator=gen) * 0.9).bfloat16().requires_grad_()
    dout = torch.randn(shape_q, device="cuda", generator=gen).bfloat16()
    flop = 4.0 * b * h * nq * nk * 64 * (0.5 if causal else 1.0)
    with torch.no_grad():
        fwd = timed(lambda: F.scaled_dot_product_attention(q, k, v, is_causal=causal), RUNS)
    out = F.scaled_dot_product_attention(q, k, v, is_causal=causal)

    def bwd():
        q.grad = k.grad = v.grad = None
        out.backward(dout, retain_graph=True)

    bw = timed(bwd, RUNS)
    print(f"torch {name:<22} fwd {fwd:7.3f} ms {flop / fwd * 1e-9:6.1f} TFLOP/s | "
          f"bwd {bw:7.3f} ms {2.5 * flop / bw * 1e-9:6.1f} TFLOP/s")


print(f"torch {torch.__version__}, {torch.cuda.get_device_name()}")
problem("vision 32x12x577", 32, 12, 577, 577, False)
problem("text causal 32x12x35", 32, 12, 35, 35, True)
problem("cross 32x12 35->577", 32, 12, 35, 577, False)
problem("vision 1x12x577", 1, 12, 577, 577, False)
