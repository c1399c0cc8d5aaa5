#!/usr/bin/python3
"""`torchlens extract --gradients-of`: per-stimulus gradients, the real binary.

Usage: extract_gradients_test.py TORCHLENS_BINARY WORKDIR [RESNET18_DIR]
The expected gradients are computed here, independently of torchlens: the same
TorchScript file loaded with torch, each stimulus run alone, and
torch.autograd.grad of its scalar w.r.t. an intermediate recomputed in Python
(the submodules of the scripted model up to the layer, then the rest).
RESNET18_DIR holds resnet18.pt from scripts/export_torchvision.py (random
weights); without it the resnet18 case is skipped.
"""

import json
import os
import shutil
import subprocess
import sys
import unittest

import numpy as np
import torch

BIN = sys.argv[1]
WORK = sys.argv[2]
RESNET_DIR = sys.argv[3] if len(sys.argv) > 3 else ""


class Tiny(torch.nn.Module):
    """fc1 -> tanh -> a nonlinear mix -> fc2: intermediates recomputable by hand."""

    def __init__(self):
        super().__init__()
        self.fc1 = torch.nn.Linear(6, 8)
        self.fc2 = torch.nn.Linear(8, 5)

    def forward(self, x):
        h = torch.tanh(self.fc1(x))
        return self.fc2(h * h + h)

    def after_fc1(self, a):
        h = torch.tanh(a)
        return self.fc2(h * h + h)

    def after_tanh(self, h):
        return self.fc2(h * h + h)


class Mixer(torch.nn.Module):
    """Rows interact (x - x.mean(0)): per-stimulus gradients are not defined."""

    def __init__(self):
        super().__init__()
        self.fc = torch.nn.Linear(6, 3)

    def forward(self, x):
        return self.fc(x - x.mean(0))


def run(*args):
    return subprocess.run([BIN, *args], capture_output=True, text=True, timeout=600)


def path(*p):
    return os.path.join(WORK, *p)


def fresh(name):
    d = path(name)
    shutil.rmtree(d, ignore_errors=True)
    return d


def read_json(p):
    with open(p) as f:
        return json.load(f)


def scalar_of(y, how, target=None):
    """Stimulus i's scalar from its own output row y ([1, C])."""
    if how == "sum":
        return y.sum()
    if how.startswith("output:") and how != "output:argmax":
        return y[0, int(how[7:])]
    if how == "output:argmax":
        return y[0, int(y.detach().argmax())]
    if how == "loss:cross_entropy":
        return torch.nn.functional.cross_entropy(y, torch.tensor([int(target)]))
    raise ValueError(how)


class ExtractGradientsTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        shutil.rmtree(WORK, ignore_errors=True)
        os.makedirs(WORK)
        torch.manual_seed(0)
        cls.tiny = path("tiny.pt")
        torch.jit.script(Tiny().eval()).save(cls.tiny)
        cls.mixer = path("mixer.pt")
        torch.jit.script(Mixer().eval()).save(cls.mixer)
        cls.x = torch.randn(7, 6).numpy()  # batch 3: the last batch is padded
        cls.x_path = path("x.npy")
        np.save(cls.x_path, cls.x)
        cls.targets = np.array([0, 4, 2, 2, 1, 3, 0], dtype=np.int64)
        cls.targets_path = path("targets.npy")
        np.save(cls.targets_path, cls.targets)

    def extract(self, out, *extra, model=None, inputs=None, save="fc1,tanh", batch="3"):
        r = run("extract", model or self.tiny, "--inputs", inputs or self.x_path, "--save", save,
                "--batch-size", batch, "--out", out, "--no-progress", *extra)
        self.assertEqual(r.returncode, 0, r.stderr)
        return read_json(os.path.join(out, "index.json"))

    def expected_tiny(self, how):
        """d scalar_i / d fc1_i and d scalar_i / d tanh_i, one stimulus at a time."""
        model = torch.jit.load(self.tiny)
        d_fc1, d_tanh, d_x = [], [], []
        for i in range(len(self.x)):
            x = torch.from_numpy(self.x[i:i + 1]).clone().requires_grad_(True)
            a = model.fc1(x)
            a_leaf = a.detach().requires_grad_(True)
            h_leaf = torch.tanh(a_leaf).detach().requires_grad_(True)
            # the same scalar three ways: through the whole model, from fc1, from tanh
            s_x = scalar_of(model(x), how, self.targets[i])
            h = torch.tanh(a_leaf)
            s_a = scalar_of(model.fc2(h * h + h), how, self.targets[i])
            s_h = scalar_of(model.fc2(h_leaf * h_leaf + h_leaf), how, self.targets[i])
            d_x.append(torch.autograd.grad(s_x, x)[0].numpy())
            d_fc1.append(torch.autograd.grad(s_a, a_leaf)[0].numpy())
            d_tanh.append(torch.autograd.grad(s_h, h_leaf)[0].numpy())
        return np.concatenate(d_fc1), np.concatenate(d_tanh), np.concatenate(d_x)

    def test_tiny_every_scalar_equals_autograd_per_stimulus(self):
        for how in ["sum", "output:2", "output:argmax", "loss:cross_entropy"]:
            with self.subTest(how=how):
                extra = ["--gradients-of", how]
                if how == "loss:cross_entropy":
                    extra += ["--targets", self.targets_path]
                out = fresh("tiny-" + how.replace(":", "_"))
                index = self.extract(out, *extra, save="input.0,fc1,tanh")
                self.assertIn("gradients=" + how, index["options"])
                acts = {l["key"]: l for l in index["layers"]}
                grads = {l["key"]: l for l in index["gradients"]}
                self.assertEqual(sorted(grads), ["fc1", "input.0", "tanh"])
                for key, layer in grads.items():
                    self.assertEqual(layer["file"], acts[key]["label"] + ".grad.npy")
                    self.assertEqual(layer["shape"], acts[key]["shape"])
                d_fc1, d_tanh, d_x = self.expected_tiny(how)
                load = lambda k: np.load(os.path.join(out, grads[k]["file"]))
                np.testing.assert_allclose(load("fc1"), d_fc1, rtol=1e-5, atol=1e-6)
                np.testing.assert_allclose(load("tanh"), d_tanh, rtol=1e-5, atol=1e-6)
                np.testing.assert_allclose(load("input.0"), d_x, rtol=1e-5, atol=1e-6)
                # the activations are those of a run without gradients
                plain = self.extract(fresh("tiny-plain"), save="input.0,fc1,tanh")
                for l in plain["layers"]:
                    a = np.load(os.path.join(path("tiny-plain"), l["file"]))
                    b = np.load(os.path.join(out, l["file"]))
                    np.testing.assert_array_equal(a, b)

    def test_resnet18_input_and_layer3_gradients(self):
        model_path = os.path.join(RESNET_DIR, "resnet18.pt") if RESNET_DIR else ""
        if not os.path.exists(model_path):
            self.skipTest("no resnet18 export")
        torch.manual_seed(1)
        x = torch.randn(5, 3, 64, 64)
        x_path = path("rx.npy")
        np.save(x_path, x.numpy())
        out = fresh("resnet")
        index = self.extract(out, "--gradients-of", "output:7", model=model_path, inputs=x_path,
                             save="input.0,layer3", batch="2")
        grads = {l["key"]: np.load(os.path.join(out, l["file"])) for l in index["gradients"]}
        m = torch.jit.load(model_path).eval()
        want_x, want_l3 = [], []
        for i in range(len(x)):
            xi = x[i:i + 1].clone().requires_grad_(True)
            want_x.append(torch.autograd.grad(m(xi)[0, 7], xi)[0].numpy())
            with torch.no_grad():
                h = m.maxpool(m.relu(m.bn1(m.conv1(x[i:i + 1]))))
                h = m.layer3(m.layer2(m.layer1(h)))
            h = h.clone().requires_grad_(True)
            y = m.fc(torch.flatten(m.avgpool(m.layer4(h)), 1))
            want_l3.append(torch.autograd.grad(y[0, 7], h)[0].numpy())
        want_x, want_l3 = np.concatenate(want_x), np.concatenate(want_l3)
        self.assertEqual(grads["layer3"].shape, want_l3.shape)
        scale = np.abs(want_x).max()
        np.testing.assert_allclose(grads["input.0"], want_x, rtol=1e-4, atol=1e-5 * scale)
        scale = np.abs(want_l3).max()
        np.testing.assert_allclose(grads["layer3"], want_l3, rtol=1e-4, atol=1e-5 * scale)

    def test_sharded_and_merged_equals_unsharded(self):
        extra = ["--gradients-of", "loss:cross_entropy", "--targets", self.targets_path]
        ref_dir = fresh("ref")
        ref = self.extract(ref_dir, *extra, "--flatten", "--dtype", "float64", batch="2")
        out = fresh("sharded")
        for k in range(3):
            r = run("extract", self.tiny, "--inputs", self.x_path, "--save", "fc1,tanh",
                    "--batch-size", "2", "--out", out, "--no-progress", "--flatten",
                    "--dtype", "float64", "--shard", f"{k}/3", *extra)
            self.assertEqual(r.returncode, 0, r.stderr)
        # the plan holds the gradient option and the targets: another shard command differs
        other = path("other-targets.npy")
        np.save(other, self.targets[::-1].copy())
        for bad, want in [(["--gradients-of", "sum"], "gradients=sum"),
                          (["--gradients-of", "loss:cross_entropy", "--targets", other],
                           "targets=sha256:")]:
            r = run("extract", self.tiny, "--inputs", self.x_path, "--save", "fc1,tanh",
                    "--batch-size", "2", "--out", out, "--no-progress", "--flatten",
                    "--dtype", "float64", "--shard", "0/3", *bad)
            self.assertEqual(r.returncode, 2, r.stderr)
            self.assertIn("does not match the plan", r.stderr)
            self.assertIn(want, r.stderr)
        r = run("merge", out)
        self.assertEqual(r.returncode, 0, r.stderr)
        names = ["index.json"] + [l["file"] for l in ref["layers"] + ref["gradients"]]
        self.assertEqual(len(ref["gradients"]), 2)
        for name in names:
            with open(os.path.join(out, name), "rb") as f, open(os.path.join(ref_dir, name),
                                                                   "rb") as g:
                self.assertTrue(f.read() == g.read(), name)
        d_fc1, d_tanh, _ = self.expected_tiny("loss:cross_entropy")
        grads = {l["key"]: np.load(os.path.join(out, l["file"])) for l in ref["gradients"]}
        self.assertEqual(grads["fc1"].dtype, np.float64)
        np.testing.assert_allclose(grads["fc1"], d_fc1, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(grads["tanh"], d_tanh, rtol=1e-5, atol=1e-6)

    def test_resume_continues_the_gradient_files(self):
        extra = ["--gradients-of", "output:argmax"]
        ref_dir = fresh("resume-ref")
        ref = self.extract(ref_dir, *extra, batch="2")
        out = fresh("resume")
        self.extract(out, *extra, batch="2")
        index = read_json(os.path.join(out, "index.json"))
        index["rows_done"] = 2  # as if killed after the first batch
        index["complete"] = False
        with open(os.path.join(out, "index.json"), "w") as f:
            json.dump(index, f)
        r = run("extract", self.tiny, "--inputs", self.x_path, "--out", out, "--resume",
                "--no-progress", *extra)
        self.assertEqual(r.returncode, 0, r.stderr)
        for l in ref["layers"] + ref["gradients"]:
            a = np.load(os.path.join(ref_dir, l["file"]))
            b = np.load(os.path.join(out, l["file"]))
            np.testing.assert_array_equal(a, b)
        # resuming without the gradient option is another run
        r = run("extract", self.tiny, "--inputs", self.x_path, "--out", out, "--resume",
                "--no-progress")
        self.assertEqual(r.returncode, 2)
        self.assertIn("the options differs", r.stderr)

    def test_bad_values_are_one_line_errors(self):
        bad_targets = path("bad-targets.npy")
        np.save(bad_targets, np.zeros((7, 2), np.int64))
        float_targets = path("float-targets.npy")
        np.save(float_targets, np.zeros(7, np.float32))
        big_targets = path("big-targets.npy")
        np.save(big_targets, np.array([0, 1, 2, 3, 4, 5, 9], np.int64))
        cases = [
            (["--gradients-of", "output:x"], "bad --gradients-of 'output:x'"),
            (["--gradients-of", "logits"], "use sum, output:K"),
            (["--gradients-of", "output:-1"], "bad --gradients-of"),
            (["--gradients-of", "loss:cross_entropy"], "needs the class of every stimulus"),
            (["--targets", self.targets_path], "--targets is for --gradients-of"),
            (["--gradients-of", "loss:cross_entropy", "--targets", bad_targets],
             "one class index per stimulus: [7] integers"),
            (["--gradients-of", "loss:cross_entropy", "--targets", float_targets],
             "one class index per stimulus"),
            (["--gradients-of", "loss:cross_entropy", "--targets", path("missing.npy")],
             "targets not found"),
            (["--gradients-of", "output:5"], "has 5 columns (0..4)"),
            (["--gradients-of", "loss:cross_entropy", "--targets", big_targets],
             "a target (9) is outside 0..4"),
        ]
        for extra, want in cases:
            with self.subTest(extra=extra):
                r = run("extract", self.tiny, "--inputs", self.x_path, "--save", "fc1",
                        "--out", fresh("bad"), "--no-progress", *extra)
                self.assertEqual(r.returncode, 2, r.stderr)
                self.assertEqual(r.stderr.count("\n"), 1, r.stderr)
                self.assertIn(want, r.stderr)
        # rows that interact are detected on a padded batch (7 stimuli, batch 3)
        r = run("extract", self.mixer, "--inputs", self.x_path, "--save", "input.0,fc",
                "--batch-size", "3", "--out", fresh("bad"), "--no-progress",
                "--gradients-of", "sum")
        self.assertEqual(r.returncode, 2, r.stderr)
        self.assertEqual(r.stderr.count("\n"), 1, r.stderr)
        self.assertIn("the rows of a batch interact", r.stderr)


if __name__ == "__main__":
    unittest.main(argv=[sys.argv[0]], verbosity=2)
