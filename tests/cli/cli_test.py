#!/usr/bin/python3
"""CLI tests: run the real `torchlens` binary on a real TorchScript model.

Usage: cli_test.py TORCHLENS_BINARY WORKDIR
Needs Debian's python3-torch and python3-numpy (to make the model and read the
outputs back, independently of torchlens).
"""

import json
import os
import subprocess
import sys
import unittest
import zipfile

import numpy as np
import torch

BIN = sys.argv[1]
WORK = sys.argv[2]


class Tiny(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 4, 3, padding=1)
        self.fc = torch.nn.Linear(4, 2)

    def forward(self, x):
        x = torch.relu(self.conv(x))
        x = x.mean(dim=(2, 3))
        return self.fc(x)


class Matmul(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.arange(6.0).reshape(2, 3))

    def forward(self, x):
        return x @ self.w


class Forked(torch.nn.Module):
    def branch(self, x):
        return torch.sin(x)

    def forward(self, x):
        fut = torch.jit.fork(self.branch, x)
        return torch.relu(x) + torch.jit.wait(fut)


class Tanh3(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = torch.nn.Linear(3, 3)

    def forward(self, x):
        return self.fc(self.fc(torch.tanh(torch.tanh(torch.tanh(x)))))


def run(*args):
    return subprocess.run([BIN, *args], capture_output=True, text=True, timeout=120)


class CliTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        os.makedirs(WORK, exist_ok=True)
        torch.manual_seed(0)
        cls.model = Tiny().eval()
        cls.pt = os.path.join(WORK, "tiny.pt")
        torch.jit.script(cls.model).save(cls.pt)
        cls.x = np.random.default_rng(0).standard_normal((1, 3, 8, 8)).astype(np.float32)
        cls.npy = os.path.join(WORK, "x.npy")
        np.save(cls.npy, cls.x)

    def test_log_writes_json_and_npz_with_real_values(self):
        js, npz = os.path.join(WORK, "t.json"), os.path.join(WORK, "t.npz")
        r = run("log", self.pt, "--input", self.npy, "--json", js, "--npz", npz, "--quiet")
        self.assertEqual(r.returncode, 0, r.stderr)
        with open(js) as f:
            meta = json.load(f)
        labels = [l["label"] for l in meta["layers"]]
        self.assertEqual(labels[0], "input_1")
        self.assertEqual(labels[-1], "output_1")
        conv = next(l for l in meta["layers"] if l["type"] == "conv2d")
        self.assertEqual(conv["module"], "conv")
        self.assertEqual(conv["param_shapes"], [[4, 3, 3, 3], [4]])
        self.assertEqual(conv["shape"], [1, 4, 8, 8])
        for key in ("label", "label_short", "type", "op", "pass", "num_passes", "module",
                    "modules", "parents", "children", "shape", "dtype", "bytes",
                    "param_shapes", "is_input", "is_output", "is_buffer",
                    "is_internally_generated", "has_saved_activation"):
            self.assertIn(key, conv)
        # the schema (docs/json.md): versions, and the fields TorchLens users read
        self.assertEqual(meta["schema_version"], 3)
        self.assertEqual(conv["interventions"], [])
        self.assertRegex(meta["torchlens_version"], r"^\d+\.\d+\.\d+$")
        self.assertEqual(conv["modules_exited"], ["conv:1"])
        self.assertTrue(conv["is_leaf_module_output"])
        self.assertEqual(conv["parent_arg_locs"],
                         [{"parent": "input_1", "arg": "input", "position": 0, "index": -1}])
        self.assertEqual(conv["min_distance_from_input"], 1)
        self.assertEqual(conv["grad_fn"], "ConvolutionBackward0")  # parameters require grad
        self.assertTrue(conv["requires_grad"])
        relu = next(l for l in meta["layers"] if l["type"] == "relu")
        self.assertEqual(relu["parents"], [conv["label"]])
        self.assertEqual(relu["modules_entered"], [])
        self.assertFalse(relu["is_submodule_output"])
        linear = next(l for l in meta["layers"] if l["type"] == "linear")
        mean = next(l for l in meta["layers"] if l["type"] == "mean")
        self.assertEqual(mean["modules_entered"], ["fc:1"])
        self.assertEqual(linear["modules"], ["fc:1"])
        self.assertTrue(meta["layers"][-1]["is_last_output"])
        self.assertEqual(meta["modules"][0]["exact"], True)
        self.assertEqual(meta["conditional_branch_edges"], [])
        arrays = np.load(npz)
        with torch.no_grad():
            x = torch.from_numpy(self.x)
            expected_conv = self.model.conv(x).numpy()
            expected_out = self.model(x).numpy()
        np.testing.assert_allclose(arrays[conv["label"]], expected_conv, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(arrays["output_1"], expected_out, rtol=1e-5, atol=1e-6)

    def test_save_subset(self):
        npz = os.path.join(WORK, "s.npz")
        r = run("log", self.pt, "--input-shape", "1,3,8,8", "--save", "conv2d_1,fc", "--npz", npz,
                "--quiet")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(sorted(np.load(npz).files), ["conv2d_1_1", "linear_1_4"])

    def test_summary_printed(self):
        r = run("log", self.pt, "--input-shape", "1,3,8,8")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn("Log of Tiny forward pass", r.stdout)
        self.assertIn("conv2d_1_1", r.stdout)

    def assertOneLineError(self, r, text):
        self.assertNotEqual(r.returncode, 0)
        lines = r.stderr.strip().splitlines()
        self.assertEqual(len(lines), 1, r.stderr)
        self.assertIn(text, lines[0])

    def test_missing_model(self):
        self.assertOneLineError(run("log", "/nonexistent.pt", "--input-shape", "1,3,8,8"),
                                "model file not found")

    def test_not_torchscript(self):
        bad = os.path.join(WORK, "bad.pt")
        with open(bad, "w") as f:
            f.write("not a zip archive")
        self.assertOneLineError(run("log", bad, "--input-shape", "1,3,8,8"),
                                "is not a TorchScript archive")

    def test_hostile_model_files(self):
        good = os.path.join(WORK, "matmul.pt")
        torch.jit.script(Matmul()).save(good)
        # the same archive, rewritten by Python's zipfile with w's shape changed
        # from (2, 3) to (2, 2**24) over its 24-byte storage: LibTorch loads it
        absurd = os.path.join(WORK, "absurd.pt")
        with zipfile.ZipFile(good) as src, zipfile.ZipFile(absurd, "w") as out:
            for info in src.infolist():
                data = src.read(info.filename)
                if info.filename.endswith("/data.pkl"):
                    sizes = b"(K\x02K\x03t(K\x03K\x01t"  # sizes (2, 3), strides (3, 1)
                    self.assertEqual(data.count(sizes), 1)
                    data = data.replace(sizes, b"(K\x02J\x00\x00\x00\x01t(J\x00\x00\x00\x01K\x01t")
                out.writestr(info, data)
        self.assertEqual(torch.jit.load(absurd).w.shape, (2, 2**24))
        self.assertOneLineError(run("log", absurd, "--input-shape", "1,2"),
                                "is corrupt or hostile: w (shape [2, 16777216]")
        truncated = os.path.join(WORK, "truncated.pt")
        with open(good, "rb") as f, open(truncated, "wb") as g:
            g.write(f.read()[:-100])
        self.assertOneLineError(run("log", truncated, "--input-shape", "1,2"),
                                "is not a TorchScript archive (no zip directory")
        r = run("log", good, "--input-shape", "1,2", "--quiet")
        self.assertEqual(r.returncode, 0, r.stderr)

    def test_wrong_shape(self):
        self.assertOneLineError(run("log", self.pt, "--input-shape", "1,5,8,8"), "channels")

    def test_bad_shape_text(self):
        self.assertOneLineError(run("log", self.pt, "--input-shape", "1,x"), "bad --input-shape")

    def test_unknown_key_suggests(self):
        self.assertOneLineError(
            run("log", self.pt, "--input-shape", "1,3,8,8", "--save", "conv2d_9_9"),
            "did you mean")

    def test_unknown_command_and_option(self):
        self.assertOneLineError(run("frobnicate"), "unknown command")
        self.assertOneLineError(run("log", self.pt, "--bogus"), "unknown option")

    def test_loop_options(self):
        # three tanhs in forward, outside any module: a chain by default, one
        # layer of three passes by TorchLens 1.0's rule; a Linear reused twice
        # stays one layer of two passes without loop detection
        pt = os.path.join(WORK, "tanh3.pt")
        torch.jit.script(Tanh3()).save(pt)

        def tanh_labels(*flags):
            r = run("metadata", pt, "--input-shape", "2,3", *flags)
            self.assertEqual(r.returncode, 0, r.stderr)
            layers = json.loads(r.stdout)["layers"]
            return ([l["label"] for l in layers if l["type"] == "tanh"],
                    [l["num_passes"] for l in layers if l["type"] == "linear"])

        self.assertEqual(tanh_labels(), (["tanh_1_1", "tanh_2_2", "tanh_3_3"], [2, 2]))
        self.assertEqual(tanh_labels("--min-param-free-loop-body", "1"),
                         (["tanh_1_1:1", "tanh_1_1:2", "tanh_1_1:3"], [2, 2]))
        self.assertEqual(tanh_labels("--no-detect-loops", "--min-param-free-loop-body", "1"),
                         (["tanh_1_1", "tanh_2_2", "tanh_3_3"], [2, 2]))
        self.assertOneLineError(run("metadata", pt, "--input-shape", "2,3",
                                    "--min-param-free-loop-body", "0"),
                                "expected a positive integer")

    def test_forked_model_is_refused(self):
        # ops TorchScript runs on another thread (torch.jit.fork) cannot be
        # logged in order: a clear refusal, never a silent hole
        pt = os.path.join(WORK, "forked.pt")
        torch.jit.script(Forked()).save(pt)
        self.assertOneLineError(run("log", pt, "--input-shape", "3"), "another thread")

    def test_demo(self):
        out = os.path.join(WORK, "demo")
        r = run("demo", "--out", out)
        self.assertEqual(r.returncode, 0, r.stderr)
        with open(os.path.join(out, "demo.json")) as f:
            meta = json.load(f)
        self.assertTrue(meta["is_recurrent"])
        self.assertTrue(meta["has_conditional"])
        arrays = np.load(os.path.join(out, "demo.npz"))
        self.assertIn("input_1", arrays.files)

    def test_gradients_npz_json_and_drawing(self):
        """--save-gradients with --backward output:1: every gradient equals the one
        retain_grad gives in plain PyTorch for the same loss."""
        js, npz = os.path.join(WORK, "g.json"), os.path.join(WORK, "g.npz")
        dot = os.path.join(WORK, "g.dot")
        r = run("log", self.pt, "--input", self.npy, "--save-gradients", "all",
                "--backward", "output:1", "--json", js, "--npz", npz, "--graph", dot, "--quiet")
        self.assertEqual(r.returncode, 0, r.stderr)
        with open(js) as f:
            meta = json.load(f)
        label = {l["type"]: l["label"] for l in meta["layers"]}
        self.assertTrue(all(l["has_saved_gradient"] for l in meta["layers"]))
        # plain PyTorch, independently
        x = torch.from_numpy(self.x).requires_grad_(True)
        m = self.model
        c = m.conv(x)
        r_ = torch.relu(c)
        mm = r_.mean(dim=(2, 3))
        y = m.fc(mm)
        for t in (c, r_, mm, y):
            t.retain_grad()
        y[:, 1].sum().backward()
        arrays = np.load(npz)
        for t, truth in (("input", x), ("conv2d", c), ("relu", r_), ("mean", mm), ("linear", y)):
            got = arrays["grad:" + label[t]]
            np.testing.assert_allclose(got, truth.grad.numpy(), rtol=1e-5, atol=1e-6, err_msg=t)
        self.assertIn(label["conv2d"], arrays.files)  # activations are still there
        with open(dot) as f:
            self.assertIn("#9197F6", f.read())  # gradient edges
        bad = run("log", self.pt, "--input", self.npy, "--backward", "output:7", "--quiet")
        self.assertEqual(bad.returncode, 2)
        self.assertIn("output:7", bad.stderr)


if __name__ == "__main__":
    unittest.main(argv=[sys.argv[0], "-v"])
