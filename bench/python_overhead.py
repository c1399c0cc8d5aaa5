#!/usr/bin/python3
"""torchlens_cpp.log_forward_pass against the plain eager forward, in one
process: (a) metadata only (layers_to_save=None), (b) every activation saved.
Medians of interleaved runs, 1 intra-op thread, torch.no_grad(), random
weights (nothing is downloaded).

Usage: PYTHONPATH=build/python /usr/bin/python3 bench/python_overhead.py [MODEL=resnet18] [RUNS=15] [SIZE=224]
"""

import statistics
import sys
import time

import torch
import torchvision

import torchlens_cpp as tl


def main():
    name = sys.argv[1] if len(sys.argv) > 1 else "resnet18"
    runs = int(sys.argv[2]) if len(sys.argv) > 2 else 15
    size = int(sys.argv[3]) if len(sys.argv) > 3 else 224
    torch.set_num_threads(1)
    torch.manual_seed(0)
    model = getattr(torchvision.models, name)(weights=None).eval()
    x = torch.randn(1, 3, size, size)

    def plain():
        model(x)

    def metadata():
        tl.log_forward_pass(model, x, layers_to_save=None, random_seed=0)

    def saved():
        tl.log_forward_pass(model, x, random_seed=0)

    cases = {"plain": plain, "metadata": metadata, "saved": saved}
    times = {k: [] for k in cases}
    with torch.no_grad():
        for fn in cases.values():  # warm-up
            fn()
        for _ in range(runs):
            for k, fn in cases.items():
                t0 = time.perf_counter()
                fn()
                times[k].append(time.perf_counter() - t0)
        layers = len(tl.log_forward_pass(model, x, layers_to_save=None))
    med = {k: statistics.median(v) * 1e3 for k, v in times.items()}
    print(f"{name} 1x3x{size}x{size}, {layers} layers, median of {runs}: "
          f"plain {med['plain']:.1f} ms, metadata only {med['metadata'] / med['plain']:.2f}x, "
          f"every activation saved {med['saved'] / med['plain']:.2f}x")


if __name__ == "__main__":
    main()
