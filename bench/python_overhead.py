#!/usr/bin/python3
"""torchlens_cpp.log_forward_pass against the plain eager forward, in one
process: (a) metadata only (layers_to_save=None), (b) every activation saved.
Medians of interleaved runs, 1 intra-op thread, torch.no_grad(), random
weights (nothing is downloaded).

Besides the wall-clock ratios (the targets' measure) it prints the CPU-time
ratios (less sensitive to other jobs on a shared machine) and the minor page
faults per run of each case, and the cost of faulting in that many fresh pages
alone: holding every activation keeps their memory alive, and when glibc has
handed the previous log's memory back to the kernel (heap trim, munmap), each
new output lands on pages the kernel must map and zero, which a plain forward
that reuses its freed memory does not pay (docs/performance.md).

HEAP=kept first sets glibc's trim and mmap thresholds (mallopt, for this
process only) so that freed memory stays in the process: the saved run then
takes no page faults, which shows what the capture costs without them.

Usage: PYTHONPATH=build/python /usr/bin/python3 bench/python_overhead.py [MODEL=resnet18] [RUNS=15] [SIZE=224] [HEAP=default|kept]
"""

import ctypes
import mmap
import resource
import statistics
import sys
import time

import torch
import torchvision

import torchlens_cpp as tl

PAGE = mmap.PAGESIZE


def usage():
    r = resource.getrusage(resource.RUSAGE_SELF)
    return time.perf_counter(), r.ru_utime + r.ru_stime, r.ru_minflt


def fault_in(pages):
    """Maps `pages` fresh anonymous pages, writes one byte to each, unmaps them:
    what the kernel charges for handing out that much new memory."""
    if pages == 0:
        return
    with mmap.mmap(-1, pages * PAGE) as m:
        torch.frombuffer(m, dtype=torch.uint8)[::PAGE] = 1


def keep_heap():
    """glibc keeps freed memory instead of trimming the heap top or unmapping
    large chunks (both thresholds: setting one freezes the dynamic other)."""
    libc = ctypes.CDLL("libc.so.6")
    m_trim_threshold, m_mmap_threshold = -1, -3
    if not (libc.mallopt(m_mmap_threshold, 32 << 20) and libc.mallopt(m_trim_threshold, 1 << 30)):
        sys.exit("python_overhead: mallopt failed")


def main():
    name = sys.argv[1] if len(sys.argv) > 1 else "resnet18"
    runs = int(sys.argv[2]) if len(sys.argv) > 2 else 15
    size = int(sys.argv[3]) if len(sys.argv) > 3 else 224
    heap = sys.argv[4] if len(sys.argv) > 4 else "default"
    if heap not in ("default", "kept"):
        sys.exit(f"python_overhead: HEAP must be default or kept, not {heap!r}")
    if heap == "kept":
        keep_heap()
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
    wall = {k: [] for k in cases}
    cpu = {k: [] for k in cases}
    faults = {k: [] for k in cases}
    with torch.no_grad():
        for fn in cases.values():  # warm-up
            fn()
        for _ in range(runs):
            for k, fn in cases.items():
                w0, c0, f0 = usage()
                fn()
                w1, c1, f1 = usage()
                wall[k].append(w1 - w0)
                cpu[k].append(c1 - c0)
                faults[k].append(f1 - f0)
        log = tl.log_forward_pass(model, x)
        layers = len(log)
        saved_bytes = sum(layer.tensor_contents.numel() * layer.tensor_contents.element_size()
                          for layer in log.layer_list if layer.tensor_contents is not None)
        del log
    med = {k: statistics.median(v) * 1e3 for k, v in wall.items()}
    mcpu = {k: statistics.median(v) * 1e3 for k, v in cpu.items()}
    mflt = {k: int(statistics.median(v)) for k, v in faults.items()}
    print(f"{name} 1x3x{size}x{size}, {layers} layers, heap {heap}, median of {runs}: "
          f"plain {med['plain']:.1f} ms, metadata only {med['metadata'] / med['plain']:.2f}x, "
          f"every activation saved {med['saved'] / med['plain']:.2f}x")
    print(f"  CPU time: plain {mcpu['plain']:.1f} ms, metadata only "
          f"{mcpu['metadata'] / mcpu['plain']:.2f}x, every activation saved "
          f"{mcpu['saved'] / mcpu['plain']:.2f}x")

    # The page-fault floor, measured right after in the same process.
    def floor(pages):
        w, c = [], []
        for _ in range(max(5, runs // 2)):
            w0, c0, _ = usage()
            fault_in(pages)
            w1, c1, _ = usage()
            w.append(w1 - w0)
            c.append(c1 - c0)
        return statistics.median(w) * 1e3, statistics.median(c) * 1e3

    extra = max(0, mflt["saved"] - mflt["plain"])
    all_pages = -(-saved_bytes // PAGE)
    print(f"  page faults per run: plain {mflt['plain']}, metadata only {mflt['metadata']}, "
          f"saved {mflt['saved']}; saved activations {saved_bytes / 1e6:.1f} MB "
          f"({all_pages} pages)")
    for what, pages in (("the saved run's extra", extra), ("all", all_pages)):
        fw, fc = floor(pages)
        print(f"  faulting in {what} {pages} fresh pages alone: {fw:.1f} ms wall "
              f"({fw / med['plain']:.2f}x plain), {fc:.1f} ms CPU "
              f"({fc / mcpu['plain']:.2f}x plain)")


if __name__ == "__main__":
    main()
