"""Writes the model seeds of tests/fuzz/corpus/model (run from the repository root:
/usr/bin/python3 tests/fuzz/make_model_seeds.py tests/fuzz/corpus/model). Random weights."""
import torch, zipfile, sys
out = sys.argv[1]
torch.manual_seed(0)
class Matmul(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.arange(6.0).reshape(2, 3))
    def forward(self, x):
        return x @ self.w
class Attrs(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = torch.nn.Linear(3, 2)
        self.register_buffer("b", torch.ones(2))
        self.c = torch.arange(2.0)  # a plain tensor attribute: a constant once traced
    def forward(self, x):
        return self.lin(x) + self.b + self.c
torch.jit.script(Matmul()).save(out + "/matmul.pt")
torch.jit.trace(Attrs(), torch.ones(1, 3)).save(out + "/traced_constant.pt")
# w's shape rewritten to (2, 2**24) over its 24-byte storage (LibTorch loads it)
with zipfile.ZipFile(out + "/matmul.pt") as src, zipfile.ZipFile(out + "/absurd_shape.pt", "w") as dst:
    for info in src.infolist():
        data = src.read(info.filename)
        if info.filename.endswith("/data.pkl"):
            data = data.replace(b"(K\x02K\x03t(K\x03K\x01t", b"(K\x02J\x00\x00\x00\x01t(J\x00\x00\x00\x01K\x01t")
        dst.writestr(info, data)
# storage data/0 claimed as 2**24 floats over its 24-byte record (LibTorch sizes the storage by
# the claim: reads past the allocation)
with zipfile.ZipFile(out + "/matmul.pt") as src, zipfile.ZipFile(out + "/storage_claim.pt", "w") as dst:
    for info in src.infolist():
        data = src.read(info.filename)
        if info.filename.endswith("/data.pkl"):
            data = data.replace(b"X\x03\x00\x00\x00cpuq\x06K\x06t", b"X\x03\x00\x00\x00cpuq\x06J\x00\x00\x00\x01t")
        dst.writestr(info, data)
# the storage key '0' given a length of 2**32 - 1 (LibTorch allocates 4 GiB for the string)
with zipfile.ZipFile(out + "/matmul.pt") as src, zipfile.ZipFile(out + "/string_length.pt", "w") as dst:
    for info in src.infolist():
        data = src.read(info.filename)
        if info.filename.endswith("/data.pkl"):
            data = data.replace(b"X\x01\x00\x00\x000q", b"X\xff\xff\xff\xff0q", 1)
        dst.writestr(info, data)
# regression_*.pt: found by fuzzing (tests/fuzz/README.md); kept as found, not regenerated here.
# regression_string_length.pt: found by the replay driver (a BINUNICODE length of 2**32 - 1 in
# data.pkl; LibTorch allocated 4 GiB for it); kept as found, not regenerated here.
