#!/usr/bin/python3
"""torchlens_cpp gradients (save_gradients): every saved gradient of an eager
resnet18 (random weights) and of a small hand-written model equals the
gradient of the same value in a plain run, taken without torchlens
(retain_grad on forward-hook outputs, or torch.autograd.grad on a hand-written
forward); the caller's input and parameter .grad are what a plain backward
leaves; key lists, gradient_postfunc, validate_gradients, errors; hooks left as
they were."""

import unittest

import torch
import torchvision
from torch import nn
from torch.nn import functional as F

import torchlens_cpp as tl


def hook_state(model):
    return [(name, dict(m._forward_pre_hooks), dict(m._forward_hooks))
            for name, m in model.named_modules()]


def param_grads(model):
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


class Small(nn.Module):
    """An MLP with a parameter-free module called twice, an in-place op and a
    0-d intermediate."""

    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(4, 6)
        self.act = nn.Tanh()
        self.fc2 = nn.Linear(6, 6)
        self.fc3 = nn.Linear(6, 3)

    def forward(self, x):
        h = self.act(self.fc1(x))
        g = self.act(self.fc2(h))
        g = g * 3.0
        g.add_(h)
        s = g.mean()
        return self.fc3(g) * s

    def by_hand(self, x):
        """The same computation, functionally: the intermediates in log order."""
        lin1 = F.linear(x, self.fc1.weight, self.fc1.bias)
        tanh1 = torch.tanh(lin1)
        lin2 = F.linear(tanh1, self.fc2.weight, self.fc2.bias)
        tanh2 = torch.tanh(lin2)
        mul = tanh2 * 3.0
        add = mul + tanh1
        mean = add.mean()
        lin3 = F.linear(add, self.fc3.weight, self.fc3.bias)
        out = lin3 * mean
        return out, [lin1, tanh1, lin2, tanh2, mul, add, mean, lin3, out]


def loss_of(y):
    return (y * torch.arange(1.0, y.shape[-1] + 1)).pow(2).sum()


class SmallModel(unittest.TestCase):
    def setUp(self):
        torch.manual_seed(0)
        self.model = Small()
        self.x0 = torch.randn(5, 4, generator=torch.Generator().manual_seed(1))

    def reference(self):
        """d loss / d every intermediate, by torch.autograd.grad on the
        hand-written forward; and the caller's .grad after a plain backward."""
        x = self.x0.clone().requires_grad_(True)
        out, mids = self.model.by_hand(x)
        grads = torch.autograd.grad(loss_of(out), mids + [x])
        self.model.zero_grad()
        x = self.x0.clone().requires_grad_(True)
        loss_of(self.model(x)).backward()
        plain = param_grads(self.model)
        self.model.zero_grad()
        return grads[:-1], grads[-1], x.grad.clone(), plain

    def test_gradients_equal_the_hand_written_forwards(self):
        mids, dx, plain_dx, plain_params = self.reference()
        x = self.x0.clone().requires_grad_(True)
        before = hook_state(self.model)
        log = tl.log_forward_pass(self.model, x, save_gradients=True)
        self.assertEqual(hook_state(self.model), before)
        self.assertTrue(log.tracks_gradients)
        self.assertEqual(log.layers_with_saved_gradients, [])  # nothing before backward
        ops = [l for l in log if not (l.is_input_layer or l.is_output_layer)]
        self.assertEqual([l.layer_type for l in ops],
                         ["linear", "tanh", "linear", "tanh", "mul", "add", "mean", "linear",
                          "mul"])
        self.assertEqual(len(log.returned), 1)
        loss_of(log.returned[0]).backward()
        for layer, expected in zip(ops, mids):
            self.assertTrue(layer.has_saved_gradient, layer.layer_label)
            self.assertEqual(layer.grad_shape, tuple(expected.shape))
            self.assertTrue(torch.allclose(layer.gradient, expected, atol=1e-6), layer.layer_label)
        self.assertTrue(torch.allclose(log["input_1"].gradient, dx, atol=1e-6))
        self.assertEqual(log["act:2"].layer_label, "tanh_2_4")  # module passes are exact
        # the caller's tensors get what a plain backward gives them
        self.assertTrue(torch.allclose(x.grad, plain_dx, atol=1e-6))
        self.assertTrue(torch.equal(x.grad, log["input_1"].gradient))
        after = param_grads(self.model)
        self.assertEqual(after.keys(), plain_params.keys())
        for name, g in plain_params.items():
            self.assertTrue(torch.allclose(after[name], g, atol=1e-6), name)
            self.assertTrue(torch.allclose(log.param_gradient(name), g, atol=1e-6), name)
        self.assertEqual(sorted(log.params_with_gradient), sorted(plain_params))
        steps = log.backward_log
        self.assertTrue(any(s["grad_fn"] == "TanhBackward0" for s in steps))
        self.assertEqual([s["order"] for s in steps], sorted(s["order"] for s in steps))

    def test_key_list_postfunc_and_gradient_only(self):
        mids, _, _, _ = self.reference()
        x = self.x0.clone().requires_grad_(True)
        log = tl.log_forward_pass(self.model, x, layers_to_save=None,
                                  save_gradients=["fc2", "tanh_1_2"],
                                  gradient_postfunc=lambda g: g * 2)
        loss_of(log.returned[0]).backward()
        self.assertEqual(log.layers_with_saved_gradients, ["tanh_1_2", "linear_2_3"])
        self.assertEqual(log.layers_with_saved_activations, [])
        self.assertTrue(torch.allclose(log["tanh_1_2"].gradient, 2 * mids[1], atol=1e-6))
        self.assertTrue(torch.allclose(log["fc2"].gradient, 2 * mids[2], atol=1e-6))
        self.assertIsNone(log["linear_1_1"].gradient)
        self.assertFalse(log["linear_1_1"].has_saved_grad)

    def test_with_a_two_pass_save_and_scripted(self):
        mids, dx, _, _ = self.reference()
        # layers_to_save as a list runs the model twice: the hooks sit on the second pass
        x = self.x0.clone().requires_grad_(True)
        log = tl.log_forward_pass(self.model, x, layers_to_save=["fc3"], save_gradients=True)
        loss_of(log.returned[0]).backward()
        self.assertEqual(log.layers_with_saved_activations, ["linear_3_8"])
        self.assertTrue(torch.allclose(log["tanh_1_2"].gradient, mids[1], atol=1e-6))
        self.assertTrue(torch.allclose(x.grad, dx, atol=1e-6))
        # a TorchScript module goes through the TorchScript path, gradients alike
        seq = nn.Sequential(self.model.fc1, nn.Tanh(), self.model.fc2)
        x = self.x0.clone().requires_grad_(True)
        log = tl.log_forward_pass(torch.jit.script(seq), x, save_gradients=True)
        loss_of(log.returned[0]).backward()
        x2 = self.x0.clone().requires_grad_(True)
        h = seq[0](x2)
        t = seq[1](h)
        dh, dt = torch.autograd.grad(loss_of(seq[2](t)), [h, t])
        self.assertTrue(torch.allclose(log["linear_1_1"].gradient, dh, atol=1e-6))
        self.assertTrue(torch.allclose(log["tanh_1_2"].gradient, dt, atol=1e-6))

    def test_validate_gradients(self):
        x = self.x0.clone().requires_grad_(True)
        log = tl.log_forward_pass(self.model, x, save_gradients=True, keep_replay=True)
        loss_of(log.returned[0]).backward()
        report = tl.validate_gradients(log, return_report=True)
        self.assertTrue(report, str(report))
        self.assertGreater(report["layers_checked"], 3)

    def test_errors(self):
        with torch.no_grad():
            with self.assertRaises(RuntimeError) as ctx:
                tl.log_forward_pass(self.model, self.x0, save_gradients=True)
        self.assertIn("save_gradients", str(ctx.exception))
        with self.assertRaises(RuntimeError):
            tl.log_forward_pass(self.model, self.x0, gradient_postfunc=lambda g: g)
        with self.assertRaises(KeyError):  # a string is a key, as in layers_to_save
            tl.log_forward_pass(self.model, self.x0.clone().requires_grad_(True),
                                save_gradients="sometimes_maybe")
        log = tl.log_forward_pass(self.model, self.x0.clone().requires_grad_(True),
                                  save_gradients=True, gradient_postfunc=lambda g: "no")
        with self.assertRaises(RuntimeError) as ctx:
            loss_of(log.returned[0]).backward()
        self.assertIn("gradient_postfunc", str(ctx.exception))


class Resnet18(unittest.TestCase):
    def test_every_conv_and_the_input_equal_retain_grad_of_a_plain_run(self):
        torch.manual_seed(0)
        model = torchvision.models.resnet18(weights=None).eval()
        x0 = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(1))
        target = torch.randn(2, 1000, generator=torch.Generator().manual_seed(2))

        def loss(y):
            return ((y - target) ** 2).mean()

        # a plain run: retain_grad on every Conv2d/Linear output (forward hooks)
        outs, handles = {}, []
        for name, m in model.named_modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                def keep(mod, _i, out, name=name):
                    out.retain_grad()
                    outs[name] = out
                handles.append(m.register_forward_hook(keep))
        x = x0.clone().requires_grad_(True)
        try:
            loss(model(x)).backward()
        finally:
            for h in handles:
                h.remove()
        plain_dx = x.grad.clone()
        plain_params = param_grads(model)
        model.zero_grad()

        before = hook_state(model)
        x = x0.clone().requires_grad_(True)
        log = tl.log_forward_pass(model, x, save_gradients=True)
        loss(log.returned[0]).backward()
        self.assertEqual(hook_state(model), before)
        self.assertEqual(len(outs), 21)
        for name, out in outs.items():
            layer = log[name]
            self.assertIn(layer.layer_type, ("conv2d", "linear"))
            self.assertTrue(torch.allclose(layer.gradient, out.grad, atol=1e-7), name)
        self.assertTrue(torch.allclose(log["input_1"].gradient, plain_dx, atol=1e-7))
        self.assertTrue(torch.allclose(x.grad, plain_dx, atol=1e-7))
        after = param_grads(model)
        self.assertEqual(after.keys(), plain_params.keys())
        for name, g in plain_params.items():
            self.assertTrue(torch.allclose(after[name], g, atol=1e-7), name)
        # every op pass got one (in-place relu_/add_ versions too), the input, and the
        # output (its producer's); the running statistics are in no autograd graph
        self.assertEqual(log.layers_with_saved_gradients,
                         [l.layer_label for l in log if not l.is_buffer_layer])
        self.assertTrue(torch.equal(log["output_1"].gradient, log["linear_1_69"].gradient))


if __name__ == "__main__":
    unittest.main()
