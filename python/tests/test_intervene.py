#!/usr/bin/python3
"""torchlens_cpp.intervene on eager models: each action at a site (by label,
module address, live selector with exact module passes, edge) equals the same
change written by hand (a forward hook replacing the module's output, or a
hand-written forward); replay equals live; rerun and automatic mode; Python
callables as actions and predicates; activation patching on a model whose
every op is on the only path (effect 1); specs saved and loaded; errors, and
no hook left behind when an action or the model raises."""

import os
import tempfile
import unittest

import torch
import torchvision
from torch import nn

import torchlens_cpp as tl
from torchlens_cpp import intervene as iv


def hook_state(model):
    return [(name, dict(m._forward_pre_hooks), dict(m._forward_hooks))
            for name, m in model.named_modules()]


class Net(nn.Module):
    """fc1 -> act -> fc2 -> act -> fc3: one parameter-free module called twice."""

    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(4, 8)
        self.act = nn.ReLU()
        self.fc2 = nn.Linear(8, 8)
        self.fc3 = nn.Linear(8, 3)

    def forward(self, x):
        return self.fc3(self.act(self.fc2(self.act(self.fc1(x)))))


def by_hand(model, x, address, change, call=None):
    """A plain run where the output of module `address` (its `call`-th call,
    or every call) is replaced by change(output): a forward hook."""
    calls = [0]

    def hook(_m, _i, out):
        calls[0] += 1
        if call is None or calls[0] == call:
            return change(out)
        return out

    h = model.get_submodule(address).register_forward_hook(hook)
    try:
        with torch.no_grad():
            return model(x)
    finally:
        h.remove()


class Actions(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        torch.manual_seed(0)
        cls.model = Net()
        cls.x = torch.randn(5, 4, generator=torch.Generator().manual_seed(1))
        with torch.no_grad():
            cls.ref = tl.log_forward_pass(cls.model, cls.x, keep_replay=True, random_seed=0)
            cls.plain = cls.model(cls.x)

    def check(self, spec, expected, replay=True):
        """Live (log and no log), replay and rerun all equal `expected`."""
        before = hook_state(self.model)
        with torch.no_grad():
            live = tl.log_forward_pass(self.model, self.x, intervene=(spec, self.ref))
            y = iv.run_with_interventions(self.model, self.x, spec, reference=self.ref)
            run = iv.rerun(self.model, self.x, self.ref, spec)
        self.assertEqual(hook_state(self.model), before)
        self.assertFalse(torch.allclose(expected, self.plain))  # the change matters
        self.assertTrue(torch.allclose(live[-1].tensor_contents, expected, atol=1e-6))
        self.assertTrue(torch.allclose(y, expected, atol=1e-6))
        self.assertEqual((run.engine, run.note), ("rerun", ""))
        self.assertTrue(torch.equal(run.log[-1].tensor_contents, live[-1].tensor_contents))
        if replay:
            cf = iv.replay(self.ref, spec)
            self.assertTrue(torch.equal(cf[-1].tensor_contents, live[-1].tensor_contents))
            # the reference is left as it was
            self.assertTrue(torch.equal(self.ref[-1].tensor_contents, self.plain))
        return live

    def test_zero_at_a_module_address(self):
        expected = by_hand(self.model, self.x, "fc2", torch.zeros_like)
        live = self.check(iv.Interventions().at("fc2", iv.zero_ablate()), expected)
        self.assertTrue(torch.equal(live["fc2"].tensor_contents, torch.zeros(5, 8)))

    def test_scale_at_the_second_call_of_a_module(self):
        expected = by_hand(self.model, self.x, "act", lambda o: o * 0.5, call=2)
        spec = iv.Spec().at(iv.func("relu") & iv.in_module("act", 2), iv.scale(0.5))
        self.check(spec, expected)
        # the same site by label, without a reference for the live selector
        self.check(iv.Spec().at("relu_2_4", iv.scale(0.5)), expected)
        with torch.no_grad():
            y = iv.run_with_interventions(self.model, self.x, spec)  # live selector: no reference
        self.assertTrue(torch.allclose(y, expected, atol=1e-6))

    def test_replace_and_clamp_and_call(self):
        t = torch.randn(5, 8, generator=torch.Generator().manual_seed(3))
        self.check(iv.Spec().at(iv.label("linear_1_1"), iv.replace(t)),
                   by_hand(self.model, self.x, "fc1", lambda o: t))
        self.check(iv.Spec().at(iv.module("fc2"), iv.clamp(-0.1, 0.2)),
                   by_hand(self.model, self.x, "fc2", lambda o: o.clamp(-0.1, 0.2)))
        seen = []

        def negate(value, ctx):
            seen.append((ctx.op_name, ctx.label))
            return -value

        self.check(iv.Spec().at(iv.func("linear") & iv.in_module("fc3"), iv.call(negate)),
                   by_hand(self.model, self.x, "fc3", lambda o: -o))
        self.assertIn(("aten::linear", "linear_3_5"), seen)

    def test_region_and_steer(self):
        d = torch.arange(8.0)
        spec = iv.Spec().at(iv.label("fc2").at_index(1, 3), iv.zero())
        spec.at("fc1", iv.steer(d, 2.0, 1))

        def both(model, x):
            h1 = model.fc1(x) + 2.0 * d
            h2 = model.fc2(model.act(h1))
            h2[:, 3] = 0
            return model.fc3(model.act(h2))

        with torch.no_grad():
            expected = both(self.model, self.x)
        self.assertEqual(len(spec), 2)
        self.check(spec, expected)

    def test_where_predicate_and_noise_replay_equals_live(self):
        spec = iv.Spec().at(iv.where(lambda op: op.layer_type == "relu" and op.module_pass == 1,
                                     "first relu"), iv.noise(0.5, 7))
        with torch.no_grad():
            live = tl.log_forward_pass(self.model, self.x, intervene=spec)
        cf = iv.replay(self.ref, spec)
        self.assertTrue(torch.equal(cf["relu_1_2"].tensor_contents,
                                    live["relu_1_2"].tensor_contents))
        self.assertTrue(torch.equal(cf[-1].tensor_contents, live[-1].tensor_contents))
        self.assertFalse(torch.allclose(live[-1].tensor_contents, self.plain))

    def test_patch_from_another_log(self):
        x2 = torch.randn(5, 4, generator=torch.Generator().manual_seed(9))
        with torch.no_grad():
            donor = tl.log_forward_pass(self.model, x2)
            h2 = self.model.fc2(self.model.act(self.model.fc1(x2)))
        self.check(iv.Spec().at("fc2", iv.patch_from(donor)),
                   by_hand(self.model, self.x, "fc2", lambda o: h2))

    def test_intervene_engines_and_edges(self):
        spec = iv.Spec().at(iv.edge("linear_2_3", "relu_2_4"), iv.scale(-1.0))
        expected = by_hand(self.model, self.x, "fc2", lambda o: -o)
        run = iv.intervene(self.model, self.x, self.ref, spec)
        self.assertEqual(run.engine, "replay")
        self.assertTrue(torch.allclose(run.log[-1].tensor_contents, expected, atol=1e-6))
        # the edge changes only what the consumer sees, not the parent's value
        self.assertTrue(torch.equal(run.log["linear_2_3"].tensor_contents,
                                    self.ref["linear_2_3"].tensor_contents))
        run = iv.intervene(self.model, self.x, self.ref, spec, engine="rerun")
        self.assertEqual(run.engine, "rerun")
        self.assertTrue(torch.allclose(run.log[-1].tensor_contents, expected, atol=1e-6))


class Branchy(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(3, 3)

    def forward(self, x):
        h = self.fc(x)
        if h.sum() > 0:
            return h * 2
        return h - 1


class Engines(unittest.TestCase):
    def test_replay_divergence_and_automatic_rerun(self):
        torch.manual_seed(0)
        model = Branchy()
        x = torch.ones(2, 3)
        with torch.no_grad():
            ref = tl.log_forward_pass(model, x, keep_replay=True)
        spec = iv.Spec().at("fc", iv.scale(-10.0))  # flips the sign of the sum: the other branch
        with self.assertRaises(iv.ReplayDivergence) as ctx:
            iv.replay(ref, spec)
        self.assertEqual(ctx.exception.vertex, "gt_1_3")  # the comparison read by `if`
        with torch.no_grad():
            run = iv.intervene(model, x, ref, spec)
            h = model.fc(x) * -10.0
        self.assertEqual(run.engine, "rerun")
        self.assertIn("replay diverged", run.note)
        expected = h * 2 if h.sum() > 0 else h - 1
        self.assertTrue(torch.allclose(run.log[-1].tensor_contents, expected))

    def test_scripted_module(self):
        torch.manual_seed(0)
        model = Net()
        x = torch.randn(2, 4)
        scripted = torch.jit.script(model)
        with torch.no_grad():
            ref = tl.log_forward_pass(scripted, x, keep_replay=True)
            expected = by_hand(model, x, "fc2", torch.zeros_like)
            live = tl.log_forward_pass(scripted, x, intervene=(iv.Spec().at("fc2", iv.zero()), ref))
            y = iv.run_with_interventions(scripted, x, iv.Spec().at("fc2", iv.zero()), reference=ref)
        self.assertTrue(torch.allclose(live[-1].tensor_contents, expected, atol=1e-6))
        self.assertTrue(torch.allclose(y, expected, atol=1e-6))
        cf = iv.replay(ref, iv.Spec().at("fc2", iv.zero()))
        self.assertTrue(torch.equal(cf[-1].tensor_contents, live[-1].tensor_contents))


class Resnet18(unittest.TestCase):
    def test_replay_equals_live_and_rerun_for_a_mixed_spec(self):
        torch.manual_seed(0)
        model = torchvision.models.resnet18(weights=None).eval()
        x = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(1))
        x2 = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(2))
        before = hook_state(model)
        with torch.no_grad():
            ref = tl.log_forward_pass(model, x, keep_replay=True)
            other = tl.log_forward_pass(model, x2)
            spec = (iv.Spec()
                    .at(iv.func("relu") & iv.in_module("layer3"), iv.zero_ablate())
                    .at("layer1.0.conv1", iv.scale(0.5))
                    .at("conv2d_15_47", iv.steer(torch.linspace(-1, 1, 256), 4.0, 1))
                    .at(iv.label("layer4.0.conv1").at_index(1, 7), iv.zero())
                    .at(iv.edge("maxpool2d_1_4", "add_1_10"), iv.patch_from(other)))
            cf = iv.replay(ref, spec)
            live = tl.log_forward_pass(model, x, intervene=(spec, ref))
            run = iv.rerun(model, x, ref, spec)
        self.assertEqual(hook_state(model), before)
        self.assertEqual(run.note, "")
        self.assertEqual(cf.layer_labels, live.layer_labels)
        for a, b, c in zip(cf, live, run.log):
            self.assertTrue(torch.equal(a.tensor_contents, b.tensor_contents), a.layer_label)
            self.assertTrue(torch.equal(b.tensor_contents, c.tensor_contents), a.layer_label)
        self.assertTrue(torch.equal(live["layer4.0.conv1"].tensor_contents[:, 7],
                                    torch.zeros(1, 2, 2)))
        self.assertFalse(torch.allclose(live[-1].tensor_contents, ref[-1].tensor_contents))


class Patching(unittest.TestCase):
    def test_every_op_on_the_only_path_carries_the_whole_effect(self):
        torch.manual_seed(0)
        model = nn.Sequential(nn.Linear(4, 6), nn.Tanh(), nn.Linear(6, 2))
        clean = torch.randn(1, 4, generator=torch.Generator().manual_seed(1))
        corrupt = torch.randn(1, 4, generator=torch.Generator().manual_seed(2))
        before = hook_state(model)

        def metric(y):
            return (y[0, 0] - y[0, 1]).item()

        for direction in ("denoise", "noise"):
            with torch.no_grad():
                table = iv.activation_patch(model, clean, corrupt, sites=[iv.any()],
                                            metric=metric, direction=direction)
            self.assertEqual([r["label"] for r in table], ["input_1", "linear_1_1", "tanh_1_2",
                                                           "linear_2_3"])
            # (metric - corrupted) / (clean - corrupted): denoising a site that carries the
            # whole difference restores the clean metric (1); noising it gives the corrupted (0)
            for row in table:
                self.assertAlmostEqual(row["effect"], 1.0 if direction == "denoise" else 0.0,
                                       places=5)
                self.assertEqual(row["engine"], "replay")
            with torch.no_grad():
                self.assertAlmostEqual(table.clean_metric, metric(model(clean)), places=5)
                self.assertAlmostEqual(table.corrupted_metric, metric(model(corrupt)), places=5)
        self.assertEqual(hook_state(model), before)
        # one patch per index of dim 1: the effects of the six tanh units sum to about 1 only
        # for a linear readout after them, which this is
        with torch.no_grad():
            grid = iv.activation_patch(model, clean, corrupt, sites="tanh_1_2", metric=metric,
                                       grid_dim=1)
        self.assertEqual([r["index"] for r in grid], list(range(6)))
        self.assertAlmostEqual(sum(r["effect"] for r in grid), 1.0, places=5)
        # from two logs, without the model
        with torch.no_grad():
            a = tl.log_forward_pass(model, clean, keep_replay=True)
            b = tl.log_forward_pass(model, corrupt, keep_replay=True)
        table = iv.activation_patch(a, b, sites=iv.func("tanh"), metric=metric)
        self.assertEqual(len(table), 1)
        self.assertAlmostEqual(table[0]["effect"], 1.0, places=5)
        self.assertIn("tanh_1_2", str(table))


class SpecsAndErrors(unittest.TestCase):
    def test_save_and_load(self):
        spec = iv.Spec().at(iv.func("relu") & ~iv.in_module("fc1"), iv.scale(2.0))
        spec.at("fc2", iv.steer(torch.ones(8), 1.5))
        self.assertTrue(spec.portable)
        with tempfile.TemporaryDirectory() as d:
            path = os.path.join(d, "spec.json")
            spec.save(path)
            loaded = iv.Interventions.load(path)
        self.assertEqual(loaded.describe(), spec.describe())
        code = iv.Spec().at(iv.func("relu"), iv.call(lambda v, c: v))
        self.assertFalse(code.portable)
        with self.assertRaises(RuntimeError):
            code.save(os.path.join(tempfile.gettempdir(), "never.json"))

    def test_errors_leave_no_hook(self):
        torch.manual_seed(0)
        model = Net()
        x = torch.randn(2, 4)
        before = hook_state(model)
        with torch.no_grad():
            ref = tl.log_forward_pass(model, x, keep_replay=True)

        def boom(value, ctx):
            raise ValueError("boom inside an action")

        for run in (
                lambda: tl.log_forward_pass(model, x, intervene=iv.Spec().at(iv.func("relu"),
                                                                             iv.call(boom))),
                lambda: iv.run_with_interventions(model, x, iv.Spec().at(iv.func("relu"),
                                                                         iv.call(boom))),
                lambda: iv.rerun(model, x, ref, iv.Spec().at("fc2", iv.call(boom)))):
            with self.assertRaises(ValueError) as ctx:
                run()
            self.assertIn("boom inside an action", str(ctx.exception))
            self.assertEqual(hook_state(model), before)
        # outside the model's forward (replay, a metric) the Python exception keeps its type too
        with self.assertRaises(ValueError):
            iv.replay(ref, iv.Spec().at("relu_1_2", iv.call(boom)))
        with self.assertRaises(ZeroDivisionError):
            iv.replay(ref, iv.Spec().at(iv.where(lambda op: 1 / 0), iv.zero()))
        with self.assertRaises(KeyError):
            iv.activation_patch(model, x, x + 1, sites=iv.any(), metric=lambda y: {}["metric"])
        self.assertEqual(hook_state(model), before)
        # the wrong shape, an unresolved label spec, an unknown label
        with self.assertRaises(RuntimeError) as ctx:
            tl.log_forward_pass(model, x, intervene=iv.Spec().at(
                iv.func("relu"), iv.call(lambda v, c: v[:1])))
        self.assertIn("shape", str(ctx.exception))
        with self.assertRaises(RuntimeError):
            tl.log_forward_pass(model, x, intervene=iv.Spec().at("fc2", iv.zero()))
        with self.assertRaises(KeyError):
            iv.replay(ref, iv.Spec().at("conv2d_9_9", iv.zero()))
        with self.assertRaises(TypeError):
            tl.log_forward_pass(model, x, intervene=[iv.Spec()])
        with self.assertRaises(TypeError):
            tl.log_forward_pass(model, x, intervene=(iv.Spec(), "not a log"))
        with self.assertRaises(RuntimeError) as ctx:
            tl.log_forward_pass(model, x, intervene=iv.Spec().at(
                iv.func("relu"), iv.call(lambda v, c: "not a tensor")))
        self.assertIn("not a torch.Tensor", str(ctx.exception))
        self.assertEqual(hook_state(model), before)
        # after all that, a plain log still works
        log = tl.log_forward_pass(model, x)
        self.assertEqual(log.module_num_passes["act"], 2)


if __name__ == "__main__":
    unittest.main()
