#!/usr/bin/python3
"""torchlens_cpp's gradients and interventions against plain eager runs, in
one process (medians of interleaved runs, 1 intra-op thread, random weights):

- forward + backward with every activation and every gradient saved
  (save_gradients=True) against a plain forward + backward;
- run_with_interventions with one live site (zero the relu of layer3.1)
  against a plain forward (no_grad);
- replay of that spec from a reference log (only the downstream cone runs)
  against a plain forward.

Usage: PYTHONPATH=build/python /usr/bin/python3 bench/python_capabilities.py [MODEL=resnet18] [RUNS=11] [SIZE=224]
"""

import statistics
import sys
import time

import torch
import torchvision

import torchlens_cpp as tl
from torchlens_cpp import intervene as iv


def main():
    name = sys.argv[1] if len(sys.argv) > 1 else "resnet18"
    runs = int(sys.argv[2]) if len(sys.argv) > 2 else 11
    size = int(sys.argv[3]) if len(sys.argv) > 3 else 224
    torch.set_num_threads(1)
    torch.manual_seed(0)
    model = getattr(torchvision.models, name)(weights=None).eval()
    x0 = torch.randn(1, 3, size, size)
    with torch.no_grad():
        ref = tl.log_forward_pass(model, x0, keep_replay=True, random_seed=0)
    late = [l.layer_label for l in ref if l.layer_type == "relu"][-3]  # ~85 % into the graph
    live_spec = iv.Spec().at(iv.func("relu") & iv.in_module("layer3.1"), iv.zero_ablate())
    replay_spec = iv.Spec().at(late, iv.zero_ablate())

    def plain_backward():
        x = x0.clone().requires_grad_(True)
        model(x).sum().backward()

    def logged_backward():
        x = x0.clone().requires_grad_(True)
        log = tl.log_forward_pass(model, x, save_gradients=True, random_seed=0)
        log.returned[0].sum().backward()

    def plain():
        with torch.no_grad():
            model(x0)

    def live():
        with torch.no_grad():
            iv.run_with_interventions(model, x0, live_spec)

    def replay():
        iv.replay(ref, replay_spec)

    cases = {"plain_backward": plain_backward, "logged_backward": logged_backward,
             "plain": plain, "live": live, "replay": replay}
    times = {k: [] for k in cases}
    for fn in cases.values():  # warm-up
        fn()
    for _ in range(runs):
        for k, fn in cases.items():
            t0 = time.perf_counter()
            fn()
            times[k].append(time.perf_counter() - t0)
    med = {k: statistics.median(v) * 1e3 for k, v in times.items()}
    print(f"{name} 1x3x{size}x{size}, median of {runs}: "
          f"forward+backward {med['plain_backward']:.1f} ms, with every activation and gradient "
          f"saved {med['logged_backward'] / med['plain_backward']:.2f}x; "
          f"forward {med['plain']:.1f} ms, live 1 site {med['live'] / med['plain']:.2f}x, "
          f"replay from {late} {med['replay'] / med['plain']:.2f}x")


if __name__ == "__main__":
    main()
