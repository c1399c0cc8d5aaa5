#!/usr/bin/python3
"""`torchlens extract` over a folder of images (JPEG, PNG): the real binary.

Usage: image_test.py TORCHLENS_BINARY WORKDIR
The expected stimuli are the same files through torchvision's transforms
(Debian's python3-torchvision and python3-pil), computed here.
"""

import json
import os
import shutil
import subprocess
import sys
import unittest

import numpy as np
import torch
import torchvision.transforms as T
from PIL import Image

BIN = sys.argv[1]
WORK = sys.argv[2]

MEAN = [0.485, 0.456, 0.406]
STD = [0.229, 0.224, 0.225]


class Identity(torch.nn.Module):
    def forward(self, x):
        return x * 1.0


class Small(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 4, 3, padding=1)
        self.fc = torch.nn.Linear(4, 3)

    def forward(self, x):
        y = torch.relu(self.conv(x))
        return self.fc(y.mean(dim=(2, 3)))


def run(*args):
    return subprocess.run([BIN, *args], capture_output=True, text=True, timeout=300)


def path(*p):
    return os.path.join(WORK, *p)


def fresh(name):
    d = path(name)
    shutil.rmtree(d, ignore_errors=True)
    return d


def read_json(p):
    with open(p) as f:
        return json.load(f)


class ImageTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        shutil.rmtree(WORK, ignore_errors=True)
        os.makedirs(WORK)
        cls.folder = path("images")
        os.makedirs(cls.folder)
        rng = np.random.default_rng(0)
        # every kind Pillow hands to torchvision: RGB JPEG and PNG of several
        # aspect ratios, grey JPEG and PNG, RGBA and palette PNG
        for i, (w, h) in enumerate([(300, 200), (200, 300), (256, 256), (333, 517), (97, 80)]):
            yy, xx = np.mgrid[0:h, 0:w]
            smooth = np.stack([np.sin(xx / 17.0 + c) * np.cos(yy / 23.0 - c) for c in range(3)], -1)
            a = np.clip((smooth * 0.4 + 0.5) * 255 + rng.normal(0, 20, (h, w, 3)), 0, 255)
            img = Image.fromarray(a.astype(np.uint8))
            if i % 2:
                img.save(os.path.join(cls.folder, f"im{i}.jpg"), quality=90)
            else:
                img.save(os.path.join(cls.folder, f"im{i}.png"))
        grey = (rng.random((120, 90)) * 255).astype(np.uint8)
        Image.fromarray(grey).save(os.path.join(cls.folder, "im5_grey.png"))
        Image.fromarray(grey).save(os.path.join(cls.folder, "im6_grey.JPEG"))
        rgba = (rng.random((120, 90, 4)) * 255).astype(np.uint8)
        Image.fromarray(rgba).save(os.path.join(cls.folder, "im7_rgba.png"))
        Image.fromarray(rgba[..., :3]).convert("P").save(os.path.join(cls.folder, "im8_palette.png"))
        with open(os.path.join(cls.folder, "notes.txt"), "w") as f:
            f.write("not an image: ignored\n")
        cls.names = sorted(n for n in os.listdir(cls.folder) if not n.endswith(".txt"))
        cls.ident = path("ident.pt")
        torch.jit.script(Identity()).save(cls.ident)
        cls.small = path("small.pt")
        torch.manual_seed(0)
        torch.jit.script(Small().eval()).save(cls.small)

    def expected(self, tensor_path, resize=64, crop=56, mean=MEAN, std=STD):
        """torchvision on the tensor (antialiased Resize), and on the PIL image."""
        on_tensor = T.Compose([T.ToTensor(), T.Resize(resize, antialias=True), T.CenterCrop(crop),
                               T.Normalize(mean, std)])
        on_pil = T.Compose([T.Resize(resize), T.CenterCrop(crop), T.ToTensor(),
                            T.Normalize(mean, std)])
        ims = [Image.open(os.path.join(self.folder, n)).convert("RGB") for n in self.names]
        return (np.stack([on_tensor(im).numpy() for im in ims]),
                np.stack([on_pil(im).numpy() for im in ims]))

    def extract(self, out, *extra, model=None, save="mul"):
        r = run("extract", model or self.ident, "--inputs", self.folder, "--save", save,
                "--batch-size", "4", "--out", out, "--no-progress", *extra)
        self.assertEqual(r.returncode, 0, r.stderr)
        index = read_json(os.path.join(out, "index.json"))
        return index, [np.load(os.path.join(out, l["file"])) for l in index["layers"]]

    def test_images_equal_torchvision_transforms(self):
        index, (got,) = self.extract(fresh("plain"), "--resize", "64", "--crop", "56")
        self.assertEqual(index["stimulus_ids"], self.names)
        self.assertEqual(index["stimulus_shape"], [3, 56, 56])
        self.assertEqual(index["options"], "images: resize=64 crop=56 mean=0.485,0.456,0.406 "
                                           "std=0.229,0.224,0.225 channels=rgb")
        on_tensor, on_pil = self.expected(None)
        self.assertEqual(got.shape, (len(self.names), 3, 56, 56))
        np.testing.assert_allclose(got, on_tensor, rtol=0, atol=1e-5)
        # Pillow's Resize rounds to 8 bits in between: one grey level, normalised
        np.testing.assert_allclose(got, on_pil, rtol=0, atol=1.01 / 255 / min(STD))

    def test_options_channels_and_defaults(self):
        mean, std = [0.5, 0.4, 0.3], [0.25, 0.5, 1.0]
        _, (got,) = self.extract(fresh("bgr"), "--resize", "40", "--crop", "32", "--mean",
                                 "0.5,0.4,0.3", "--std", "0.25,0.5,1", "--channels", "bgr")
        on_tensor, _ = self.expected(None, 40, 32, mean, std)
        np.testing.assert_allclose(got, on_tensor[:, ::-1], rtol=0, atol=1e-5)
        # the defaults: Resize(256), CenterCrop(224), ImageNet's mean and std
        _, (got,) = self.extract(fresh("defaults"))
        on_tensor, _ = self.expected(None, 256, 224)
        np.testing.assert_allclose(got, on_tensor, rtol=0, atol=1e-5)

    def test_a_model_on_images_sharded(self):
        ref_index, ref = self.extract(fresh("small-ref"), "--resize", "48", "--crop", "40",
                                      model=self.small, save="conv,fc")
        on_tensor, _ = self.expected(None, 48, 40)
        model = torch.jit.load(self.small)
        with torch.no_grad():
            want = model.conv(torch.from_numpy(on_tensor)).numpy()
        np.testing.assert_allclose(ref[0], want, rtol=1e-4, atol=1e-4)
        out = fresh("small-sharded")
        for k in range(3):
            r = run("extract", self.small, "--inputs", self.folder, "--save", "conv,fc",
                    "--batch-size", "4", "--out", out, "--resize", "48", "--crop", "40",
                    "--shard", f"{k}/3")
            self.assertEqual(r.returncode, 0, r.stderr)
        # another preprocessing is another plan
        r = run("extract", self.small, "--inputs", self.folder, "--save", "conv,fc",
                "--batch-size", "4", "--out", out, "--resize", "48", "--crop", "40",
                "--mean", "0.5,0.5,0.5", "--shard", "0/3")
        self.assertEqual(r.returncode, 2)
        self.assertIn("the options ('images: resize=48 crop=40 mean=0.485,0.456,0.406", r.stderr)
        self.assertIn("'images: resize=48 crop=40 mean=0.5,0.5,0.5 std=0.229,0.224,0.225 "
                      "channels=rgb' now)", r.stderr)
        r = run("merge", out)
        self.assertEqual(r.returncode, 0, r.stderr)
        # byte for byte the unsharded run's files
        ref_dir = path("small-ref")
        for name in ["index.json"] + [l["file"] for l in ref_index["layers"]]:
            with open(os.path.join(out, name), "rb") as f, open(os.path.join(ref_dir, name), "rb") as g:
                self.assertTrue(f.read() == g.read(), name)

    def test_decoding_ahead_error_in_a_later_batch_then_resume(self):
        # batch k+1 is decoded while batch k runs: a file that does not decode
        # in the third batch stops the run there, naming it, with the first two
        # batches written and recorded; fixed, --resume finishes the run
        late = fresh("late")
        os.makedirs(late)
        for n in self.names:
            shutil.copy(os.path.join(self.folder, n), late)
        bad = self.names[5]  # batch size 2: the third batch holds names[4:6]
        with open(os.path.join(late, bad), "wb") as f:
            f.write(b"\x89PNG\r\n\x1a\nnot really")
        out = fresh("late-out")
        args = ["extract", self.ident, "--inputs", late, "--save", "mul", "--batch-size", "2",
                "--out", out, "--no-progress", "--resize", "64", "--crop", "56"]
        r = run(*args)
        self.assertEqual(r.returncode, 2, r.stderr)
        self.assertEqual(r.stderr.count("\n"), 1, r.stderr)
        self.assertIn("cannot decode the PNG", r.stderr)
        self.assertIn(bad, r.stderr)
        index = read_json(os.path.join(out, "index.json"))
        self.assertEqual(index["rows_done"], 4)
        shutil.copy(os.path.join(self.folder, bad), late)
        r = run(*args, "--resume")
        self.assertEqual(r.returncode, 0, r.stderr)
        index = read_json(os.path.join(out, "index.json"))
        self.assertTrue(index["complete"])
        got = np.load(os.path.join(out, index["layers"][0]["file"]))
        on_tensor, _ = self.expected(None)
        np.testing.assert_allclose(got, on_tensor, rtol=0, atol=1e-5)

    def test_refusals(self):
        mixed = fresh("mixed")
        os.makedirs(mixed)
        shutil.copy(os.path.join(self.folder, "im0.png"), mixed)
        np.save(os.path.join(mixed, "x.npy"), np.zeros((3, 8, 8), np.float32))
        r = run("extract", self.ident, "--inputs", mixed, "--save", "mul", "--out", fresh("o"))
        self.assertEqual(r.returncode, 2)
        self.assertIn("holds both .npy files and images", r.stderr)
        broken = fresh("broken")
        os.makedirs(broken)
        shutil.copy(os.path.join(self.folder, "im0.png"), broken)
        with open(os.path.join(self.folder, "im1.jpg"), "rb") as f:
            data = f.read()
        with open(os.path.join(broken, "im1.jpg"), "wb") as f:
            f.write(data[: len(data) // 3] + b"\x00" * 10)  # torn, then garbage
        with open(os.path.join(broken, "im2.png"), "wb") as f:
            f.write(b"\x89PNG\r\n\x1a\nnot really")
        r = run("extract", self.ident, "--inputs", broken, "--save", "mul", "--out", fresh("o"),
                "--batch-size", "3")
        self.assertNotEqual(r.returncode, 0)
        self.assertEqual(r.stderr.count("\n"), 1, r.stderr)
        self.assertRegex(r.stderr, r"cannot decode the (JPEG|PNG) .*im[12]\.")
        # a truncated JPEG is refused (Pillow: "image file is truncated"), not filled with grey
        truncated = fresh("truncated")
        os.makedirs(truncated)
        with open(os.path.join(truncated, "t.jpg"), "wb") as f:
            f.write(data[: len(data) // 2])
        r = run("extract", self.ident, "--inputs", truncated, "--save", "mul", "--out", fresh("o"))
        self.assertEqual(r.returncode, 2)
        self.assertIn("cannot decode the JPEG", r.stderr)
        self.assertIn("Premature end of JPEG file", r.stderr)
        r = run("extract", self.ident, "--inputs", self.folder, "--save", "mul", "--out",
                fresh("o"), "--resize", "64", "--crop", "0")
        self.assertNotEqual(r.returncode, 0)
        self.assertIn("give --crop so that every image has the same size", r.stderr)
        np.save(path("x.npy"), np.zeros((4, 3, 8, 8), np.float32))
        r = run("extract", self.ident, "--inputs", path("x.npy"), "--save", "mul", "--out",
                fresh("o"), "--crop", "4")
        self.assertEqual(r.returncode, 2)
        self.assertIn("--crop applies to a folder of images", r.stderr)
        for flag, value, want in [("--mean", "1,2", "expected three numbers"),
                                  ("--std", "1,0,1", "--std value must be positive"),
                                  ("--channels", "rbg", "use rgb or bgr"),
                                  ("--resize", "-3", "non-negative integer")]:
            r = run("extract", self.ident, "--inputs", self.folder, "--save", "mul", "--out",
                    fresh("o"), flag, value)
            self.assertEqual(r.returncode, 2, (flag, r.stderr))
            self.assertIn(want, r.stderr)


if __name__ == "__main__":
    unittest.main(argv=[sys.argv[0]], verbosity=2)
