#!/usr/bin/python3
"""`torchlens extract` tests: the real binary on real TorchScript models.

Usage: extract_test.py TORCHLENS_BINARY WORKDIR DOCS_EXTRACT_MD
Needs Debian's python3-torch and python3-numpy: the models are made and the
expected values computed here, independently of torchlens (forward hooks on the
eager model, one stimulus at a time).
"""

import json
import os
import pty
import re
import shutil
import signal
import subprocess
import sys
import time
import unittest

import numpy as np
import torch

BIN = sys.argv[1]
WORK = sys.argv[2]
DOCS = sys.argv[3]


class Net(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = torch.nn.Conv2d(3, 8, 3, padding=1)
        self.bn1 = torch.nn.BatchNorm2d(8)
        self.conv2 = torch.nn.Conv2d(8, 8, 3, padding=1, stride=2)
        self.fc = torch.nn.Linear(8 * 4 * 4, 5)

    def forward(self, x):
        x = torch.relu(self.bn1(self.conv1(x)))
        y = torch.relu(self.conv2(x))
        return self.fc(torch.flatten(y, 1))


class Branchy(torch.nn.Module):
    """Takes a different path depending on the data."""

    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 4, 3, padding=1)

    def forward(self, x):
        y = self.conv(x)
        if bool(x.sum() > 0):
            y = torch.relu(y)
        else:
            y = torch.sigmoid(y) * 2
        return y.mean(dim=(2, 3))


class Tail(torch.nn.Module):
    """Fails after its first layer when the inputs are large."""

    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 4, 3, padding=1)

    def forward(self, x):
        y = self.conv(x)
        if bool(y.abs().max() > 50.0):
            raise RuntimeError("the tail ran")
        return torch.relu(y)


class Flat(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 4, 3, padding=1)

    def forward(self, x):
        return self.conv(x).reshape(-1)


def run(*args, **kw):
    return subprocess.run([BIN, *args], capture_output=True, text=True, timeout=300, **kw)


def read_json(p):
    with open(p) as f:
        return json.load(f)


def path(*p):
    return os.path.join(WORK, *p)


def fresh(name):
    d = path(name)
    shutil.rmtree(d, ignore_errors=True)
    return d


KEYS = "conv1,conv2,fc"  # module addresses: the outputs of those modules


class ExtractTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        shutil.rmtree(WORK, ignore_errors=True)
        os.makedirs(WORK)
        torch.manual_seed(0)
        cls.model = Net().eval()
        with torch.no_grad():  # non-trivial running statistics
            cls.model.bn1.running_mean.uniform_(-0.5, 0.5)
            cls.model.bn1.running_var.uniform_(0.5, 2.0)
        cls.pt = path("net.pt")
        torch.jit.script(cls.model).save(cls.pt)
        cls.x = np.random.default_rng(0).standard_normal((64, 3, 8, 8)).astype(np.float32)
        cls.npy = path("x.npy")
        np.save(cls.npy, cls.x)
        # expected: every stimulus alone, through the eager model's modules
        cls.expected = {"conv1": [], "conv2": [], "fc": []}
        hooks = [getattr(cls.model, m).register_forward_hook(
            lambda mod, inp, out, m=m: cls.expected[m].append(out.detach().numpy().copy()))
            for m in cls.expected]
        with torch.no_grad():
            for i in range(len(cls.x)):
                cls.model(torch.from_numpy(cls.x[i:i + 1]))
        for h in hooks:
            h.remove()
        cls.expected = {k: np.concatenate(v) for k, v in cls.expected.items()}
        # the reference extraction, batches of 8
        cls.ref = fresh("ref")
        r = run("extract", cls.pt, "--inputs", cls.npy, "--save", KEYS, "--batch-size", "8",
                "--out", cls.ref, "--no-progress")
        assert r.returncode == 0, r.stderr
        cls.ref_index = read_json(os.path.join(cls.ref, "index.json"))
        cls.by_key = {l["key"]: l for l in cls.ref_index["layers"]}

    def load(self, d, key):
        layer = self.by_key[key]
        return np.load(os.path.join(d, layer["file"]))

    def assert_same_files(self, d):
        for key in self.by_key:
            np.testing.assert_array_equal(self.load(d, key), self.load(self.ref, key), err_msg=key)

    # ---- values ---------------------------------------------------------------

    def test_batches_equal_each_stimulus_alone(self):
        for key, want in self.expected.items():
            got = self.load(self.ref, key)
            self.assertEqual(got.shape, want.shape, key)
            self.assertEqual(got.dtype, np.float32)
            np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5, err_msg=key)
            # numpy can memory-map it (header for N rows, rows written in place)
            mm = np.load(os.path.join(self.ref, self.by_key[key]["file"]), mmap_mode="r")
            self.assertEqual(mm.shape, want.shape)
            np.testing.assert_array_equal(mm[37], got[37])

    def test_index_records_the_run(self):
        ix = self.ref_index
        self.assertEqual(ix["rows_done"], 64)
        self.assertTrue(ix["complete"])
        self.assertEqual(ix["num_stimuli"], 64)
        self.assertEqual(ix["batch_size"], 8)
        self.assertEqual(ix["seed"], 0)
        self.assertEqual(ix["keys"], ["conv1", "conv2", "fc"])
        self.assertEqual(ix["model"], os.path.realpath(self.pt))
        self.assertEqual(ix["stimulus_shape"], [3, 8, 8])
        self.assertRegex(ix["torchlens_version"], r"^\d+\.\d+\.\d+$")
        self.assertEqual([l["shape"] for l in ix["layers"]], [[64, 8, 8, 8], [64, 8, 4, 4], [64, 5]])
        for l in ix["layers"]:
            self.assertEqual(l["dtype"], "float32")
            self.assertEqual(l["file"], l["label"] + ".npy")
        self.assertEqual(sorted(os.listdir(self.ref)),
                         sorted(["index.json"] + [l["file"] for l in ix["layers"]]))

    def test_same_as_torchlens_log_per_stimulus(self):
        labels = ",".join(l["label"] for l in self.ref_index["layers"])
        for i in (0, 37, 63):
            one, npz = path(f"one{i}.npy"), path(f"one{i}.npz")
            np.save(one, self.x[i:i + 1])
            r = run("log", self.pt, "--input", one, "--save", labels, "--npz", npz, "--quiet")
            self.assertEqual(r.returncode, 0, r.stderr)
            arrays = np.load(npz)
            for l in self.ref_index["layers"]:
                np.testing.assert_allclose(np.load(os.path.join(self.ref, l["file"]))[i],
                                           arrays[l["label"]][0], rtol=1e-4, atol=1e-5)

    def test_folder_of_stimuli_and_a_partial_last_batch(self):
        folder = fresh("stimuli")
        os.makedirs(folder)
        for i in range(21):  # batches of 8, 8, 5 (the last is padded, then cut)
            np.save(os.path.join(folder, f"s{i:03d}.npy"), self.x[i])
        out = fresh("folder-out")
        r = run("extract", self.pt, "--inputs", folder, "--save", KEYS, "--batch-size", "8",
                "--out", out)
        self.assertEqual(r.returncode, 0, r.stderr)
        for key, want in self.expected.items():
            got = self.load(out, key)
            self.assertEqual(got.shape[0], 21)
            np.testing.assert_allclose(got, want[:21], rtol=1e-4, atol=1e-5, err_msg=key)

    def test_batch_larger_than_n(self):
        out = fresh("big-batch")
        r = run("extract", self.pt, "--inputs", self.npy, "--save", "fc", "--batch-size", "100",
                "--out", out)
        self.assertEqual(r.returncode, 0, r.stderr)
        np.testing.assert_allclose(self.load(out, "fc"), self.expected["fc"], rtol=1e-4, atol=1e-5)

    # ---- resume ---------------------------------------------------------------

    def test_resume_after_kill(self):
        # a long run (many small batches), killed once some rows are recorded
        n = 1500
        big = np.concatenate([self.x] * (n // 64 + 1))[:n]
        big_npy = path("big.npy")
        np.save(big_npy, big)
        out = fresh("killed")
        args = ["extract", self.pt, "--inputs", big_npy, "--save", KEYS, "--batch-size", "2",
                "--out", out, "--no-progress"]
        p = subprocess.Popen([BIN, *args], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        ix_path = os.path.join(out, "index.json")
        done = 0
        deadline = time.time() + 120
        while time.time() < deadline and p.poll() is None:
            try:
                done = read_json(ix_path)["rows_done"]
            except (OSError, ValueError, KeyError):
                done = 0
            if done >= 20:
                break
            time.sleep(0.002)
        p.send_signal(signal.SIGKILL)
        p.wait()
        killed_at = read_json(ix_path)["rows_done"]
        if killed_at >= n:
            self.skipTest("the run finished before it could be killed")
        self.assertGreater(killed_at, 0)
        # without --resume: refused
        r = run(*args)
        self.assertEqual(r.returncode, 2)
        self.assertIn("--resume", r.stderr)
        r = run(*args, "--resume")
        self.assertEqual(r.returncode, 0, r.stderr)
        ix = read_json(ix_path)
        self.assertEqual(ix["rows_done"], n)
        for key in ("conv1", "fc"):
            got = np.load(os.path.join(out, self.by_key[key]["file"]))
            self.assertEqual(got.shape[0], n)
            np.testing.assert_allclose(got[:64], self.expected[key], rtol=1e-4, atol=1e-5)
            np.testing.assert_allclose(got[-64:], np.concatenate([self.expected[key]] * 63)[:n][-64:],
                                       rtol=1e-4, atol=1e-5)

    def test_resume_after_a_crash_mid_batch(self):
        # simulate: the record says 24 rows; the files hold a torn batch past them
        out = fresh("torn")
        shutil.copytree(self.ref, out)
        ix_path = os.path.join(out, "index.json")
        ix = read_json(ix_path)
        ix["rows_done"], ix["complete"] = 24, False
        with open(ix_path, "w") as f:
            json.dump(ix, f)
        for l in ix["layers"]:
            f = os.path.join(out, l["file"])
            a = np.load(f, mmap_mode="r")
            header = os.path.getsize(f) - a.nbytes
            row = a.nbytes // a.shape[0]
            with open(f, "r+b") as fh:  # rows 24.. : garbage, then torn in the middle of row 29
                fh.seek(header + 24 * row)
                fh.write(b"\xff" * (5 * row + row // 2))
                fh.truncate(header + 29 * row + row // 2)
        r = run("extract", self.pt, "--inputs", self.npy, "--out", out, "--resume")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(read_json(ix_path)["rows_done"], 64)
        self.assert_same_files(out)
        # a finished run resumes to nothing
        r = run("extract", self.pt, "--inputs", self.npy, "--out", out, "--resume")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn("Nothing to do", r.stdout)

    def test_resume_must_match(self):
        out = fresh("mismatch")
        shutil.copytree(self.ref, out)
        r = run("extract", self.pt, "--inputs", self.npy, "--out", out, "--resume",
                "--batch-size", "16")
        self.assertEqual(r.returncode, 2)
        self.assertIn("--batch-size differs", r.stderr)
        r = run("extract", self.pt, "--inputs", self.npy, "--out", out, "--resume", "--save", "fc")
        self.assertEqual(r.returncode, 2)
        self.assertIn("--save differs", r.stderr)

    def test_corrupt_index_is_refused(self):
        # what a half-written or hand-edited index.json can hold: each a one-line refusal
        ix = read_json(os.path.join(self.ref, "index.json"))
        bad_rows = dict(ix, rows_done=ix["num_stimuli"] + 1)
        no_layers = {k: v for k, v in ix.items() if k != "layers"}
        cases = [("{\"model\": ", "is not valid JSON"),
                 ("\x00\xff garbage", "is not valid JSON"),
                 (json.dumps(no_layers), "is not an extract index"),
                 (json.dumps(bad_rows), "outside 0..64")]
        for text, message in cases:
            with self.subTest(message=message):
                out = fresh("corrupt-index")
                shutil.copytree(self.ref, out)
                with open(os.path.join(out, "index.json"), "w", encoding="latin-1") as f:
                    f.write(text)
                r = run("extract", self.pt, "--inputs", self.npy, "--out", out, "--resume")
                self.assertEqual(r.returncode, 2, r.stderr)
                self.assertEqual(len(r.stderr.strip().splitlines()), 1, r.stderr)
                self.assertIn("cannot resume", r.stderr)
                self.assertIn(message, r.stderr)

    # ---- refusals -------------------------------------------------------------

    def test_graph_changed_is_refused(self):
        torch.manual_seed(0)
        pt = path("branchy.pt")
        torch.jit.script(Branchy().eval()).save(pt)
        x = np.abs(np.random.default_rng(1).standard_normal((24, 3, 8, 8))).astype(np.float32)
        x[8:16] *= -1  # the second batch takes the other branch
        npy = path("branchy.npy")
        np.save(npy, x)
        out = fresh("branchy-out")
        # the branch comes after the saved layer: each forward stops before it
        r = run("extract", pt, "--inputs", npy, "--save", "conv", "--batch-size", "8", "--out", out)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(read_json(os.path.join(out, "index.json"))["rows_done"], 24)
        # running every forward to the end meets it
        out = fresh("branchy-out")
        r = run("extract", pt, "--inputs", npy, "--save", "conv", "--batch-size", "8", "--out", out,
                "--full-forward")
        self.assertEqual(r.returncode, 1, r.stderr)
        self.assertEqual(len(r.stderr.strip().splitlines()), 1, r.stderr)
        self.assertIn("stimuli 8..15", r.stderr)
        self.assertIn("graph changed", r.stderr)
        self.assertRegex(r.stderr, r"first difference at relu_1_\d+ \(aten::relu")
        self.assertIn("aten::sigmoid", r.stderr)
        # the first batch was written and recorded; nothing more
        self.assertEqual(read_json(os.path.join(out, "index.json"))["rows_done"], 8)

    def test_each_forward_stops_after_the_last_saved_layer(self):
        # the tail raises for every batch but the first: only a forward that
        # stops after `conv` (the last saved layer) gets through
        torch.manual_seed(0)
        pt = path("tail.pt")
        torch.jit.script(Tail().eval()).save(pt)
        x = np.random.default_rng(2).standard_normal((24, 3, 8, 8)).astype(np.float32)
        x[8:] += 100.0
        npy = path("tail.npy")
        np.save(npy, x)
        out = fresh("tail-out")
        r = run("extract", pt, "--inputs", npy, "--save", "conv", "--batch-size", "8", "--out", out)
        self.assertEqual(r.returncode, 0, r.stderr)
        got = np.load(os.path.join(out, read_json(os.path.join(out, "index.json"))["layers"][0]["file"]))
        model = torch.jit.load(pt)
        with torch.no_grad():
            want = model.conv(torch.from_numpy(x)).numpy()
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
        r = run("extract", pt, "--inputs", npy, "--save", "conv", "--batch-size", "8",
                "--out", fresh("tail-out"), "--full-forward")
        self.assertEqual(r.returncode, 1)
        self.assertIn("the tail ran", r.stderr)

    def test_layer_without_batch_dimension_is_refused(self):
        pt = path("flat.pt")
        torch.jit.script(Flat().eval()).save(pt)
        out = fresh("flat-out")
        r = run("extract", pt, "--inputs", self.npy, "--save", "reshape", "--batch-size", "8",
                "--out", out)
        self.assertEqual(r.returncode, 2, r.stderr)
        self.assertIn("first dimension is not the batch size 8", r.stderr)
        self.assertFalse(os.path.exists(out))

    def test_bad_inputs(self):
        out = fresh("bad")
        cases = [
            (["extract", path("missing.pt"), "--inputs", self.npy, "--save", "fc", "--out", out],
             2, "model file not found"),
            (["extract", self.pt, "--inputs", path("missing.npy"), "--save", "fc", "--out", out],
             2, "stimuli not found"),
            (["extract", self.pt, "--inputs", self.npy, "--save", "no_such_layer", "--out", out],
             2, "no_such_layer"),
            (["extract", self.pt, "--inputs", self.npy, "--save", "fc", "--batch-size", "0",
              "--out", out], 2, "bad --batch-size"),
            (["extract", self.pt, "--inputs", self.npy, "--out", out], 2, "--save"),
            (["extract", self.pt, "--inputs", self.npy, "--save", "all", "--out", out], 2, "keys"),
            (["extract", self.pt, "--save", "fc", "--out", out], 2, "usage"),
        ]
        wrong = path("wrong.npy")  # 5 channels for a 3-channel conv
        np.save(wrong, np.zeros((4, 5, 8, 8), np.float32))
        cases.append((["extract", self.pt, "--inputs", wrong, "--save", "fc", "--out", out], 1,
                      "channels"))
        scalar = path("scalar.npy")
        np.save(scalar, np.float32(1))
        cases.append((["extract", self.pt, "--inputs", scalar, "--save", "fc", "--out", out], 2,
                      "[N, ...]"))
        mixed = fresh("mixed")
        os.makedirs(mixed)
        np.save(os.path.join(mixed, "a.npy"), self.x[0])
        np.save(os.path.join(mixed, "b.npy"), self.x[0, :, :4])
        cases.append((["extract", self.pt, "--inputs", mixed, "--save", "fc", "--out", out], 2,
                      "same shape"))
        for args, code, text in cases:
            r = run(*args)
            self.assertEqual(r.returncode, code, (args, r.stderr))
            self.assertIn(text, r.stderr, args)
            self.assertEqual(len(r.stderr.strip().splitlines()), 1, r.stderr)
            self.assertTrue(r.stderr.startswith("torchlens: "), r.stderr)

    def test_non_empty_out_without_resume_is_refused(self):
        out = fresh("occupied")
        os.makedirs(out)
        with open(os.path.join(out, "keep.txt"), "w") as f:
            f.write("mine")
        r = run("extract", self.pt, "--inputs", self.npy, "--save", "fc", "--out", out)
        self.assertEqual(r.returncode, 2)
        self.assertIn("is not empty", r.stderr)
        self.assertEqual(os.listdir(out), ["keep.txt"])

    def test_symlink_in_out_is_refused(self):
        # a layer file replaced by a link to a file elsewhere: resuming must not
        # write through it
        out = fresh("symlinked")
        r = run("extract", self.pt, "--inputs", self.npy, "--save", "fc", "--batch-size", "8",
                "--out", out, "--no-progress")
        self.assertEqual(r.returncode, 0, r.stderr)
        index_path = os.path.join(out, "index.json")
        index = read_json(index_path)
        index["rows_done"] = 8  # as if killed after the first batch
        with open(index_path, "w") as f:
            json.dump(index, f)
        layer_file = os.path.join(out, index["layers"][0]["file"])
        victim = path("victim.npy")
        shutil.copyfile(layer_file, victim)
        before = open(victim, "rb").read()
        os.remove(layer_file)
        os.symlink(victim, layer_file)
        r = run("extract", self.pt, "--inputs", self.npy, "--save", "fc", "--batch-size", "8",
                "--out", out, "--resume", "--no-progress")
        self.assertNotEqual(r.returncode, 0)
        self.assertIn("symbolic link", r.stderr)
        self.assertEqual(len(r.stderr.strip().splitlines()), 1, r.stderr)
        self.assertEqual(open(victim, "rb").read(), before)

    # ---- progress bar ---------------------------------------------------------

    def test_progress_bar_only_on_a_terminal(self):
        out = fresh("progress")
        master, slave = pty.openpty()
        p = subprocess.Popen([BIN, "extract", self.pt, "--inputs", self.npy, "--save", "fc",
                              "--batch-size", "16", "--out", out],
                             stdout=subprocess.DEVNULL, stderr=slave)
        os.close(slave)
        seen = b""
        while True:
            try:
                chunk = os.read(master, 4096)
            except OSError:
                break
            if not chunk:
                break
            seen += chunk
        self.assertEqual(p.wait(), 0)
        os.close(master)
        self.assertIn(b"64/64 stimuli", seen)
        self.assertIn(b"[####", seen)
        out2 = fresh("progress2")
        r = run("extract", self.pt, "--inputs", self.npy, "--save", "fc", "--out", out2)
        self.assertEqual(r.returncode, 0)
        self.assertEqual(r.stderr, "")  # a pipe: no bar

    # ---- docs -----------------------------------------------------------------

    def test_docs_python_example_runs_with_numpy_alone(self):
        with open(DOCS) as f:
            text = f.read()
        m = re.search(r"<!-- extract-example -->\s*```python\n(.*?)```", text, re.S)
        self.assertIsNotNone(m, "docs/extract.md lost its marked example")
        code = m.group(1)
        self.assertNotIn("torch", code.replace("torchlens", ""))
        d = fresh("docs")
        os.makedirs(d)
        shutil.copytree(self.ref, os.path.join(d, "features"))
        # numpy only: torch is made unimportable for the example
        guard = ("import sys\nclass _NoTorch:\n    def find_spec(self, name, *a):\n"
                 "        if name == 'torch' or name.startswith('torch.'):\n"
                 "            raise ImportError('torch is not allowed here')\n"
                 "sys.meta_path.insert(0, _NoTorch())\n")
        r = subprocess.run(["/usr/bin/python3", "-c", guard + code], cwd=d, capture_output=True,
                           text=True, timeout=120)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn("(64, 5)", r.stdout)


if __name__ == "__main__":
    unittest.main(argv=[sys.argv[0], "-v"])
