#!/usr/bin/python3
"""torchlens_cpp.extract: for a scripted small model and a scripted resnet18
(random weights), the files written from Python are byte-equal to what the
CLI `torchlens extract` writes for the same stimuli (a tensor, an ndarray, a
.npy file, a folder of .npy files, a folder of PNG images), the in-memory
variant holds the same values, and every row equals the module's output for
that stimulus alone in plain PyTorch (forward hooks on the eager model);
gradients, dtype/flatten, resume; bad arguments raise clear exceptions; the
model's mode and the caller's stimuli are left as they were."""

import os
import subprocess
import tempfile
import unittest

import numpy as np
import torch
import torchvision
from torch import nn

import torchlens_cpp as tl

CLI = os.environ.get("TORCHLENS_CLI")


class Small(nn.Module):
    """conv, batch norm (eval: per-row), an in-place relu, a linear head."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4)
        self.act = nn.ReLU(inplace=True)
        self.pool = nn.AdaptiveAvgPool2d(2)
        self.fc = nn.Linear(16, 5)

    def forward(self, x):
        x = self.act(self.bn(self.conv(x)))
        return self.fc(torch.flatten(self.pool(x), 1))


def small_model():
    torch.manual_seed(0)
    m = Small()
    with torch.no_grad():  # batch norm with statistics of its own
        m.bn.running_mean.uniform_(-0.5, 0.5)
        m.bn.running_var.uniform_(0.5, 2.0)
    return m.eval()


def module_outputs(model, x, addresses):
    """Each address's output for each stimulus alone: {address: [N, ...]}."""
    mods = dict(model.named_modules())
    rows = {a: [] for a in addresses}
    for i in range(x.shape[0]):
        seen = {}
        handles = [mods[a].register_forward_hook(
            lambda _m, _i, out, a=a: seen.__setitem__(a, out.detach().clone()))
            for a in addresses]
        try:
            with torch.no_grad():
                model(x[i:i + 1])
        finally:
            for h in handles:
                h.remove()
        for a in addresses:
            rows[a].append(seen[a])
    return {a: torch.cat(v) for a, v in rows.items()}


def npy_files(folder):
    return sorted(f for f in os.listdir(folder) if f.endswith(".npy"))


@unittest.skipUnless(CLI, "TORCHLENS_CLI (the torchlens executable) is not set")
class ExtractTest(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.TemporaryDirectory()
        self.dir = self.tmp.name

    def tearDown(self):
        self.tmp.cleanup()

    def path(self, *parts):
        return os.path.join(self.dir, *parts)

    def cli(self, model_file, inputs, keys, out, *flags):
        subprocess.run([CLI, "extract", model_file, "--inputs", inputs, "--save", ",".join(keys),
                        "--out", out, "--quiet", "--no-progress", *flags], check=True)
        return out

    def assert_same_files(self, a, b):
        self.assertEqual(npy_files(a), npy_files(b))
        self.assertTrue(npy_files(a))
        for f in npy_files(a):
            with open(os.path.join(a, f), "rb") as fa, open(os.path.join(b, f), "rb") as fb:
                self.assertEqual(fa.read(), fb.read(), f)

    def script(self, eager):
        scripted = torch.jit.script(eager)
        model_file = self.path("model.pt")
        torch.jit.save(scripted, model_file)
        return scripted, model_file

    def test_small_model_tensor_ndarray_npy_and_memory(self):
        eager = small_model()
        scripted, model_file = self.script(eager)
        torch.manual_seed(1)
        x = torch.randn(7, 3, 6, 6)
        x_before = x.clone()
        np.save(self.path("x.npy"), x.numpy())
        keys = ["conv", "act", "fc"]
        cli = self.cli(model_file, self.path("x.npy"), keys, self.path("cli"), "--batch-size", "3")

        r = tl.extract(scripted, x, layers=keys, out_dir=self.path("py_tensor"), batch_size=3)
        self.assertEqual(r["num_stimuli"], 7)
        self.assertEqual(r["rows_done"], 7)
        self.assertEqual(r["batch_size"], 3)
        self.assertEqual([l["key"] for l in r["layers"]], keys)
        self.assertEqual([l["module"] for l in r["layers"]], ["conv", "act", "fc"])
        self.assert_same_files(cli, self.path("py_tensor"))
        tl.extract(scripted, x.numpy(), layers=keys, out_dir=self.path("py_ndarray"), batch_size=3)
        self.assert_same_files(cli, self.path("py_ndarray"))
        tl.extract(scripted, self.path("x.npy"), layers=keys, out_dir=self.path("py_npy"),
                   batch_size=3)
        self.assert_same_files(cli, self.path("py_npy"))
        self.assertTrue(torch.equal(x, x_before))  # the in-place relu ran on copies

        memory = tl.extract(scripted, x, layers=keys, batch_size=3)
        labels = [l["label"] for l in r["layers"]]
        self.assertEqual(list(memory), labels)
        for label in labels:
            on_disk = torch.from_numpy(np.load(os.path.join(cli, label + ".npy")))
            self.assertTrue(torch.equal(memory[label], on_disk), label)

        expected = module_outputs(eager, x, keys)
        for layer in r["layers"]:
            got = memory[layer["label"]]
            self.assertEqual(list(got.shape), layer["shape"])
            self.assertTrue(torch.allclose(got, expected[layer["key"]], atol=1e-6, rtol=1e-5),
                            layer["key"])
        # the last layer is the model's output
        self.assertTrue(torch.allclose(memory[labels[-1]], eager(x), atol=1e-6))

    def test_npy_folder_gradients_dtype_flatten(self):
        eager = small_model()
        scripted, model_file = self.script(eager)
        torch.manual_seed(2)
        x = torch.randn(5, 3, 6, 6)
        os.mkdir(self.path("folder"))
        for i in range(5):
            np.save(self.path("folder", f"s{i:02d}.npy"), x[i].numpy())
        keys = ["bn", "fc"]
        flags = ["--batch-size", "2", "--gradients-of", "output:argmax", "--dtype", "float64",
                 "--flatten"]
        cli = self.cli(model_file, self.path("folder"), keys, self.path("cli"), *flags)
        self.assertIn("batchnorm_1_2.grad.npy", npy_files(cli))
        tl.extract(scripted, self.path("folder"), layers=keys, out_dir=self.path("py"),
                   batch_size=2, gradients_of="output:argmax", dtype=torch.float64, flatten=True)
        self.assert_same_files(cli, self.path("py"))
        memory = tl.extract(scripted, x, layers=keys, batch_size=2, gradients_of="output:argmax",
                            dtype="float64", flatten=True)
        for name, t in memory.items():
            on_disk = torch.from_numpy(np.load(os.path.join(cli, name + ".npy")))
            self.assertEqual(t.dtype, torch.float64)
            self.assertTrue(torch.equal(t, on_disk), name)
        # per stimulus, in plain PyTorch: the gradient of its argmax logit
        # w.r.t. the batch norm output, and the activations themselves
        for i in range(5):
            xi = x[i:i + 1]
            bn_out = eager.bn(eager.conv(xi))
            y = eager.fc(torch.flatten(eager.pool(torch.relu(bn_out)), 1))
            (g,) = torch.autograd.grad(y[0, y[0].argmax()], bn_out)
            self.assertTrue(torch.allclose(memory["batchnorm_1_2.grad"][i],
                                           g.flatten().double(), atol=1e-6))
            self.assertTrue(torch.allclose(memory["batchnorm_1_2"][i],
                                           bn_out.detach().flatten().double(), atol=1e-6))
            self.assertTrue(torch.allclose(memory["linear_1_6"][i], y[0].detach().double(),
                                           atol=1e-6))

    def test_image_folder(self):
        eager = small_model()
        scripted, model_file = self.script(eager)
        os.mkdir(self.path("images"))
        g = torch.Generator().manual_seed(3)
        for i in range(3):
            img = torch.randint(0, 256, (3, 20 + 4 * i, 18), dtype=torch.uint8, generator=g)
            torchvision.io.write_png(img, self.path("images", f"im{i}.png"))
        flags = ["--resize", "12", "--crop", "8", "--mean", "0.5,0.4,0.3", "--channels", "bgr"]
        cli = self.cli(model_file, self.path("images"), ["conv", "fc"], self.path("cli"), *flags)
        r = tl.extract(scripted, self.path("images"), layers=["conv", "fc"],
                       out_dir=self.path("py"), resize=12, crop=8, mean=(0.5, 0.4, 0.3),
                       channels="bgr")
        self.assertEqual(r["num_stimuli"], 3)
        self.assert_same_files(cli, self.path("py"))

    def test_resnet18(self):
        torch.manual_seed(0)
        eager = torchvision.models.resnet18().eval()
        scripted, model_file = self.script(eager)
        x = torch.randn(5, 3, 64, 64)
        np.save(self.path("x.npy"), x.numpy())
        keys = ["layer1.0.conv1", "layer2", "avgpool", "fc"]
        cli = self.cli(model_file, self.path("x.npy"), keys, self.path("cli"), "--batch-size", "2")
        r = tl.extract(scripted, x, layers=keys, out_dir=self.path("py"), batch_size=2)
        self.assert_same_files(cli, self.path("py"))
        self.assertEqual([l["key"] for l in r["layers"]], keys)
        expected = module_outputs(eager, x, keys)
        for layer in r["layers"]:
            got = torch.from_numpy(np.load(self.path("py", layer["file"])))
            self.assertEqual(list(got.shape), list(expected[layer["key"]].shape))
            self.assertTrue(torch.allclose(got, expected[layer["key"]], atol=1e-5, rtol=1e-4),
                            layer["key"])

    def test_resume(self):
        scripted, _ = self.script(small_model())
        x = torch.randn(4, 3, 6, 6)
        out = self.path("out")
        tl.extract(scripted, x, layers=["fc"], out_dir=out, batch_size=2)
        again = tl.extract(scripted, x, layers=["fc"], out_dir=out, resume=True)
        self.assertEqual(again["rows_this_run"], 0)
        self.assertEqual(again["batch_size"], 2)
        with self.assertRaisesRegex(ValueError, "cannot resume: the stimuli differ"):
            tl.extract(scripted, x + 1, layers=["fc"], out_dir=out, resume=True)
        with self.assertRaisesRegex(ValueError, "not empty; pass --resume"):
            tl.extract(scripted, x, layers=["fc"], out_dir=out)


class ExtractErrorTest(unittest.TestCase):
    def setUp(self):
        self.eager = small_model()
        self.scripted = torch.jit.script(self.eager)
        self.x = torch.randn(3, 3, 6, 6)

    def test_eager_model_refused(self):
        with self.assertRaisesRegex(TypeError, "extract runs TorchScript models"):
            tl.extract(self.eager, self.x, layers=["fc"])
        with self.assertRaisesRegex(TypeError, "must be a torch.jit.ScriptModule"):
            tl.extract(lambda x: x, self.x, layers=["fc"])

    def test_bad_arguments(self):
        s, x = self.scripted, self.x
        with self.assertRaisesRegex(ValueError, "not 'all'"):
            tl.extract(s, x, layers="all")
        with self.assertRaisesRegex(ValueError, "needs the layers to save"):
            tl.extract(s, x, layers=[])
        with self.assertRaisesRegex(ValueError, "nope"):
            tl.extract(s, x, layers=["nope"])
        with self.assertRaisesRegex(TypeError, "stimuli must be a tensor"):
            tl.extract(s, [1, 2, 3], layers=["fc"])
        with self.assertRaisesRegex(ValueError, "stimuli not found: /no/such.npy"):
            tl.extract(s, "/no/such.npy", layers=["fc"])
        with self.assertRaisesRegex(ValueError, "not a scalar"):
            tl.extract(s, torch.tensor(1.0), layers=["fc"])
        with self.assertRaisesRegex(ValueError, "batch_size must be a positive int"):
            tl.extract(s, x, layers=["fc"], batch_size=0)
        with self.assertRaisesRegex(ValueError, "resize applies to a folder of images"):
            tl.extract(s, x, layers=["fc"], resize=10)
        with self.assertRaisesRegex(ValueError, "bad --gradients-of 'max'"):
            tl.extract(s, x, layers=["fc"], gradients_of="max")
        with self.assertRaisesRegex(ValueError, "needs the class of every stimulus"):
            tl.extract(s, x, layers=["fc"], gradients_of="loss:cross_entropy")
        with self.assertRaisesRegex(ValueError, "bad dtype 'int8'"):
            tl.extract(s, x, layers=["fc"], dtype="int8")
        with self.assertRaisesRegex(ValueError, "give out_dir"):
            tl.extract(s, x, layers=["fc"], statistics=True)

    def test_mode_restored(self):
        self.scripted.train()
        memory = tl.extract(self.scripted, self.x, layers=["fc"], batch_size=2)
        self.assertTrue(self.scripted.training)
        self.assertTrue(self.scripted.bn.training)
        with torch.no_grad():
            plain = self.eager.eval()(self.x)  # extract ran in eval mode, as the CLI does
        self.assertTrue(torch.allclose(next(iter(memory.values())), plain, atol=1e-6))


if __name__ == "__main__":
    unittest.main()
