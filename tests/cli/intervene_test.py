#!/usr/bin/python3
"""`torchlens intervene` and `torchlens patch` (docs/cli.md): the real binary on
hand-written TorchScript models whose changed forward is recomputed here in numpy
from the models' parameters, independently of torchlens.

Usage: intervene_test.py TORCHLENS_BINARY WORKDIR [EXPORT_SCRIPT]
EXPORT_SCRIPT (scripts/export_torchvision.py) adds a resnet18 run when
torchvision is importable.
"""

import csv
import json
import os
import pty
import subprocess
import sys
import unittest

import numpy as np
import torch

BIN = sys.argv[1]
WORK = sys.argv[2]
EXPORT = sys.argv[3] if len(sys.argv) > 3 else None


class Mlp(torch.nn.Module):
    """linear -> relu -> linear: the relu is the only path to the output."""

    def __init__(self):
        super().__init__()
        self.fc1 = torch.nn.Linear(4, 8)
        self.fc2 = torch.nn.Linear(8, 3)

    def forward(self, x):
        return self.fc2(torch.relu(self.fc1(x)))


class TwoPaths(torch.nn.Module):
    """Output 0 sums a relu path, output 1 a tanh path: patching one path moves
    only its own output."""

    def __init__(self):
        super().__init__()
        self.fa = torch.nn.Linear(4, 3)
        self.fb = torch.nn.Linear(4, 3)

    def forward(self, x):
        a = torch.relu(self.fa(x))
        b = torch.tanh(self.fb(x))
        return torch.cat([a.sum(-1, keepdim=True), b.sum(-1, keepdim=True)], -1)


class Loop(torch.nn.Module):
    """The same linear and relu three times: one layer, three passes."""

    def __init__(self):
        super().__init__()
        self.fc = torch.nn.Linear(4, 4)

    def forward(self, x):
        for _ in range(3):
            x = torch.relu(self.fc(x))
        return x


class Branchy(torch.nn.Module):
    """An `if` on a value: scaling the relu by -1 flips it, so replay must stop."""

    def __init__(self):
        super().__init__()
        self.fc = torch.nn.Linear(4, 4)

    def forward(self, x):
        h = self.fc(x)
        if bool(h.sum() > 0):
            return h * 2.0
        return h - 1.0


def run(*args, **kw):
    return subprocess.run([BIN, *map(str, args)], capture_output=True, text=True, timeout=300,
                          **kw)


def relu(v):
    return np.maximum(v, 0)


def path(name):
    return os.path.join(WORK, name)


class InterveneTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        os.makedirs(WORK, exist_ok=True)
        torch.manual_seed(0)
        cls.mlp = Mlp().eval()
        cls.pt = path("mlp.pt")
        torch.jit.script(cls.mlp).save(cls.pt)
        sd = {k: v.detach().numpy().astype(np.float64) for k, v in cls.mlp.state_dict().items()}
        cls.w1, cls.b1 = sd["fc1.weight"], sd["fc1.bias"]
        cls.w2, cls.b2 = sd["fc2.weight"], sd["fc2.bias"]
        rng = np.random.default_rng(0)
        cls.x = rng.standard_normal((2, 4)).astype(np.float32)
        cls.npy = path("x.npy")
        np.save(cls.npy, cls.x)
        cls.h = cls.x.astype(np.float64) @ cls.w1.T + cls.b1  # linear_1_1, fc1's output
        cls.a = relu(cls.h)  # relu_1_2

    def head(self, a):
        return a @ self.w2.T + self.b2

    def intervene(self, *args, npz=None, engine=None):
        npz = npz or path("out.npz")
        extra = ["--engine", engine] if engine else []
        r = run("intervene", self.pt, "--input", self.npy, *args, *extra, "--npz", npz)
        self.assertEqual(r.returncode, 0, r.stderr)
        arrays = np.load(npz)
        return r, {k: arrays[k] for k in arrays.files}

    def assertClose(self, got, want):
        np.testing.assert_allclose(got.astype(np.float64), want, rtol=1e-5, atol=1e-6)

    def assertOneLineError(self, r, text):
        self.assertNotEqual(r.returncode, 0)
        lines = r.stderr.strip().splitlines()
        self.assertEqual(len(lines), 1, r.stderr)
        self.assertTrue(lines[0].startswith("torchlens: "), lines[0])
        self.assertIn(text, lines[0])

    # ---- intervene: each action against numpy -----------------------------------

    def test_labels_and_unchanged_layers(self):
        r, out = self.intervene("--at", "relu_1_2", "--action", "zero", engine="replay")
        self.assertEqual(sorted(out), ["input_1", "linear_1_1", "linear_2_3", "output_1",
                                       "relu_1_2"])
        self.assertClose(out["input_1"], self.x.astype(np.float64))
        self.assertClose(out["linear_1_1"], self.h)  # upstream of the site: untouched
        self.assertIn("engine replay", r.stdout)
        self.assertIn("label(relu_1_2) -> zero_ablate()", r.stdout)

    def test_zero(self):
        _, out = self.intervene("--at", "relu_1_2", "--action", "zero")
        self.assertTrue(np.all(out["relu_1_2"] == 0))
        self.assertClose(out["linear_2_3"], self.head(np.zeros_like(self.a)))
        self.assertClose(out["output_1"], np.broadcast_to(self.b2, (2, 3)))

    def test_scale_at_module_address(self):
        # `fc1` is a module address: that module's output, linear_1_1
        r, out = self.intervene("--at", "fc1", "--action", "scale:-1.5")
        self.assertClose(out["linear_1_1"], -1.5 * self.h)
        self.assertClose(out["relu_1_2"], relu(-1.5 * self.h))
        self.assertClose(out["output_1"], self.head(relu(-1.5 * self.h)))
        self.assertIn("at linear_1_1", r.stdout)

    def test_clamp(self):
        _, out = self.intervene("--at", "relu_1_2", "--action", "clamp:0.1:0.3")
        self.assertClose(out["relu_1_2"], np.clip(self.a, 0.1, 0.3))
        self.assertClose(out["output_1"], self.head(np.clip(self.a, 0.1, 0.3)))
        _, upper = self.intervene("--at", "linear_1_1", "--action", "clamp::0.2")
        self.assertClose(upper["output_1"], self.head(relu(np.minimum(self.h, 0.2))))

    def test_replace_float64_file_takes_the_site_dtype(self):
        t = np.random.default_rng(5).standard_normal((2, 8))  # float64, as numpy writes it
        np.save(path("t.npy"), t)
        _, out = self.intervene("--at", "relu_1_2", "--action", "replace:" + path("t.npy"))
        self.assertEqual(out["relu_1_2"].dtype, np.float32)
        self.assertClose(out["relu_1_2"], t.astype(np.float32).astype(np.float64))
        self.assertClose(out["output_1"], self.head(t.astype(np.float32).astype(np.float64)))

    def test_noise_is_seeded_and_flows_downstream(self):
        _, a = self.intervene("--at", "relu_1_2", "--action", "noise:0.5:7", npz=path("n1.npz"))
        _, b = self.intervene("--at", "relu_1_2", "--action", "noise:0.5:7", npz=path("n2.npz"),
                              engine="rerun")
        _, c = self.intervene("--at", "relu_1_2", "--action", "noise:0.5:8", npz=path("n3.npz"))
        np.testing.assert_array_equal(a["relu_1_2"], b["relu_1_2"])
        self.assertFalse(np.array_equal(a["relu_1_2"], c["relu_1_2"]))
        self.assertGreater(np.abs(a["relu_1_2"] - self.a).max(), 0.01)
        self.assertClose(a["output_1"], self.head(a["relu_1_2"].astype(np.float64)))

    def test_input_site_and_two_sites(self):
        _, out = self.intervene("--at", "input.0", "--action", "scale:2",
                                "--at", "relu_1_2", "--action", "scale:0.5")
        h = 2 * self.x.astype(np.float64) @ self.w1.T + self.b1
        self.assertClose(out["linear_1_1"], h)
        self.assertClose(out["output_1"], self.head(0.5 * relu(h)))

    def test_engines_agree(self):
        for action in ("zero", "scale:3", "clamp:-0.2:0.2", "noise:1:3"):
            got = {}
            for engine in ("live", "replay", "rerun", "auto"):
                r, got[engine] = self.intervene("--at", "linear_1_1", "--action", action,
                                                npz=path("e_%s.npz" % engine), engine=engine)
                if engine == "auto":
                    self.assertIn("engine auto, which ran replay", r.stdout)
            for engine in ("replay", "rerun", "auto"):
                self.assertEqual(sorted(got[engine]), sorted(got["live"]))
                for k in got["live"]:
                    np.testing.assert_array_equal(got[engine][k], got["live"][k],
                                                  err_msg="%s %s %s" % (action, engine, k))

    def test_save_keys_keep_the_output(self):
        _, out = self.intervene("--at", "relu_1_2", "--action", "zero", "--save", "fc1")
        self.assertEqual(sorted(out), ["linear_1_1", "output_1"])
        self.assertClose(out["output_1"], np.broadcast_to(self.b2, (2, 3)))

    def test_json_records_the_intervention(self):
        js = path("out.json")
        r = run("intervene", self.pt, "--input", self.npy, "--at", "relu_1_2", "--action",
                "scale:2", "--json", js, "--quiet")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(r.stdout, "")
        with open(js) as f:
            layers = {l["label"]: l for l in json.load(f)["layers"]}
        self.assertEqual(len(layers["relu_1_2"]["interventions"]), 1)
        self.assertIn("scale", layers["relu_1_2"]["interventions"][0])
        self.assertEqual(layers["linear_1_1"]["interventions"], [])

    # ---- specs --------------------------------------------------------------------

    def test_spec_written_by_hand_equals_at_action(self):
        spec = path("hand.json")
        with open(spec, "w") as f:
            json.dump({"torchlens_interventions": 1, "entries": [
                {"site": {"label": {"kind": "label", "text": "relu_1_2"}},
                 "action": {"name": "clamp", "params": {"min": "0.1", "max": "0.3"},
                            "tensors": {}}},
                {"site": {"live": {"kind": "func", "text": "linear"}},
                 "action": {"name": "scale", "params": {"factor": "2"}, "tensors": {}}}]}, f)
        for engine in ("live", "replay", "rerun"):
            _, by_spec = self.intervene("--spec", spec, npz=path("s_spec.npz"), engine=engine)
            _, by_flags = self.intervene("--at", "relu_1_2", "--action", "clamp:0.1:0.3",
                                         "--at", "linear_1_1", "--action", "scale:2",
                                         "--at", "linear_2_3", "--action", "scale:2",
                                         npz=path("s_flags.npz"), engine=engine)
            for k in by_flags:
                np.testing.assert_array_equal(by_spec[k], by_flags[k], err_msg=k)
            self.assertClose(by_spec["output_1"],
                             2 * self.head(np.clip(relu(2 * self.h), 0.1, 0.3)))

    def test_spec_saved_by_the_library_round_trips(self):
        t = np.random.default_rng(6).standard_normal((2, 8)).astype(np.float32)
        np.save(path("t32.npy"), t)
        spec = path("saved.json")
        _, direct = self.intervene("--at", "relu_1_2", "--action", "replace:" + path("t32.npy"),
                                   "--at", "fc2", "--action", "noise:0.3:4",
                                   "--save-spec", spec, npz=path("direct.npz"))
        with open(spec) as f:
            saved = json.load(f)
        self.assertEqual([e["action"]["name"] for e in saved["entries"]],
                         ["replace_with", "noise"])
        sidecar = saved["entries"][0]["action"]["tensors"]["value"]
        np.testing.assert_array_equal(np.load(os.path.join(WORK, sidecar)), t)
        _, loaded = self.intervene("--spec", spec, npz=path("loaded.npz"))
        for k in direct:
            np.testing.assert_array_equal(loaded[k], direct[k], err_msg=k)
        self.assertClose(loaded["relu_1_2"], t.astype(np.float64))

    # ---- a recurrent layer: a site with a pass changes only that pass ---------------

    def test_site_with_a_pass(self):
        torch.manual_seed(3)
        m = Loop().eval()
        pt = path("loop.pt")
        torch.jit.script(m).save(pt)
        w = m.fc.weight.detach().double().numpy()
        b = m.fc.bias.detach().double().numpy()
        x = self.x.astype(np.float64)
        step = lambda v: relu(v @ w.T + b)
        for site in ("relu_1_2:2", "fc:2"):  # a layer pass; a module address with its pass
            for engine in ("live", "replay", "rerun"):
                npz = path("loop.npz")
                r = run("intervene", pt, "--input", self.npy, "--at", site, "--action", "scale:0",
                        "--engine", engine, "--npz", npz)
                self.assertEqual(r.returncode, 0, r.stderr)
                out = np.load(npz)
                self.assertClose(out["relu_1_2:1"], step(x))
                if site == "fc:2":  # fc's output, before the relu
                    self.assertTrue(np.all(out["linear_1_1:2"] == 0))
                    self.assertClose(out["relu_1_2:2"], np.zeros((2, 4)))
                else:
                    self.assertClose(out["linear_1_1:2"], step(x) @ w.T + b)
                    self.assertTrue(np.all(out["relu_1_2:2"] == 0))
                self.assertClose(out["relu_1_2:3"], step(np.zeros((2, 4))))
                self.assertClose(out["output_1"], step(np.zeros((2, 4))))
        # without a pass: every pass
        npz = path("loop_all.npz")
        r = run("intervene", pt, "--input", self.npy, "--at", "relu_1_2", "--action", "scale:2",
                "--npz", npz)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn("at relu_1_2:1, relu_1_2:2, relu_1_2:3", r.stdout)
        v = x
        for _ in range(3):
            v = 2 * step(v)
        self.assertClose(np.load(npz)["output_1"], v)

    # ---- a branch on a value: replay stops, auto reruns ----------------------------

    def test_divergence_stops_replay_and_auto_reruns(self):
        torch.manual_seed(1)
        m = Branchy().eval()
        pt = path("branchy.pt")
        torch.jit.script(m).save(pt)
        x = np.ones((1, 4), np.float32)
        with torch.no_grad():
            h = m.fc(torch.from_numpy(x)).double().numpy()
        scale = -1.0 if h.sum() != 0 else 1.0  # flips the sign of the sum
        np.save(path("bx.npy"), x)
        args = ["intervene", pt, "--input", path("bx.npy"), "--at", "linear_1_1",
                "--action", "scale:%g" % scale]
        self.assertOneLineError(run(*args, "--engine", "replay"), "--engine auto or rerun")
        npz = path("branchy.npz")
        r = run(*args, "--engine", "auto", "--npz", npz)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn("engine auto, which ran rerun", r.stdout)
        self.assertIn("replay diverged", r.stdout)
        hs = scale * h
        want = hs * 2.0 if hs.sum() > 0 else hs - 1.0
        self.assertClose(np.load(npz)["output_1"], want)

    # ---- errors --------------------------------------------------------------------

    def test_errors_are_one_line(self):
        base = ["intervene", self.pt, "--input", self.npy]
        self.assertOneLineError(run(*base, "--at", "rleu_1_2", "--action", "zero"), "relu_1_2")
        self.assertOneLineError(run(*base, "--at", "relu_1_2", "--action", "scale:abc"),
                                "bad --action 'scale:abc'")
        self.assertOneLineError(run(*base, "--at", "relu_1_2", "--action", "explode"),
                                "bad --action")
        self.assertOneLineError(run(*base, "--at", "relu_1_2", "--action", "clamp:1:0"),
                                "LO is above HI")
        self.assertOneLineError(run(*base, "--at", "relu_1_2", "--action", "clamp::"),
                                "bad --action")
        self.assertOneLineError(run(*base, "--at", "relu_1_2", "--action", "noise:-1"),
                                "bad --action")
        self.assertOneLineError(run(*base, "--at", "relu_1_2"), "each --at SITE needs its --action")
        self.assertOneLineError(run(*base, "--at", "relu_1_2", "--action", "zero", "--save",
                                    "fc9"), "did you mean")
        self.assertOneLineError(run(*base), "give the intervention")
        self.assertOneLineError(run(*base, "--at", "relu_1_2", "--action", "zero",
                                    "--engine", "warp"), "bad --engine 'warp'")
        np.save(path("wrong.npy"), np.zeros((2, 7), np.float32))
        self.assertOneLineError(
            run(*base, "--at", "relu_1_2", "--action", "replace:" + path("wrong.npy")),
            "has shape [2, 7] but site relu_1_2 has shape [2, 8]")
        self.assertOneLineError(
            run(*base, "--at", "relu_1_2", "--action", "replace:" + path("none.npy")),
            "replacement file not found")
        self.assertOneLineError(run(*base, "--spec", path("none.json")), "spec file not found")
        self.assertOneLineError(run("intervene", path("none.pt"), "--input", self.npy, "--at",
                                    "relu_1_2", "--action", "zero"), "model file not found")
        self.assertOneLineError(run("intervene", self.pt, "--input", path("none.npy"), "--at",
                                    "relu_1_2", "--action", "zero"), "input file not found")
        self.assertOneLineError(run(*base, "--at", "relu_1_2->input_1", "--action", "zero"),
                                "input_1 does not read relu_1_2")
        with open(path("broken.json"), "w") as f:
            f.write("{\"torchlens_interventions\": 1, \"entries\": [")
        self.assertOneLineError(run(*base, "--spec", path("broken.json")), "is not a JSON spec")

    # ---- patch ---------------------------------------------------------------------

    def patch(self, pt, clean, corrupt, *args):
        out, csv_path = path("patch.json"), path("patch.csv")
        np.save(path("clean.npy"), clean)
        np.save(path("corrupt.npy"), corrupt)
        r = run("patch", pt, "--clean", path("clean.npy"), "--corrupt", path("corrupt.npy"),
                *args, "--out", out, "--csv", csv_path)
        self.assertEqual(r.returncode, 0, r.stderr)
        with open(out) as f:
            result = json.load(f)
        with open(csv_path, newline="") as f:
            rows = list(csv.DictReader(f))
        self.assertEqual(len(rows), len(result["rows"]))
        self.assertEqual(list(rows[0]), ["site", "label", "index", "metric", "effect", "engine"])
        for c, j in zip(rows, result["rows"]):  # the CSV says what the JSON says
            self.assertEqual(c["site"], j["site"])
            self.assertEqual(c["label"], j["label"])
            self.assertEqual(int(c["index"]), j["index"])
            self.assertAlmostEqual(float(c["effect"]), j["effect"], places=12)
            self.assertEqual(c["engine"], j["engine"])
        return r, result

    def two_paths(self):
        torch.manual_seed(2)
        m = TwoPaths().eval()
        pt = path("two.pt")
        torch.jit.script(m).save(pt)
        sd = {k: v.detach().numpy().astype(np.float64) for k, v in m.state_dict().items()}
        rng = np.random.default_rng(3)
        clean = rng.standard_normal((1, 4)).astype(np.float32)
        corrupt = rng.standard_normal((1, 4)).astype(np.float32)
        a = lambda x: relu(x.astype(np.float64) @ sd["fa.weight"].T + sd["fa.bias"])
        b = lambda x: np.tanh(x.astype(np.float64) @ sd["fb.weight"].T + sd["fb.bias"])
        return pt, clean, corrupt, a, b

    def test_patch_the_only_path_carries_everything(self):
        pt, clean, corrupt, a, b = self.two_paths()
        self.assertGreater(abs(a(clean).sum() - a(corrupt).sum()), 1e-2)  # a real difference
        _, res = self.patch(pt, clean, corrupt, "--sites", "func:relu,tanh", "--metric", "logit:0")
        self.assertAlmostEqual(res["clean_metric"], a(clean).sum(), places=5)
        self.assertAlmostEqual(res["corrupted_metric"], a(corrupt).sum(), places=5)
        effects = {row["label"]: row["effect"] for row in res["rows"]}
        self.assertEqual(sorted(effects), ["relu_1_2", "tanh_1_4"])
        self.assertAlmostEqual(effects["relu_1_2"], 1.0, places=5)
        self.assertAlmostEqual(effects["tanh_1_4"], 0.0, places=9)
        self.assertTrue(all(row["engine"] == "replay" for row in res["rows"]))

    def test_patch_logit_diff_noising_and_grid(self):
        pt, clean, corrupt, a, b = self.two_paths()
        diff = lambda av, bv: av.sum() - bv.sum()
        clean_m, corrupt_m = diff(a(clean), b(clean)), diff(a(corrupt), b(corrupt))
        # denoising the relu: the corrupted run with the clean relu
        _, res = self.patch(pt, clean, corrupt, "--sites", "relu_1_2,tanh_1_4",
                            "--metric", "logit-diff:0:1")
        want = {"relu_1_2": diff(a(clean), b(corrupt)), "tanh_1_4": diff(a(corrupt), b(clean))}
        for row in res["rows"]:
            self.assertAlmostEqual(row["metric"], want[row["label"]], places=5)
            self.assertAlmostEqual(row["effect"], (want[row["label"]] - corrupt_m) /
                                   (clean_m - corrupt_m), places=4)
        # prob:K, the softmax over the output's two entries
        _, res = self.patch(pt, clean, corrupt, "--sites", "relu_1_2", "--metric", "prob:1")
        softmax1 = lambda av, bv: 1 / (1 + np.exp(av.sum() - bv.sum()))
        self.assertAlmostEqual(res["clean_metric"], softmax1(a(clean), b(clean)), places=6)
        self.assertAlmostEqual(res["rows"][0]["metric"], softmax1(a(clean), b(corrupt)), places=6)
        # noising: the clean run with the corrupted relu
        _, res = self.patch(pt, clean, corrupt, "--sites", "relu_1_2", "--metric",
                            "logit-diff:0:1", "--direction", "noise")
        self.assertAlmostEqual(res["rows"][0]["metric"], diff(a(corrupt), b(clean)), places=5)
        # one patch per feature of the relu
        _, res = self.patch(pt, clean, corrupt, "--sites", "relu_1_2", "--metric", "logit:0",
                            "--grid", "1")
        self.assertEqual([r["index"] for r in res["rows"]], [0, 1, 2])
        for j, row in enumerate(res["rows"]):
            v = a(corrupt).copy()
            v[0, j] = a(clean)[0, j]
            self.assertAlmostEqual(row["metric"], v.sum(), places=5)

    def test_patch_output_l2_on_the_mlp(self):
        rng = np.random.default_rng(4)
        clean = rng.standard_normal((1, 4)).astype(np.float32)
        corrupt = rng.standard_normal((1, 4)).astype(np.float32)
        r, res = self.patch(self.pt, clean, corrupt, "--sites", "module:fc1,relu",
                            "--metric", "output-l2")
        y = lambda x: self.head(relu(x.astype(np.float64) @ self.w1.T + self.b1))
        self.assertAlmostEqual(res["clean_metric"], 0.0, places=6)
        self.assertAlmostEqual(res["corrupted_metric"], np.linalg.norm(y(corrupt) - y(clean)),
                               places=5)
        self.assertEqual([row["label"] for row in res["rows"]], ["linear_1_1", "relu_1_2"])
        for row in res["rows"]:
            self.assertAlmostEqual(row["effect"], 1.0, places=5)
        self.assertIn("relu_1_2", r.stdout)  # the table
        self.assertEqual(r.stderr, "")  # no progress off a terminal

    def test_patch_progress(self):
        np.save(path("pc.npy"), self.x)
        np.save(path("pk.npy"), -self.x)
        args = [BIN, "patch", self.pt, "--clean", path("pc.npy"), "--corrupt", path("pk.npy"),
                "--sites", "func:linear,relu", "--metric", "logit:0", "--out",
                path("pp.json"), "--quiet"]
        # off a terminal with --progress: the final line only
        r = subprocess.run(args + ["--progress"], capture_output=True, text=True, timeout=120)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertRegex(r.stderr, r"^3 patches in [0-9.]+ s\n$")
        # on a terminal: one line redrawn in place
        master, slave = pty.openpty()
        p = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=slave)
        os.close(slave)
        chunks = []
        while True:
            try:
                data = os.read(master, 4096)
            except OSError:
                break
            if not data:
                break
            chunks.append(data)
        os.close(master)
        self.assertEqual(p.wait(timeout=120), 0)
        tty = b"".join(chunks).decode()
        self.assertIn("\r[", tty)
        self.assertIn("3/3 patches", tty)
        self.assertRegex(tty.rstrip("\r\n").split("\r")[-1], r"^\033\[K3 patches in [0-9.]+ s$")
        self.assertEqual(tty.count("\n"), 1)

    def test_patch_errors_are_one_line(self):
        np.save(path("pc.npy"), self.x)
        np.save(path("pk.npy"), -self.x)
        np.save(path("pbad.npy"), np.zeros((2, 5), np.float32))
        base = ["patch", self.pt, "--clean", path("pc.npy"), "--corrupt", path("pk.npy"),
                "--out", path("pe.json")]
        self.assertOneLineError(run(*base, "--sites", "rleu_1_2", "--metric", "logit:0"),
                                "relu_1_2")
        self.assertOneLineError(run(*base, "--sites", "func:conv2d", "--metric", "logit:0"),
                                "selects no op pass")
        self.assertOneLineError(run(*base, "--sites", "relu", "--metric", "logit:3"),
                                "outside the output's last dimension (shape [2, 3])")
        self.assertOneLineError(run(*base, "--sites", "relu", "--metric", "loss"),
                                "bad --metric 'loss'")
        self.assertOneLineError(run(*base, "--sites", "relu", "--metric", "logit:0",
                                    "--direction", "sideways"), "bad --direction")
        self.assertOneLineError(run(*base, "--sites", "relu", "--metric", "logit:0",
                                    "--grid", "5"), "out of range")
        self.assertOneLineError(run(*base, "--sites", "relu", "--metric", "logit:0",
                                    "--engine", "live"), "bad --engine 'live'")
        self.assertOneLineError(run("patch", self.pt, "--clean", path("pc.npy"), "--corrupt",
                                    path("pbad.npy"), "--sites", "relu", "--metric", "logit:0",
                                    "--out", path("pe.json")), "differ")
        self.assertOneLineError(run("patch", self.pt, "--clean", path("pc.npy"),
                                    "--sites", "relu", "--metric", "logit:0"), "usage")

    # ---- resnet18 --------------------------------------------------------------------

    def test_resnet18(self):
        if EXPORT is None:
            self.skipTest("no export script given")
        try:
            import torchvision  # noqa: F401
        except ImportError:
            self.skipTest("torchvision not importable")
        models = path("models")
        subprocess.run([sys.executable, EXPORT, models, "resnet18"], check=True,
                       capture_output=True, timeout=300)
        pt = os.path.join(models, "resnet18.pt")
        model = torch.jit.load(pt).eval()
        rng = np.random.default_rng(7)
        x = rng.standard_normal((1, 3, 64, 64)).astype(np.float32)
        np.save(path("rx.npy"), x)
        # zeroing layer4's output leaves fc's bias as the whole output
        outs = {}
        for engine in ("live", "replay", "rerun"):
            npz = path("r_%s.npz" % engine)
            r = run("intervene", pt, "--input", path("rx.npy"), "--at", "layer4",
                    "--action", "zero", "--engine", engine, "--npz", npz, "--save", "layer3")
            self.assertEqual(r.returncode, 0, r.stderr)
            arrays = np.load(npz)
            outs[engine] = {k: arrays[k] for k in arrays.files}
        bias = model.fc.bias.detach().numpy()
        with torch.no_grad():
            layer3 = model.layer3(model.layer2(model.layer1(model.maxpool(model.relu(
                model.bn1(model.conv1(torch.from_numpy(x))))))))
        for engine, out in outs.items():
            self.assertEqual(len(out), 2, sorted(out))
            np.testing.assert_allclose(out["output_1"], bias[None, :], rtol=1e-5, atol=1e-6)
            l3 = [k for k in out if k != "output_1"][0]
            np.testing.assert_allclose(out[l3], layer3.numpy(), rtol=1e-4, atol=1e-4)
            for k in out:
                np.testing.assert_array_equal(out[k], outs["live"][k])
        # patching every relu: the last one (layer4's output) is the only path
        x2 = rng.standard_normal((1, 3, 64, 64)).astype(np.float32)
        np.save(path("rx2.npy"), x2)
        out = path("r_patch.json")
        r = run("patch", pt, "--clean", path("rx.npy"), "--corrupt", path("rx2.npy"),
                "--sites", "func:relu", "--metric", "logit-diff:0:1", "--out", out, "--quiet")
        self.assertEqual(r.returncode, 0, r.stderr)
        with open(out) as f:
            res = json.load(f)
        self.assertEqual(len(res["rows"]), 17)  # conv1's relu and two per BasicBlock
        self.assertAlmostEqual(res["rows"][-1]["effect"], 1.0, places=4)
        with torch.no_grad():
            y1, y2 = model(torch.from_numpy(x)), model(torch.from_numpy(x2))
        self.assertAlmostEqual(res["clean_metric"], float(y1[0, 0] - y1[0, 1]), places=4)
        self.assertAlmostEqual(res["corrupted_metric"], float(y2[0, 0] - y2[0, 1]), places=4)


if __name__ == "__main__":
    unittest.main(argv=[sys.argv[0], "-v"])
