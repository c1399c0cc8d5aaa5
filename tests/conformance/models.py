#!/usr/bin/python3
"""The conformance zoo: TorchScript-ready ports of TorchLens's example models
(its paper-era test suite, tests/example_models.py) and of the models research
code logs today (transformers from ModuleLists, RNNs, loops, reused blocks).

Each entry of ZOO is (constructor, inputs, mode). The ports keep each model's
structure (the ops, their order, modules, loops, branches) but are written for
`torch.jit.script`: Python-level constructs whose ATen spelling differs from
the function TorchLens sees are spelled as the ATen op (`torch.select(x, 0, 0)`
for `x[0]`, `x.add_(1)` for `x += 1`), so one model gives one structure on both
sides. Where a port changes a model, the comment says how.

Usage: /usr/bin/python3 tests/conformance/models.py OUTDIR [NAMES...]
writes OUTDIR/NAME.pt (the scripted model) and OUTDIR/NAME.in.pt (a scripted
container whose attribute `inputs` holds the inputs and `kind` says how forward
takes them: "args" = forward(*inputs), "list" = forward(inputs)).

The expected structure of every model, as TorchLens's rules give it, is in
tests/conformance/expected/NAME.txt (see scripts/derive_conformance.py and
tests/conformance/README.md).
"""

import os
import sys
from typing import Dict, List, Tuple

import torch
from torch import nn
import torch.nn.functional as F


# ---------------------------------------------------------------------------
# Ports of TorchLens's example models


class SimpleFF(nn.Module):
    def forward(self, x):
        x = x + 1
        return x * 2


class InPlaceFuncs(nn.Module):
    # returns its input, so everything else is an orphan (trimmed)
    def __init__(self):
        super().__init__()
        self.relu_inplace = nn.ReLU(inplace=True)
        self.relu_copy = nn.ReLU(inplace=False)

    def forward(self, x):
        a = x + 1
        b = self.relu_inplace(a)
        c = a * 10
        d = b + 3
        e = torch.log(b)
        f = self.relu_copy(e)
        g = f * 2 + c + d
        return x


class GeluModel(nn.Module):
    # x[0] spelled torch.select
    def forward(self, x):
        x = x + 1
        y = torch.select(x, 0, 0)
        y = F.gelu(y)
        return y + 2


class SimpleInternallyGenerated(nn.Module):
    def forward(self, x):
        x = x + torch.ones(x.shape)
        return x * 2


class NewTensorInside(nn.Module):
    # torch.Tensor([[...]]) spelled torch.tensor (the scriptable literal)
    def forward(self, x):
        x = x * 2
        y = torch.tensor([[1.0, 2.0, 3.0], [1.0, 2.0, 3.0], [1.0, 2.0, 3.0]])
        y = y * 3
        x = x + torch.mean(y)
        return torch.log(x)


class SimpleRandom(nn.Module):
    def forward(self, x):
        x = x + 2
        x = torch.log(x) + torch.rand(x.shape)
        return x + 3


class DropoutModel(nn.Module):
    def __init__(self, p: float):
        super().__init__()
        self.dropout = nn.Dropout(p=p)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x):
        x = x * 2
        x = self.relu(x)
        x = self.dropout(x)
        return x * 2


class BatchNormModel(nn.Module):
    def __init__(self):
        super().__init__()
        self.batchnorm = nn.BatchNorm2d(3)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x):
        x = x * 2
        x = self.relu(x)
        x = self.batchnorm(x)
        return x * 2


class ConcatTensors(nn.Module):
    def forward(self, x):
        x = torch.log(x)
        y = torch.sin(x)
        z = torch.tan(x)
        return torch.cat([x, y, z], dim=0)


class SplitTensor(nn.Module):
    # split size 2 of an 8-wide dimension (TorchLens: 56 of 224)
    def forward(self, x):
        x = x * 2
        parts = torch.split(x, 2, dim=2)
        return (parts[0] + parts[1]) * (parts[2] + parts[3])


class PassThrough(nn.Module):
    def forward(self, x):
        return x


class IdentityModule(nn.Module):
    def __init__(self):
        super().__init__()
        self.identity = PassThrough()

    def forward(self, x):
        x = x + 1
        x = x * 2
        x = self.identity(x)
        return x * 2


class DummyOperations(nn.Module):
    def forward(self, x):
        x = torch.log(x)
        y = torch.rand(x.shape)
        y = y + 1
        y = y * 0
        x = x * y
        x = x + 0
        x = torch.sin(x)
        return x * 1


class SameTensorArg(nn.Module):
    def forward(self, x):
        x = x * 2
        x = x + x
        return torch.sin(x)


class MultiInputs(nn.Module):
    def forward(self, x, y, z):
        a = x + y
        b = torch.log(z)
        return a**b


class ListInput(nn.Module):
    def forward(self, xs: List[torch.Tensor]):
        a = xs[0] + xs[1]
        b = torch.log(xs[2])
        return a**b


class MultiOutputs(nn.Module):
    def forward(self, x):
        x = x * 2
        a = torch.log(x)
        b = torch.sin(x)
        c = torch.tan(x)
        b = b * 3
        return a, b, c


class ListOutput(nn.Module):
    def forward(self, x):
        x = x * 2
        a = torch.log(x)
        b = torch.sin(x)
        c = torch.tan(x)
        b = b * 3
        return [a, b, c]


class DictOutput(nn.Module):
    def forward(self, x) -> Dict[str, torch.Tensor]:
        x = x * 2
        a = torch.log(x)
        b = torch.sin(x)
        c = torch.tan(x)
        b = b * 3
        return {"a": a, "b": b, "c": c}


class BufferModel(nn.Module):
    def __init__(self):
        super().__init__()
        self.register_buffer("buffer1", torch.ones(12, 12))
        self.register_buffer("buffer2", torch.rand(12, 12))

    def forward(self, x):
        x = x + self.buffer1
        x = x ** (self.buffer2 * (3 + torch.rand(12, 12)))
        return x * 2


class SimpleBranching(nn.Module):
    def forward(self, x):
        x = x + 1
        y = x * 2
        y = y + 3
        y = torch.log(y)
        z = x**2
        z = torch.sin(z)
        return x + y + z


class ConditionalBranching(nn.Module):
    def forward(self, x):
        if torch.mean(x) > 0:
            x = torch.sin(x)
            x = x + 2
            x = x * 3
        else:
            x = torch.cos(x)
            x = x + 1
            x = x * 4
            x = x**2
        return x


class RepeatedModule(nn.Module):
    def __init__(self):
        super().__init__()
        self.relu = nn.ReLU()

    def forward(self, x):
        x = x + 1
        x = self.relu(x)
        y = x + 2
        z = x * 3
        y = self.relu(y)
        return self.relu(y + z)


class Level01(nn.Module):
    def forward(self, x):
        return torch.sin(torch.tan(x))


class Level11(nn.Module):
    def __init__(self):
        super().__init__()
        self.level01 = Level01()

    def forward(self, x):
        x = x + 1
        x = x * 2
        return self.level01(x)


class Level12(nn.Module):
    def forward(self, x):
        x = x**3 + torch.ones(x.shape)
        return x / 5


class Level21(nn.Module):
    def __init__(self):
        super().__init__()
        self.level11 = Level11()
        self.level12 = Level12()

    def forward(self, x):
        x = x + 1
        x = self.level11(x) + torch.rand(x.shape)
        x = x + 9
        x = self.level12(x)
        return x / 5


class Level22(nn.Module):
    def __init__(self):
        super().__init__()
        self.level1_1 = Level11()
        self.level1_2 = Level12()

    def forward(self, x):
        x = x + 9
        x = self.level1_2(x)
        x = x - 5
        x = self.level1_2(self.level1_2(x))
        return x / 5


class NestedModules(nn.Module):
    def __init__(self):
        super().__init__()
        self.level21 = Level21()
        self.level22 = Level22()

    def forward(self, x):
        x = torch.cos(x)
        x1 = self.level21(x)
        x2 = self.level21(x)
        x3 = self.level21(x) + self.level21.level12(x)
        x = x1 * x2 + x3
        return self.level22(x)


class OrphanTensors(nn.Module):
    def forward(self, x):
        x = x + 1
        x = x * 2
        z = torch.ones(5, 5)
        z = z + 1
        a = z * 2
        b = z**2
        c = a + b
        return x**2


class SimpleLoopNoParam(nn.Module):
    def forward(self, x):
        x = x + 2
        for _ in range(3):
            x = torch.log(x)
            x = torch.sin(x)
        return x + 3


class SameOpRepeat(nn.Module):
    # `x += 1` spelled x.add_(1) (TorchLens logs __iadd__ as `iadd`, ATen as add_)
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(5, 5)

    def forward(self, x):
        x = x.clone()
        for _ in range(8):
            x.add_(1)
        x = torch.log(x)
        x = torch.flatten(x)
        for _ in range(8):
            x = self.fc(x)
        return x


class RepeatedOpTypeInLoop(nn.Module):
    def forward(self, x):
        for _ in range(8):
            x = x + 1
            x = torch.sin(x)
            x = torch.cos(x)
            x = x * 2
            x = torch.sin(x)
            x = torch.exp(x)
        return torch.flatten(x)


class VaryingLoopNoParam1(nn.Module):
    # the side computations are returned too (TorchLens leaves them unused;
    # TorchScript's compiler would remove unused code)
    def forward(self, x):
        x = x + 2
        sides: List[torch.Tensor] = []
        for i in range(8):
            x = torch.log(x)
            x = x + torch.ones(x.shape)
            x = torch.sin(x)
            if i % 2 == 0:
                y = x + 3
                y = torch.sin(y)
                y = y**2
                sides.append(y)
            x = torch.sin(x)
            if i % 2 == 1:
                z = x + 3
                z = torch.cos(z)
                sides.append(z)
        return x + 3, sides


class VaryingLoopNoParam2(nn.Module):
    def forward(self, x):
        x = x + 2
        for i in range(8):
            x = torch.log(x)
            x = x + torch.ones(x.shape)
            x = torch.sin(x)
            if i == 0 or i == 3 or i == 4:
                y = x + 3
                y = torch.sin(y)
                y = y**2
            else:
                y = x * torch.rand(x.shape)
                y = torch.cos(y)
            x = x + y
            x = torch.log(x)
        return x + 3


class VaryingLoopWithParam(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(5, 5)

    def forward(self, x):
        x = self.fc(x)
        x = x + 1
        x = x * 2
        x = self.fc(x)
        x = x + 1
        x = x * 2
        x = self.fc(x)
        x = x + 1
        x = x * 2
        x = x**3
        return self.fc(x)


class LoopingInternalFuncs(nn.Module):
    def forward(self, x):
        x = x + 3
        for _ in range(3):
            x = x * 2
            y = torch.rand(x.shape)
            z = torch.ones(x.shape)
            y = y + 1
            y = y + z
            x = x / y
            x = torch.sin(x)
        return x


class LoopingFromInputs1(nn.Module):
    def forward(self, x, y, z):
        start = torch.ones(x.shape)
        x = torch.sin(start) + x
        x = torch.log(x)
        x = torch.sin(x)
        x = x + y
        x = torch.log(x)
        x = torch.sin(x)
        x = x + z
        x = torch.log(x)
        return torch.sin(x)


class LoopingFromInputs2(nn.Module):
    def forward(self, xs: List[torch.Tensor]):
        acc = torch.zeros(xs[0].shape)
        for i in range(len(xs)):
            acc = acc + xs[i]
            acc = acc + 1
            acc = acc * 2
            acc = torch.sin(acc)
        return acc


class LoopingInputsAndOutputs(nn.Module):
    def forward(self, xs: List[torch.Tensor]):
        acc = torch.zeros(xs[0].shape)
        outputs: List[torch.Tensor] = []
        for i in range(len(xs)):
            acc = acc + xs[i]
            acc = acc + 1
            acc = acc * 2
            acc = torch.sin(acc)
            outputs.append(acc)
        return outputs


class StochasticLoop(nn.Module):
    def forward(self, x):
        while True:
            x = x + torch.rand(x.shape).abs()
            if torch.mean(x) > 100:
                break
        return x * 2


class RecurrentParamsSimple(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(5, 5)

    def forward(self, x):
        x = x + 1
        x = self.fc1(x)
        x = x * 2
        x = self.fc1(x)
        x = torch.log(x)
        x = torch.tan(x)
        x = self.fc1(x)
        x = x * 2
        x = self.fc1(x)
        return torch.log(x)


class RecurrentParamsComplex(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(5, 5)
        self.fc2 = nn.Linear(5, 5)

    def forward(self, x):
        x = x + 1
        x = self.fc1(x)
        x = x * 2
        x = self.fc2(x)
        x = torch.log(x)
        x = torch.sin(x)
        x = self.fc2(x)
        x = torch.log(x)
        x = self.fc1(x)
        x = x + 1
        x = x * 2
        x = x + 1
        x = x * 2
        x = self.fc2(x)
        x = torch.log(x)
        x = self.fc1(x)
        x = x + 2
        x = self.fc2(x)
        x = torch.log(x)
        x = self.fc2(x)
        x = torch.log(x)
        x = self.fc1(x)
        x = x + 1
        x = x * 2
        x = self.fc2(x)
        y = torch.log(x)
        y = torch.sin(y)
        y = self.fc1(y)
        y = y + 3
        z = torch.tan(x)
        z = torch.log(z)
        z = self.fc2(x) + self.fc2(z)
        return y * z


class LoopingParamsDoubleNested(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(5, 5)
        self.fc2 = nn.Linear(5, 5)

    def forward(self, x):
        x = self.fc1(x)
        for _ in range(3):
            x = x + 1
            x = self.fc2(x)
            x = x * 2
            x = self.fc2(x)
            x = x * 2
            x = self.fc1(x)
        return x


class ModuleLoopingClash1(nn.Module):
    def __init__(self):
        super().__init__()
        self.relu = nn.ReLU()

    def forward(self, x):
        x = x + 2
        x = torch.sin(x)
        x = self.relu(x)
        x = torch.log(x)
        for _ in range(4):
            x = self.relu(x)
            x = x + 1
        x = torch.cos(x)
        return self.relu(x)


class ModuleLoopingClash2(nn.Module):
    def __init__(self):
        super().__init__()
        self.relu = nn.ReLU()

    def forward(self, x):
        x = x + 2
        x = torch.sin(x)
        x = self.relu(x)
        x = torch.log(x)
        for i in range(6):
            if i % 2 == 0:
                x = self.relu(x)
            else:
                x = F.relu(x)
            x = x + 1
        x = torch.cos(x)
        return self.relu(x)


class ModuleLoopingClash3(nn.Module):
    # `x += ...` spelled x = x.add_(...)
    def __init__(self):
        super().__init__()
        self.relu = nn.ReLU()

    def forward(self, x):
        x = x + 2
        x = torch.sin(x)
        x = self.relu(x)
        x = torch.log(x)
        for i in range(6):
            if i % 2 == 0:
                x = x.add_(F.relu(x) + self.relu(torch.rand(x.shape)))
            x = x + 1
        x = torch.cos(x)
        return self.relu(x)


class LSTMModel(nn.Module):
    # final_hidden_state[-1] spelled torch.select
    def __init__(self):
        super().__init__()
        self.lstm = nn.LSTM(5, 10)
        self.label = nn.Linear(10, 5)

    def forward(self, x):
        h_0 = torch.zeros(1, x.shape[1], 10)
        c_0 = torch.zeros(1, x.shape[1], 10)
        output, (h, c) = self.lstm(x, (h_0, c_0))
        return self.label(torch.select(h, 0, -1))


class RNNModel(nn.Module):
    def __init__(self):
        super().__init__()
        self.rnn = nn.RNN(5, 10)
        self.label = nn.Linear(10, 5)

    def forward(self, x):
        h_0 = torch.zeros(1, x.shape[1], 10)
        output, h = self.rnn(x, h_0)
        return self.label(torch.select(h, 0, -1))


class UberModel1(nn.Module):
    # multiple inputs (a list), terminal nodes, internal tensors, an unread bool
    def forward(self, xs: List[torch.Tensor]):
        x, y, z = xs[0], xs[1], xs[2]
        x = x + 1
        y = y * 2
        y = y**3
        w = torch.rand(5, 5)
        w = w * 2
        w = w + 4
        wa = torch.cos(w)
        wa = torch.sin(wa)
        wb = torch.log(w)
        wb = torch.tan(wb)
        wb = wb + 1
        w = wa * wb
        w2 = w - 3
        w2 = w2 + 4
        w2 = w2 * 5
        w3 = torch.zeros(5, 5)
        w4 = torch.ones(5, 5)
        w3 = w3 + 1
        w3 = w3 * w4
        w2 = w2 + torch.zeros(5, 5)
        u = x + y + w + z
        v = u + 4
        v = u * 8
        v2 = v + 2
        v2 = v * 3
        v3 = v2.sum() > 5
        m = torch.ones(5)
        m1 = m * 2
        m2 = m + 3
        v = torch.cos(v)
        return u, v, y


class UberModel2(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 1, 3, padding=1)
        self.fc = nn.Linear(18, 3)
        self.identity = nn.Identity()

    def forward(self, x):
        x = self.conv(x)
        x = F.relu(x)
        x = F.max_pool2d(x, 1)
        x = x + torch.ones(1, 1, 3, 3) + torch.rand(1, 1, 3, 3)
        y = torch.ones(1, 2, 3)
        y = y + 1
        x = self.identity(x)
        x = x.flatten()
        x = self.fc(x)
        return self.identity(x)


class UberModel3(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(5, 5)

    def forward(self, x):
        x = self.fc(x)
        x = x + 1
        x = x * 2
        x = self.fc(x)
        x = x + 1
        x = x * 2
        x = self.fc(x)
        x = x + 1
        x = x * 2
        x = x**3
        x = self.fc(x)
        x = x + 2
        x = x * 3
        x = self.fc(x)
        x = x + 1
        x = x * 2
        x = self.fc(x)
        x = x * 2
        x = x + 3
        return self.fc(x)


class UberModel4(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(5, 5)
        self.fc2 = nn.Linear(5, 5)

    def forward(self, x):
        for _ in range(3):
            x = x + 1
            x = x * 2
            x = x - 1
        for i in range(3):
            x = torch.cos(x)
            x = self.fc1(x)
            x = torch.sin(x)
            for j in range(2):
                x = x - 4
                x = x * 2
                x = self.fc2(x)
                x = x - 4
            x = torch.log(x)
            x = self.fc1(x)
        x = x * 6
        return torch.tanh(x)


class UberModel6(nn.Module):
    def forward(self, x):
        x = x + 1
        x = x * 2
        x = x + 1
        x = x * 2
        x = x + 1
        x = x * 2
        x = x + 3
        x = x * 9
        x = x + 1
        x = x * 2
        x = x + 1
        x = x * 2
        x = torch.cos(x)
        x = torch.sin(x)
        x = torch.tan(x)
        x = torch.cos(x)
        x = torch.sin(x)
        x = torch.tan(x)
        x = torch.cos(x)
        x = torch.sin(x)
        x = x + 1
        return x * 2


class UberModel7(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(5, 5)

    def forward(self, x):
        x = x + 1
        x = torch.sin(x)
        x = x * 2
        x = self.fc(x)
        x = torch.cos(x)
        x = x - 5
        x = x * 2
        x = self.fc(x)
        x = torch.cos(x)
        x = x - 3
        x = x * 2
        x = self.fc(x)
        return torch.cos(x)


class UberModel8(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 1, 3, padding=1)
        self.fc = nn.Linear(18, 3)
        self.identity = nn.Identity()

    def forward(self, x):
        x = self.conv(x)
        x = F.relu(x)
        x = F.max_pool2d(x, 1)
        y = torch.ones(1, 1, 3, 3) + torch.zeros(1, 1, 3, 3)
        z = torch.rand(1, 1, 3, 3) ** y
        x = x * z
        x = self.identity(x)
        x = x.flatten()
        return self.fc(x)


class UberModel9(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 1, 3, padding=1)

    def forward(self, x):
        x = self.conv1(x)
        x2 = x * 2
        x3 = x2 + 4
        y1 = x + 1
        y2 = y1 * 2
        y31 = y2 + 1
        y32 = y2 * 3
        y321 = y32 + 4
        y322 = torch.sin(y321)
        y323 = torch.cos(y322)
        y324 = torch.tan(y323)
        y4 = y324 + y31
        z1 = x * 2
        z2 = z1 * 4
        a = torch.ones(3, 3)
        b = torch.zeros(3, 3)
        z3 = z2 + a + b
        w1 = x**3
        return torch.sum(torch.stack([y4, z3, w1]))


# ---------------------------------------------------------------------------
# Models researchers study today, and the defects of issue #9 one by one


class TransformerEncoderModel(nn.Module):
    """nn.TransformerEncoder: its layers are a ModuleList (`encoder.layers.0`)."""

    def __init__(self):
        super().__init__()
        layer = nn.TransformerEncoderLayer(d_model=16, nhead=2, dim_feedforward=32, batch_first=True)
        self.encoder = nn.TransformerEncoder(layer, num_layers=2, enable_nested_tensor=False)
        self.head = nn.Linear(16, 4)

    def forward(self, x):
        return self.head(self.encoder(x))


class Attention(nn.Module):
    def __init__(self, d: int, heads: int):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(d, 3 * d)
        self.proj = nn.Linear(d, d)

    def forward(self, x):
        b, t, d = x.shape[0], x.shape[1], x.shape[2]
        qkv = self.qkv(x).view(b, t, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)
        att = torch.matmul(q, k.transpose(-2, -1)) / 2.0
        mask = torch.ones(t, t).tril()
        att = att.masked_fill(mask == 0, -1e9)
        att = torch.softmax(att, dim=-1)
        y = torch.matmul(att, v).transpose(1, 2).reshape(b, t, d)
        return self.proj(y)


class GPTBlock(nn.Module):
    def __init__(self, d: int):
        super().__init__()
        self.ln1 = nn.LayerNorm(d)
        self.attn = Attention(d, 2)
        self.ln2 = nn.LayerNorm(d)
        self.mlp = nn.Sequential(nn.Linear(d, 2 * d), nn.GELU(), nn.Linear(2 * d, d))

    def forward(self, x):
        x = x + self.attn(self.ln1(x))
        return x + self.mlp(self.ln2(x))


class TinyGPT(nn.Module):
    """A GPT-style decoder: token + position embeddings, a ModuleList of blocks."""

    def __init__(self):
        super().__init__()
        self.tok = nn.Embedding(11, 8)
        self.pos = nn.Embedding(6, 8)
        self.blocks = nn.ModuleList([GPTBlock(8), GPTBlock(8)])
        self.ln_f = nn.LayerNorm(8)
        self.head = nn.Linear(8, 11, bias=False)

    def forward(self, idx):
        positions = torch.arange(0, idx.shape[1])
        x = self.tok(idx) + self.pos(positions)
        for block in self.blocks:
            x = block(x)
        return self.head(self.ln_f(x))


class GRUModel(nn.Module):
    def __init__(self):
        super().__init__()
        self.gru = nn.GRU(4, 6, batch_first=True)
        self.head = nn.Linear(6, 2)

    def forward(self, x):
        out, h = self.gru(x)
        return self.head(torch.select(out, 1, -1))


class LSTMCellLoop(nn.Module):
    """An LSTMCell stepped over time in forward: the cell's op is one layer, one pass per step."""

    def __init__(self):
        super().__init__()
        self.cell = nn.LSTMCell(3, 4)
        self.head = nn.Linear(4, 2)

    def forward(self, x):
        h = torch.zeros(x.shape[1], 4)
        c = torch.zeros(x.shape[1], 4)
        for t in range(x.shape[0]):
            h, c = self.cell(torch.select(x, 0, t), (h, c))
        return self.head(h)


class ResidualBlock(nn.Module):
    def __init__(self):
        super().__init__()
        self.seq = nn.Sequential(nn.Linear(4, 4), nn.ReLU())

    def forward(self, x):
        return self.seq(x) + x


class LoopedBlock(nn.Module):
    """`for _ in range(3): x = self.block(x)`: block and block.seq have 3 passes each."""

    def __init__(self):
        super().__init__()
        self.block = ResidualBlock()

    def forward(self, x):
        for _ in range(3):
            x = self.block(x)
        return x


class Sine(nn.Module):
    def forward(self, x):
        return torch.sin(x)


class ReusedBlocks(nn.Module):
    """One block called at two places; a parameter-free module called in a loop."""

    def __init__(self):
        super().__init__()
        self.block = ResidualBlock()
        self.act = Sine()
        self.mid = nn.Linear(4, 4)

    def forward(self, x):
        x = self.block(x)
        x = self.mid(x)
        x = self.block(x)
        for _ in range(3):
            x = self.act(x)
        return x


class NestedContainers(nn.Module):
    """A ModuleDict of ModuleLists of Sequentials."""

    def __init__(self):
        super().__init__()
        self.stages = nn.ModuleDict(
            {
                "down": nn.ModuleList([nn.Sequential(nn.Linear(4, 4), nn.Tanh()) for _ in range(2)]),
                "up": nn.ModuleList([nn.Sequential(nn.Linear(4, 4), nn.Sigmoid())]),
            }
        )

    def forward(self, x):
        for stage in self.stages["down"]:
            x = stage(x)
        for stage in self.stages["up"]:
            x = stage(x)
        return x


class IdentityInModel(nn.Module):
    """nn.Identity returns its input: TorchLens logs an `identity` op for it."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 4)
        self.id = nn.Identity()

    def forward(self, x):
        return torch.relu(self.id(self.fc(x)))


class ParallelBranches(nn.Module):
    """relu(x*2) + relu(x*3): two branches, no loop."""

    def forward(self, x):
        return torch.relu(x * 2) + torch.relu(x * 3)


def _helper(x):
    return torch.sin(x) * 2


class HelperTwice(nn.Module):
    """A helper called twice outside any loop, other ops in between."""

    def forward(self, x):
        x = _helper(x)
        x = torch.cos(x) + 1
        x = torch.exp(x)
        return _helper(x)


class TwoSinsInLoop(nn.Module):
    """Two sins at different positions of one loop body: two layers of 4 passes."""

    def forward(self, x):
        for _ in range(4):
            x = torch.sin(x)
            x = x * 2
            x = torch.sin(x)
            x = x + 1
        return x


class TwoLoops(nn.Module):
    """Two separate loops with the same body, and the same op after the second."""

    def forward(self, x):
        for _ in range(3):
            x = torch.sin(x)
            x = x * 2
        x = torch.exp(x)
        x = torch.cos(x)
        for _ in range(3):
            x = torch.sin(x)
            x = x * 2
        return torch.sin(x)


class FloatItem(nn.Module):
    """A float read used arithmetically: not a condition."""

    def forward(self, x):
        return x * x.mean().item()


class WhileLoop(nn.Module):
    """A while loop's condition is not an if-branch."""

    def forward(self, x):
        count = 0
        while bool(x.mean() > 0.1) and count < 10:
            x = x * 0.9
            count += 1
        return x


class CausalMaskAttention(nn.Module):
    """nanoGPT's CausalSelfAttention, one head: the causal mask is a registered buffer."""

    def __init__(self, d: int, t: int):
        super().__init__()
        self.qkv = nn.Linear(d, 3 * d)
        self.register_buffer("bias", torch.tril(torch.ones(t, t)).view(1, t, t))

    def forward(self, x):
        t = x.size(1)
        q, k, v = self.qkv(x).split(x.size(2), dim=2)
        att = torch.matmul(q, k.transpose(1, 2))
        mask = self.bias.narrow(1, 0, t).narrow(2, 0, t)
        att = att.masked_fill(mask == 0, float("-inf"))
        return torch.matmul(torch.softmax(att, dim=-1), v)


class Gain(nn.Module):
    def __init__(self, d: int):
        super().__init__()
        self.register_buffer("gain", torch.full((d,), 0.5))

    def forward(self, x):
        return x * self.gain


class MaskedMean(nn.Module):
    def forward(self, x, mask):
        return (x * mask).mean(-1)


class BuffersInContainers(nn.Module):
    """Where a buffer is placed: nanoGPT's layout (attention blocks with a causal-mask
    buffer in a ModuleList inside a ModuleDict; neither container is ever called), the
    root reading a child's buffer before calling the child, a buffer of a module that is
    never called, and the root passing its own buffer into a child."""

    def __init__(self):
        super().__init__()
        self.transformer = nn.ModuleDict(
            {"h": nn.ModuleList([CausalMaskAttention(8, 6), CausalMaskAttention(8, 6)])}
        )
        self.gain = Gain(8)
        self.table = Gain(8)
        self.pool = MaskedMean()
        self.register_buffer("keep", torch.ones(8))

    def forward(self, x):
        x = x * self.gain.gain + self.table.gain
        for block in self.transformer["h"]:
            x = x + block(x)
        return self.pool(self.gain(x), self.keep)


class StaleView(nn.Module):
    """A view read after its base was written in place."""

    def forward(self, x):
        x = x * 1.0
        y = x.t()
        x.add_(1)
        return torch.sin(y)


def _rand(*shape):
    return torch.rand(*shape, generator=_rand.gen)


ZOO = {
    # name: (constructor, input builder, "args" | "list", train mode)
    "SimpleFF": (SimpleFF, lambda: [_rand(2, 3, 4)], "args", False),
    "InPlaceFuncs": (InPlaceFuncs, lambda: [_rand(2, 3, 4)], "args", False),
    "GeluModel": (GeluModel, lambda: [_rand(2, 3, 4)], "args", False),
    "SimpleInternallyGenerated": (SimpleInternallyGenerated, lambda: [_rand(2, 3, 4)], "args", False),
    "NewTensorInside": (NewTensorInside, lambda: [_rand(3, 3) + 0.5], "args", False),
    "SimpleRandom": (SimpleRandom, lambda: [_rand(2, 3, 4)], "args", False),
    "DropoutTrain": (lambda: DropoutModel(0.5), lambda: [_rand(2, 3, 4)], "args", True),
    "DropoutEval": (lambda: DropoutModel(0.5), lambda: [_rand(2, 3, 4)], "args", False),
    "BatchNormTrain": (BatchNormModel, lambda: [_rand(2, 3, 4, 4)], "args", True),
    "BatchNormEval": (BatchNormModel, lambda: [_rand(2, 3, 4, 4)], "args", False),
    "ConcatTensors": (ConcatTensors, lambda: [_rand(2, 3, 4)], "args", False),
    "SplitTensor": (SplitTensor, lambda: [_rand(2, 3, 8)], "args", False),
    "IdentityModule": (IdentityModule, lambda: [_rand(2, 3, 4)], "args", False),
    "DummyOperations": (DummyOperations, lambda: [_rand(2, 3, 4)], "args", False),
    "SameTensorArg": (SameTensorArg, lambda: [_rand(2, 3, 4)], "args", False),
    "MultiInputs": (MultiInputs, lambda: [_rand(2, 3), _rand(2, 3), _rand(2, 3)], "args", False),
    "ListInput": (ListInput, lambda: [_rand(2, 3), _rand(2, 3), _rand(2, 3)], "list", False),
    "MultiOutputs": (MultiOutputs, lambda: [_rand(2, 3)], "args", False),
    "ListOutput": (ListOutput, lambda: [_rand(2, 3)], "args", False),
    "DictOutput": (DictOutput, lambda: [_rand(2, 3)], "args", False),
    "BufferModel": (BufferModel, lambda: [_rand(12, 12)], "args", False),
    "SimpleBranching": (SimpleBranching, lambda: [_rand(2, 3)], "args", False),
    "ConditionalTrue": (ConditionalBranching, lambda: [_rand(2, 3) + 0.5], "args", False),
    "ConditionalFalse": (ConditionalBranching, lambda: [-_rand(2, 3) - 0.5], "args", False),
    "RepeatedModule": (RepeatedModule, lambda: [_rand(2, 3)], "args", False),
    "NestedModules": (NestedModules, lambda: [_rand(2, 3)], "args", False),
    "OrphanTensors": (OrphanTensors, lambda: [_rand(2, 3)], "args", False),
    "SimpleLoopNoParam": (SimpleLoopNoParam, lambda: [_rand(2, 3)], "args", False),
    "SameOpRepeat": (SameOpRepeat, lambda: [_rand(5)], "args", False),
    "RepeatedOpTypeInLoop": (RepeatedOpTypeInLoop, lambda: [_rand(2, 3)], "args", False),
    "VaryingLoopNoParam1": (VaryingLoopNoParam1, lambda: [_rand(2, 3)], "args", False),
    "VaryingLoopNoParam2": (VaryingLoopNoParam2, lambda: [_rand(2, 3)], "args", False),
    "VaryingLoopWithParam": (VaryingLoopWithParam, lambda: [_rand(5)], "args", False),
    "LoopingInternalFuncs": (LoopingInternalFuncs, lambda: [_rand(2, 3)], "args", False),
    "LoopingFromInputs1": (LoopingFromInputs1, lambda: [_rand(2, 3), _rand(2, 3), _rand(2, 3)], "args", False),
    "LoopingFromInputs2": (LoopingFromInputs2, lambda: [_rand(2, 3), _rand(2, 3), _rand(2, 3)], "list", False),
    "LoopingInputsAndOutputs": (LoopingInputsAndOutputs, lambda: [_rand(2, 3), _rand(2, 3), _rand(2, 3)], "list", False),
    "StochasticLoop": (StochasticLoop, lambda: [torch.zeros(2, 2) + 95], "args", False),
    "RecurrentParamsSimple": (RecurrentParamsSimple, lambda: [_rand(5, 5)], "args", False),
    "RecurrentParamsComplex": (RecurrentParamsComplex, lambda: [_rand(5, 5)], "args", False),
    "LoopingParamsDoubleNested": (LoopingParamsDoubleNested, lambda: [_rand(5, 5)], "args", False),
    "ModuleLoopingClash1": (ModuleLoopingClash1, lambda: [_rand(2, 3)], "args", False),
    "ModuleLoopingClash2": (ModuleLoopingClash2, lambda: [_rand(2, 3)], "args", False),
    "ModuleLoopingClash3": (ModuleLoopingClash3, lambda: [_rand(2, 3)], "args", False),
    "LSTMModel": (LSTMModel, lambda: [_rand(5, 3, 5)], "args", False),
    "RNNModel": (RNNModel, lambda: [_rand(5, 3, 5)], "args", False),
    "UberModel1": (UberModel1, lambda: [_rand(5, 5), _rand(5, 5), _rand(5, 5)], "list", False),
    "UberModel2": (UberModel2, lambda: [_rand(2, 1, 3, 3)], "args", False),
    "UberModel3": (UberModel3, lambda: [_rand(5, 5)], "args", False),
    "UberModel4": (UberModel4, lambda: [_rand(5, 5)], "args", False),
    "UberModel6": (UberModel6, lambda: [_rand(2, 3)], "args", False),
    "UberModel7": (UberModel7, lambda: [_rand(5, 5)], "args", False),
    "UberModel8": (UberModel8, lambda: [_rand(2, 1, 3, 3)], "args", False),
    "UberModel9": (UberModel9, lambda: [_rand(1, 1, 3, 3)], "args", False),
    "TransformerEncoder": (TransformerEncoderModel, lambda: [_rand(2, 5, 16)], "args", False),
    "TinyGPT": (TinyGPT, lambda: [torch.randint(0, 11, (2, 6), generator=_rand.gen)], "args", False),
    "GRUModel": (GRUModel, lambda: [_rand(2, 5, 4)], "args", False),
    "LSTMCellLoop": (LSTMCellLoop, lambda: [_rand(4, 2, 3)], "args", False),
    "LoopedBlock": (LoopedBlock, lambda: [_rand(2, 4)], "args", False),
    "ReusedBlocks": (ReusedBlocks, lambda: [_rand(2, 4)], "args", False),
    "NestedContainers": (NestedContainers, lambda: [_rand(2, 4)], "args", False),
    "IdentityInModel": (IdentityInModel, lambda: [_rand(2, 4)], "args", False),
    "ParallelBranches": (ParallelBranches, lambda: [_rand(2, 4)], "args", False),
    "HelperTwice": (HelperTwice, lambda: [_rand(2, 4)], "args", False),
    "TwoSinsInLoop": (TwoSinsInLoop, lambda: [_rand(2, 4)], "args", False),
    "TwoLoops": (TwoLoops, lambda: [_rand(2, 4)], "args", False),
    "FloatItem": (FloatItem, lambda: [_rand(2, 4)], "args", False),
    "WhileLoop": (WhileLoop, lambda: [_rand(2, 4) + 0.5], "args", False),
    "StaleView": (StaleView, lambda: [_rand(3, 4)], "args", False),
    "BuffersInContainers": (BuffersInContainers, lambda: [_rand(2, 5, 8)], "args", False),
}


def build(name):
    """(model, inputs, kind): the eager model (seeded, in its mode) and its inputs."""
    ctor, make_inputs, kind, train = ZOO[name]
    torch.manual_seed(0)
    model = ctor()
    model.train(train)
    _rand.gen = torch.Generator().manual_seed(1)
    return model, make_inputs(), kind


class _Inputs(nn.Module):
    def __init__(self, inputs: List[torch.Tensor], kind: str):
        super().__init__()
        self.inputs = inputs
        self.kind = kind

    def forward(self) -> int:
        return len(self.inputs)


def export(outdir, names):
    os.makedirs(outdir, exist_ok=True)
    for name in names:
        model, inputs, kind = build(name)
        torch.jit.script(model).save(os.path.join(outdir, name + ".pt"))
        torch.jit.script(_Inputs(inputs, kind)).save(os.path.join(outdir, name + ".in.pt"))


if __name__ == "__main__":
    args = sys.argv[1:]
    stamp = None
    if "--stamp" in args:  # meson: touch this file when done
        stamp = args[args.index("--stamp") + 1]
        del args[args.index("--stamp") : args.index("--stamp") + 2]
    export(args[0], args[1:] or list(ZOO))
    if stamp:
        open(stamp, "w").write("\n".join(ZOO) + "\n")
