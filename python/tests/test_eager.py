#!/usr/bin/python3
"""torchlens_cpp on eager models: torchvision's resnet18 (random weights)
against counts computed without torchlens (forward hooks, the frozen
TorchScript graph of scripts/export_torchvision.py) and against a plain eager
run's module outputs captured with forward hooks (bit for bit); module
nesting of parameter-free modules called in loops; exceptions inside forward;
list/dict/keyword inputs; seeds; key lists; lookup errors; hooks and model
state left as they were."""

import collections
import dataclasses
import inspect
import os
import sys
import tempfile
import unittest
import warnings

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(ROOT, "scripts"))

import torch  # noqa: E402
import torchvision  # noqa: E402
from torch import nn  # noqa: E402

import export_torchvision  # noqa: E402  (static_op_counts, module_calls)
import torchlens_cpp as tl  # noqa: E402


def hook_outputs(model, *args, **kwargs):
    """A plain eager run: every module call's output (cloned at the call),
    address -> [pass 1, pass 2, ...], and the model's output."""
    outputs = collections.defaultdict(list)
    handles = []
    for name, m in model.named_modules():
        if name:
            handles.append(m.register_forward_hook(
                lambda mod, _i, out, name=name: outputs[name].append(out.detach().clone())))
    try:
        with torch.no_grad():
            result = model(*args, **kwargs)
    finally:
        for h in handles:
            h.remove()
    return outputs, result


def hook_state(model):
    return [(name, dict(m._forward_pre_hooks), dict(m._forward_hooks))
            for name, m in model.named_modules()]


class Resnet18(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        torch.manual_seed(0)
        cls.model = torchvision.models.resnet18(weights=None).eval()
        cls.x = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(1))
        with torch.no_grad():
            cls.log = tl.log_forward_pass(cls.model, cls.x)

    def test_op_counts_equal_the_frozen_graph_and_the_module_calls(self):
        counts, in_blocks = export_torchvision.static_op_counts(torch.jit.script(self.model))
        self.assertEqual(in_blocks, 0)
        ops = collections.Counter(
            l.layer_type for l in self.log
            if not (l.is_input_layer or l.is_output_layer or l.is_buffer_layer))
        self.assertEqual(dict(ops), counts)
        calls = export_torchvision.module_calls(self.model, self.x)
        self.assertEqual(ops["conv2d"], calls["Conv2d"])
        self.assertEqual(ops["batchnorm"], calls["BatchNorm2d"])
        self.assertEqual(ops["linear"], calls["Linear"])
        # 69 ops, the input, the output, two running statistics per batch norm
        self.assertEqual(sum(ops.values()), 69)
        self.assertEqual(len(self.log), 69 + 2 + 2 * 20)
        self.assertEqual(self.log.input_layers, ["input_1"])
        self.assertEqual(self.log.output_layers, ["output_1"])

    def test_modules_and_passes_are_the_eager_calls(self):
        calls = collections.Counter()
        handles = [m.register_forward_pre_hook(lambda mod, _a, name=name: calls.update([name]))
                   for name, m in self.model.named_modules() if name]
        with torch.no_grad():
            self.model(self.x)
        for h in handles:
            h.remove()
        self.assertEqual(self.log.module_num_passes, dict(calls))
        self.assertEqual(self.log.module_num_passes["layer1.0.relu"], 2)
        self.assertEqual(self.log.module_types["layer2.0.downsample"], "Sequential")

    def test_labels_fields_and_nesting(self):
        log = self.log
        first = log[1]
        self.assertEqual(first.layer_label, "conv2d_1_1")
        self.assertEqual(first.layer_type, "conv2d")
        self.assertEqual(first.parent_layers, ["input_1"])
        self.assertEqual(first.child_layers, ["batchnorm_1_2"])
        self.assertEqual(first.tensor_shape, (1, 64, 32, 32))
        self.assertEqual(first.tensor_dtype, torch.float32)
        self.assertEqual(first.containing_module_origin, "conv1:1")
        self.assertEqual(first.module_passes_exited, ["conv1:1"])
        self.assertEqual(first.parent_param_shapes, [(64, 3, 7, 7)])
        self.assertTrue(first.computed_with_params)
        conv = log["layer1.0.conv1"]
        self.assertEqual(conv.layer_label, "conv2d_2_5")
        self.assertEqual(conv.containing_modules_origin_nested,
                         ["layer1:1", "layer1.0:1", "layer1.0.conv1:1"])
        self.assertEqual(conv.modules_entered, ["layer1.0.bn1"])
        # the block's output leaves relu:2, the block and (for the last) layer1
        out = log["layer1.1"]
        self.assertEqual(out.layer_type, "relu")
        self.assertEqual(out.module_passes_exited, ["layer1.1.relu:2", "layer1.1:1", "layer1:1"])
        self.assertEqual(out.num_passes, 1)
        self.assertIs(log[-1].is_output_layer, True)
        self.assertIs(log[0].is_input_layer, True)
        self.assertEqual(log[-1].layer_label, "output_1")
        # TorchLens 1.0: the output node leaves the modules of its producer (fc), outermost first
        self.assertEqual(log[-1].module_passes_exited, ["fc:1"])
        self.assertEqual(log[-1].modules_exited, ["fc"])
        self.assertIs(log[-1].is_submodule_output, False)
        self.assertEqual(log["conv2d_3_8"].containing_module_origin, "layer1.0.conv2:1")
        self.assertEqual(log[5].layer_label, log.layer_labels[5])
        self.assertIn("layer1.0.conv1", log)
        self.assertNotIn("layer9", log)

    def test_activations_equal_the_eager_module_outputs_bit_for_bit(self):
        outputs, result = hook_outputs(self.model, self.x)
        checked = 0
        for address, passes in outputs.items():
            for i, expected in enumerate(passes):
                key = address if len(passes) == 1 else f"{address}:{i + 1}"
                got = self.log[key].tensor_contents
                self.assertTrue(torch.equal(got, expected), key)
                checked += 1
        # 75 calls: 4 stem modules, 4 stages, 8 blocks of 6 calls (relu twice),
        # 3 downsample Sequentials of 2 modules, avgpool, fc
        self.assertEqual(checked, 4 + 4 + 8 + 8 * 6 + 3 * 3 + 2)
        self.assertTrue(torch.equal(self.log["output_1"].tensor_contents, result))
        self.assertTrue(torch.equal(self.log["input_1"].tensor_contents, self.x))

    def test_tensors_are_returned_without_copies(self):
        layer = self.log["layer1.0.conv1"]
        a, b = layer.tensor_contents, layer.tensor_contents
        self.assertIs(a, b)  # the same torch.Tensor object: no copy per access
        # the output layer shares its producer's tensor
        self.assertEqual(self.log[-1].tensor_contents.data_ptr(),
                         self.log[-2].tensor_contents.data_ptr())

    def test_summary_and_metadata(self):
        text = str(self.log)
        self.assertIn("ResNet", text)
        self.assertEqual(self.log.total_params, sum(p.numel() for p in self.model.parameters()))
        meta = tl.get_model_metadata(self.model, self.x)
        self.assertEqual(meta.layer_labels, self.log.layer_labels)
        self.assertTrue(all(l.tensor_contents is None for l in meta))
        self.assertEqual(meta.num_tensors_saved, 0)


class Nesting(unittest.TestCase):
    def test_parameter_free_module_in_a_loop_has_exact_passes(self):
        class Loop(nn.Module):
            def __init__(self):
                super().__init__()
                self.fc = nn.Linear(4, 4)
                self.act = nn.Tanh()  # no parameters: TorchScript cannot tell its calls apart

            def forward(self, x):
                for _ in range(3):
                    x = self.act(self.fc(x) * 2)
                return x

        torch.manual_seed(0)
        model = Loop()
        x = torch.rand(2, 4)
        log = tl.log_forward_pass(model, x, random_seed=0)
        self.assertEqual(log.module_num_passes, {"fc": 3, "act": 3})
        tanhs = [l for l in log if l.layer_type == "tanh"]
        self.assertEqual([l.containing_module_origin for l in tanhs], ["act:1", "act:2", "act:3"])
        self.assertEqual([l.module_passes_exited for l in tanhs], [["act:1"], ["act:2"], ["act:3"]])
        self.assertEqual([l.layer_label for l in tanhs], ["tanh_1_3:1", "tanh_1_3:2", "tanh_1_3:3"])
        self.assertEqual(tanhs[0].num_passes, 3)
        muls = [l for l in log if l.layer_type == "mul"]
        self.assertEqual([l.containing_module_origin for l in muls], [None, None, None])
        outputs, _ = hook_outputs(model, x)
        for i in range(3):
            self.assertTrue(torch.equal(log[f"act:{i + 1}"].tensor_contents, outputs["act"][i]))
            self.assertTrue(torch.equal(log[f"fc:{i + 1}"].tensor_contents, outputs["fc"][i]))

    def test_one_op_repeats_are_loops_only_in_a_module(self):
        # TorchLens's own regression tests (tests/test_loop_module_rolling.py):
        # tanh(tanh(x)) in forward is a chain; one nn.ReLU called four times is a loop
        class TanhChain(nn.Module):
            def forward(self, x):
                return torch.tanh(torch.tanh(x))

        class TanhChain3(nn.Module):
            def forward(self, x):
                return torch.tanh(torch.tanh(torch.tanh(x)))

        class ReusedRelu(nn.Module):
            def __init__(self):
                super().__init__()
                self.relu = nn.ReLU()

            def forward(self, x):
                for _ in range(4):
                    x = self.relu(x)
                return x

        x = torch.randn(1, 4, generator=torch.Generator().manual_seed(0))
        chain = tl.log_forward_pass(TanhChain(), x, random_seed=0)
        tanhs = [l for l in chain if l.layer_type == "tanh"]
        self.assertEqual([l.layer_label for l in tanhs], ["tanh_1_1", "tanh_2_2"])
        self.assertEqual([l.num_passes for l in tanhs], [1, 1])
        self.assertTrue(torch.equal(tanhs[1].tensor_contents, torch.tanh(torch.tanh(x))))
        loop = tl.log_forward_pass(ReusedRelu(), x, random_seed=0)
        relus = [l for l in loop if l.layer_type == "relu"]
        self.assertEqual([l.layer_label for l in relus],
                         ["relu_1_1:1", "relu_1_1:2", "relu_1_1:3", "relu_1_1:4"])
        self.assertEqual([l.containing_module_origin for l in relus],
                         ["relu:1", "relu:2", "relu:3", "relu:4"])
        self.assertEqual(relus[0].num_passes, 4)
        # three repeats: a chain now, a loop by TorchLens 1.0's rule
        three = tl.log_forward_pass(TanhChain3(), x, random_seed=0)
        self.assertEqual([l.layer_label for l in three if l.layer_type == "tanh"],
                         ["tanh_1_1", "tanh_2_2", "tanh_3_3"])
        v1 = tl.log_forward_pass(TanhChain3(), x, random_seed=0, min_param_free_loop_body=1)
        self.assertEqual([l.layer_label for l in v1 if l.layer_type == "tanh"],
                         ["tanh_1_1:1", "tanh_1_1:2", "tanh_1_1:3"])
        # TorchLens's detect_loops=False
        off = tl.log_forward_pass(ReusedRelu(), x, random_seed=0, detect_loops=False)
        self.assertEqual([l.layer_label for l in off if l.layer_type == "relu"],
                         ["relu_1_1", "relu_2_2", "relu_3_3", "relu_4_4"])
        scripted = tl.log_forward_pass(torch.jit.script(ReusedRelu()), x, random_seed=0,
                                       detect_loops=False)
        self.assertEqual([l.num_passes for l in scripted if l.layer_type == "relu"], [1] * 4)
        with self.assertRaisesRegex(RuntimeError, "min_param_free_loop_body must be at least 1"):
            tl.log_forward_pass(TanhChain(), x, min_param_free_loop_body=0)

    def test_module_returning_its_input_gets_an_identity_layer(self):
        class M(nn.Module):
            def __init__(self):
                super().__init__()
                self.skip = nn.Identity()

            def forward(self, x):
                return self.skip(x * 2) + 1

        log = tl.log_forward_pass(M(), torch.rand(3))
        ident = log["skip"]
        self.assertEqual(ident.layer_type, "identity")
        self.assertEqual(ident.parent_layers, ["mul_1_1"])
        self.assertEqual(ident.child_layers, ["add_1_3"])
        self.assertEqual(ident.module_passes_exited, ["skip:1"])

    def test_output_nodes_leave_their_producers_modules(self):
        # TorchLens 1.0 (_add_output_layers): an output node's module_passes_exited
        # are its producer's containing modules, outermost first; none for a
        # value made outside every module
        class M(nn.Module):
            def __init__(self):
                super().__init__()
                self.body = nn.Sequential(nn.Linear(3, 3), nn.Sequential(nn.Linear(3, 3), nn.ReLU()))
                self.head = nn.Linear(3, 2)

            def forward(self, x):
                h = self.body(x)
                return h, self.head(h), x * 2

        log = tl.log_forward_pass(M(), torch.rand(2, 3))
        outs = [log[label] for label in log.output_layers]
        self.assertEqual([o.module_passes_exited for o in outs],
                         [["body:1", "body.1:1", "body.1.1:1"], ["head:1"], []])
        self.assertEqual(outs[0].modules_exited, ["body", "body.1", "body.1.1"])
        self.assertEqual([o.is_submodule_output for o in outs], [False, False, False])
        # the producer itself: innermost first, as every other layer
        self.assertEqual(log["relu_1_3"].module_passes_exited, ["body.1.1:1", "body.1:1", "body:1"])
        self.assertEqual(log["relu_1_3"].modules_exited, ["body.1.1", "body.1", "body"])

    def test_a_drop_path_used_twice_in_a_block_is_not_a_loop(self):
        # Swin's and timm's blocks in eval: one stochastic-depth module returns
        # its input, after attention and after the MLP; TorchLens 1.0 finds no
        # loop in them (its identity layers are dead ends)
        class DropPath(nn.Module):
            def forward(self, x):
                return x

        class Block(nn.Module):
            def __init__(self):
                super().__init__()
                self.attn, self.mlp, self.drop_path = nn.Linear(4, 4), nn.Linear(4, 4), DropPath()

            def forward(self, x):
                x = x + self.drop_path(self.attn(x))
                return x + self.drop_path(self.mlp(x))

        log = tl.log_forward_pass(nn.Sequential(Block(), Block()), torch.rand(2, 4))
        self.assertFalse(log.is_recurrent)
        self.assertEqual(log.module_num_passes["0.drop_path"], 2)
        self.assertEqual(log["0.drop_path:2"].layer_type, "identity")
        self.assertEqual(log["0.drop_path:2"].parent_layers, ["linear_2_4"])
        self.assertTrue(all(layer.num_passes == 1 for layer in log))

    def test_shared_module_under_two_names_is_one_module(self):
        class M(nn.Module):
            def __init__(self):
                super().__init__()
                self.a = nn.Linear(3, 3)
                self.b = self.a

            def forward(self, x):
                return self.b(self.a(x))

        log = tl.log_forward_pass(M(), torch.rand(2, 3))
        self.assertEqual(log.module_num_passes, {"a": 2})


    def test_a_forward_called_directly_is_a_call_of_its_module(self):
        # `self.a.forward(x)` runs no hooks; TorchLens wraps forward and sees it.
        # A subclass calling super().forward stays one call, and the classes get
        # their own forward back (also when forward raises).
        class Block(nn.Module):
            def __init__(self):
                super().__init__()
                self.fc = nn.Linear(4, 4)
                self.act = nn.ReLU()

            def forward(self, x):
                return self.act(self.fc(x))

        class Scaled(Block):
            def forward(self, x):
                return super().forward(x) * 2

        class M(nn.Module):
            def __init__(self):
                super().__init__()
                self.a, self.b, self.c = Block(), Block(), Scaled()

            def forward(self, x):
                return self.c(self.b.forward(self.a.forward(x)))

        own, own_scaled = Block.__dict__["forward"], Scaled.__dict__["forward"]
        signature = inspect.signature(Block().forward)
        log = tl.log_forward_pass(M(), torch.rand(2, 4))
        self.assertEqual([layer.layer_label for layer in log],
                         ["input_1", "linear_1_1", "relu_1_2", "linear_2_3", "relu_2_4",
                          "linear_3_5", "relu_3_6", "mul_1_7", "output_1"])
        self.assertEqual(log["linear_1_1"].containing_modules, ["a:1", "a.fc:1"])
        self.assertEqual(sorted(log["relu_1_2"].module_passes_exited), ["a.act:1", "a:1"])
        self.assertEqual(log["linear_2_3"].containing_modules, ["b:1", "b.fc:1"])
        self.assertEqual(log["linear_3_5"].containing_modules, ["c:1", "c.fc:1"])
        self.assertEqual(log["mul_1_7"].containing_modules, ["c:1"])
        self.assertEqual(log.module_num_passes, {"a": 1, "a.fc": 1, "a.act": 1, "b": 1,
                                                 "b.fc": 1, "b.act": 1, "c": 1, "c.fc": 1,
                                                 "c.act": 1})
        self.assertIs(Block.__dict__["forward"], own)
        self.assertIs(Scaled.__dict__["forward"], own_scaled)
        self.assertEqual(inspect.signature(Block().forward), signature)
        with self.assertRaises(RuntimeError):
            tl.log_forward_pass(M(), torch.rand(2, 5))  # a shape error inside a.forward
        self.assertIs(Block.__dict__["forward"], own)
        x = torch.rand(2, 4)
        m = M()
        log = tl.log_forward_pass(m, x, layers_to_save="all")
        self.assertTrue(torch.equal(log["output_1"].tensor_contents, m(x)))

class Conditionals(unittest.TestCase):
    """TorchLens's conditional fields, as its code sets them (postprocess step 5)."""

    def test_if_condition_fields(self):
        class M(nn.Module):
            def forward(self, x):
                if torch.mean(x - 5) > 3:
                    return torch.relu(x)
                return torch.tanh(x)

        for sign in (1.0, -1.0):
            x = torch.full((2, 3), 10.0 * sign)
            log = tl.log_forward_pass(M(), x)
            self.assertTrue(log.has_conditional_branching)
            self.assertEqual(log.conditional_branch_edges, [("input_1", "sub_1_1")])
            # the condition's computation; the bool itself is the terminal bool
            self.assertEqual([l.layer_label for l in log if l.in_cond_branch], ["sub_1_1", "mean_1_2"])
            self.assertEqual([l.layer_label for l in log if l.is_terminal_bool_layer], ["gt_1_3"])
            self.assertEqual(log["gt_1_3"].scalar_bool_value, sign > 0)
            self.assertEqual(log["input_1"].cond_branch_start_children, ["sub_1_1"])
            self.assertEqual(log["sub_1_1"].cond_branch_start_children, [])
            self.assertIsNone(log["sub_1_1"].scalar_bool_value)
            arm = "relu_1_4" if sign > 0 else "tanh_1_4"
            self.assertFalse(log[arm].in_cond_branch)

    def test_condition_read_straight_from_an_output_ancestor(self):
        # one op from a tensor the model goes on using: no layer is in the
        # branch, but the IF edge and the conditional are there
        class M(nn.Module):
            def forward(self, x):
                mask = x > 0
                if bool(mask.any()):
                    x = x * mask
                return x

        log = tl.log_forward_pass(M(), torch.tensor([1.0, -1.0]))
        self.assertTrue(log.has_conditional_branching)
        self.assertEqual(log.conditional_branch_edges, [("gt_1_1", "any_1_2")])
        self.assertFalse(any(l.in_cond_branch for l in log))


    def test_asserts_and_while_conditions_are_not_if_conditions(self):
        # the bool's statement decides, as TorchLens 2.x classifies the source and
        # as the IR does for the same model scripted: `assert` and `while` read a
        # bool without starting a branch; an `if` does, whatever its body does
        # (`raise`, `break`)
        class Checks(nn.Module):
            def __init__(self, kind):
                super().__init__()
                self.fc = nn.Linear(3, 3)
                self.kind = kind

            def forward(self, x):
                if self.kind == "assert":
                    assert torch.isfinite(x).all(), "finite"
                    return self.fc(x)
                if self.kind == "raise":
                    if not torch.isfinite(x).all():
                        raise ValueError("not finite")
                    return self.fc(x)
                if self.kind == "while":
                    n = 0
                    while x.norm() < 20 and n < 5:
                        x = self.fc(x) * 2
                        n += 1
                    return x
                for _ in range(5):
                    x = self.fc(x)
                    if x.abs().max() > 20:
                        break
                    if x.sum() > 0:
                        x = x.relu()
                return x

        torch.manual_seed(0)
        x = torch.rand(2, 3)
        for kind, conditional in (("assert", False), ("raise", True), ("while", False),
                                  ("break", True)):
            model = Checks(kind)
            log = tl.log_forward_pass(model, x)
            scripted = tl.log_forward_pass(torch.jit.script(model), x)
            self.assertEqual(log.has_conditional_branching, conditional, kind)
            self.assertEqual(scripted.has_conditional_branching, conditional, kind)
            self.assertEqual(log.conditional_branch_edges, scripted.conditional_branch_edges,
                             kind)
            with torch.no_grad():
                self.assertTrue(torch.equal(log[-1].tensor_contents, model(x)), kind)
            if kind == "break":
                # both `if`s of every step start a branch: the `break`'s (abs, max,
                # gt) and the relu's (sum, gt)
                heads = sorted({child.rsplit("_", 2)[0] for _, child in log.conditional_branch_edges})
                self.assertEqual(heads, ["abs", "sum"], log.conditional_branch_edges)


class ModuleHooks(unittest.TestCase):
    def test_what_a_modules_pre_hooks_compute_is_inside_its_call(self):
        # weight_norm and pruning compute the weight in a forward pre-hook: part
        # of the module's call (TorchLens 1.0 puts weightnorm in the module too)
        import torch.nn.utils.prune as prune
        torch.manual_seed(0)
        model = nn.Sequential(nn.utils.weight_norm(nn.Linear(4, 4)), nn.ReLU(), nn.Linear(4, 2))
        prune.l1_unstructured(model[2], "weight", amount=0.5)
        x = torch.randn(3, 4)
        log = tl.log_forward_pass(model, x)
        norm = [l for l in log if l.layer_type == "weightnorm"]
        masked = [l for l in log if l.layer_type == "mul"]
        self.assertEqual(len(norm), 1)
        self.assertEqual(len(masked), 1)
        self.assertEqual(norm[0].containing_modules_origin_nested, ["0:1"])
        self.assertEqual(masked[0].containing_modules_origin_nested, ["2:1"])
        # the values are the weights the layers used (each call recomputes them)
        self.assertTrue(torch.equal(norm[0].tensor_contents, model[0].weight))
        self.assertTrue(torch.equal(masked[0].tensor_contents, model[2].weight))
        linears = [l for l in log if l.layer_type == "linear"]
        self.assertIn(norm[0].layer_label, linears[0].parent_layers)
        self.assertIn(masked[0].layer_label, linears[1].parent_layers)
        self.assertEqual(linears[0].containing_modules_origin_nested, ["0:1"])
        self.assertTrue(tl.validate_saved_activations(model, x))


class TorchLensNames(unittest.TestCase):
    def test_namespace_ops_and_module_fields_have_torchlens_1_0_names(self):
        # TorchLens 1.0 on this model: input_1, linear_1_1, rfft_1_2,
        # irfft_1_3, vectornorm_1_4 (Python's names in torch.fft and
        # torch.linalg), and containing_modules ['blk:1', 'blk.lift:1']
        class Block(nn.Module):
            def __init__(self):
                super().__init__()
                self.lift = nn.Linear(4, 4)

            def forward(self, x):
                return self.lift(x)

        class Spectral(nn.Module):
            def __init__(self):
                super().__init__()
                self.blk = Block()

            def forward(self, x):
                y = torch.fft.irfft(torch.fft.rfft(self.blk(x)), n=4)
                return y, torch.linalg.vector_norm(y, dim=-1)

        torch.manual_seed(0)
        model, x = Spectral(), torch.randn(3, 4)
        log = tl.log_forward_pass(model, x)
        self.assertEqual([l.layer_label for l in log],
                         ["input_1", "linear_1_1", "rfft_1_2", "irfft_1_3", "vectornorm_1_4",
                          "output_1", "output_2"])
        lin = log["linear_1_1"]
        self.assertEqual(lin.containing_modules, ["blk:1", "blk.lift:1"])
        self.assertEqual(lin.containing_modules, lin.containing_modules_origin_nested)
        self.assertEqual(lin.containing_module, "blk.lift:1")
        self.assertEqual(lin.module_nesting_depth, 2)
        self.assertIsNone(log["rfft_1_2"].containing_module)
        with torch.no_grad():
            self.assertTrue(torch.equal(log["rfft_1_2"].tensor_contents,
                                        torch.fft.rfft(model.blk(x))))


class Sampling(unittest.TestCase):
    def test_sampling_loops_validate_and_equal_a_plain_run(self):
        # multinomial and bernoulli draw from probabilities: shifting them can
        # draw the same samples from the same generator state, and a negative
        # value is outside their domain (this sampler was INVALID so)
        class Sampler(nn.Module):
            def __init__(self):
                super().__init__()
                self.emb = nn.Embedding(7, 4)
                self.out = nn.Linear(4, 7)
                self.gate = nn.Linear(4, 4)

            def forward(self, tok):
                outs = []
                for _ in range(3):
                    h = self.emb(tok)
                    h = h * torch.bernoulli(torch.sigmoid(self.gate(h)))
                    tok = torch.multinomial(torch.softmax(self.out(h), -1), 1).squeeze(-1)
                    outs.append(tok)
                return torch.stack(outs, -1)

        torch.manual_seed(0)
        model, tok = Sampler(), torch.tensor([1, 2])
        report = tl.validate_saved_activations(model, [tok], random_seed=0, return_report=True)
        self.assertTrue(report["valid"], str(report))
        self.assertEqual(report["layers_checked"], 28)  # 9 ops x 3 steps, stack
        log = tl.log_forward_pass(model, [tok], random_seed=0)
        self.assertEqual(log["multinomial_1:1"].num_passes, 3)
        torch.manual_seed(0)
        with torch.no_grad():
            plain = model(tok)
        self.assertTrue(torch.equal(log["output_1"].tensor_contents, plain))


class SharedWeights(unittest.TestCase):
    def test_two_modules_sharing_their_weights_are_one_layer(self):
        # TorchLens 1.0 on this model: linear_1_1:1 in a:1, linear_1_1:2 in b:1
        class Tied(nn.Module):
            def __init__(self):
                super().__init__()
                self.a = nn.Linear(4, 4)
                self.b = nn.Linear(4, 4)
                self.b.weight = self.a.weight
                self.b.bias = self.a.bias

            def forward(self, x):
                return self.b(torch.relu(self.a(x)))

        torch.manual_seed(0)
        model, x = Tied(), torch.randn(3, 4)
        log = tl.log_forward_pass(model, x)
        self.assertEqual([l.layer_label for l in log],
                         ["input_1", "linear_1_1:1", "relu_1_2", "linear_1_1:2", "output_1"])
        self.assertEqual(log["linear_1_1:2"].containing_modules_origin_nested, ["b:1"])
        self.assertEqual(log["linear_1_1:2"].parent_param_addresses, ["a.weight", "a.bias"])
        self.assertTrue(log.is_recurrent)
        with torch.no_grad():
            self.assertTrue(torch.equal(log["linear_1_1:1"].tensor_contents, model.a(x)))

    def test_a_scripted_model_names_a_shared_parameter_as_named_parameters_does(self):
        # scripting copies a module registered twice (enc2 = enc1): two modules
        # in the script's named_modules(), one set of parameters, listed once
        class Alias(nn.Module):
            def __init__(self):
                super().__init__()
                self.enc1 = nn.Sequential(nn.Linear(4, 4), nn.ReLU())
                self.enc2 = self.enc1
                self.out = nn.Linear(4, 2)

            def forward(self, x):
                return self.out(self.enc2(self.enc1(x)))

        torch.manual_seed(0)
        scripted = torch.jit.script(Alias().eval())
        self.assertEqual([n for n, _ in scripted.named_parameters()][:2],
                         ["enc1.0.weight", "enc1.0.bias"])
        log = tl.log_forward_pass(scripted, torch.randn(3, 4))
        linears = [l for l in log if l.layer_type == "linear"]
        self.assertEqual([l.layer_label for l in linears],
                         ["linear_1_1:1", "linear_1_1:2", "linear_2_4"])
        for layer in linears[:2]:
            self.assertEqual(layer.parent_param_addresses, ["enc1.0.weight", "enc1.0.bias"])
        self.assertEqual(linears[1].containing_modules_origin_nested, ["enc2:1", "enc2.0:1"])


_TEST_LIB = torch.library.Library("torchlens_test", "DEF")
_TEST_LIB.define("triple(Tensor x) -> Tensor")
_TEST_LIB.impl("triple", lambda x: x * 3, "CPU")


class GradientsInsideForward(unittest.TestCase):
    def test_autograd_grad_in_forward_reads_the_parameters_it_differentiates(self):
        # a gradient penalty: torch.autograd.grad(create_graph=True) inside
        # forward runs the backward ops through the dispatcher; the transposed
        # weights autograd saved are views of the parameters, not constants
        class Penalty(nn.Module):
            def __init__(self):
                super().__init__()
                self.f = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 1))

            def forward(self, x):
                y = self.f(x)
                (g,) = torch.autograd.grad(y.sum(), x, create_graph=True)
                return y + g.pow(2).sum(-1, keepdim=True)

        torch.manual_seed(0)
        model = Penalty()
        x = torch.randn(2, 3, requires_grad=True)
        log = tl.log_forward_pass(model, x)
        self.assertEqual([l for l in log.layer_labels if l.startswith("constant")], [])
        transposes = [l for l in log if l.layer_type == "t"]
        self.assertEqual([l.parent_param_addresses for l in transposes],
                         [["f.2.weight"], ["f.0.weight"]])  # backward: last layer first
        y = model.f(x)
        (g,) = torch.autograd.grad(y.sum(), x, create_graph=True)
        self.assertTrue(torch.allclose(log[-1].tensor_contents, y + g.pow(2).sum(-1, keepdim=True)))
        self.assertTrue(tl.validate_saved_activations(model, x))


class OpsOutsideATen(unittest.TestCase):
    def test_region_ops_nms_unique_and_a_custom_op_validate(self):
        # torchvision's maskrcnn (eager) crashed validation: perturbed `rois`
        # made roi_align read a random batch index; then nms's boxes and unique's
        # counts were false failures. rois are perturbed with their batch
        # column kept, and a custom op outside ATen is replayed, not perturbed.
        class Regions(nn.Module):
            def __init__(self):
                super().__init__()
                self.conv = nn.Conv2d(3, 4, 3, padding=1)
                self.fc = nn.Linear(3 * 8 * 8, 8)

            def forward(self, x):
                f = self.conv(x)
                boxes = torch.sigmoid(self.fc(x.flatten(1))).view(-1, 4) * 6
                boxes = torch.cat([boxes[:, :2], boxes[:, :2] + boxes[:, 2:] + 1], 1)
                rois = torch.cat([torch.zeros(boxes.shape[0], 1), boxes], 1)
                pooled = torchvision.ops.roi_align(f, rois, output_size=2)
                keep = torchvision.ops.nms(boxes, boxes[:, 0], 0.5)
                labels = (pooled.mean((1, 2, 3)) > 0).long()
                _, inverse, counts = torch.unique(labels, return_inverse=True,
                                                  return_counts=True)
                return (torch.ops.torchlens_test.triple(pooled).sum() + keep.sum()
                        + inverse.sum() + counts.sum())

        torch.manual_seed(0)
        model, x = Regions().eval(), torch.rand(1, 3, 8, 8)
        log = tl.log_forward_pass(model, x)
        with torch.no_grad():
            self.assertTrue(torch.equal(log["output_1"].tensor_contents, model(x)))
        report = tl.validate_saved_activations(model, x, return_report=True)
        self.assertTrue(report, report["text"])
        text = report["text"]
        self.assertIn("not perturbed: an op outside ATen may not check its inputs: "
                      "triple_1_", text)
        self.assertIn("the boxes decide only which overlaps pass the threshold: nms_1_", text)
        self.assertIn("inverse indices and counts depend only on which elements are equal", text)
        roi = [l.layer_label for l in log if l.layer_type == "roialign"]
        self.assertEqual(len(roi), 1)
        self.assertNotIn(roi[0] + " ←", text.split("exemptions:")[-1])  # rois perturbed


class Generation(unittest.TestCase):
    def test_greedy_decoding_with_a_kv_cache(self):
        # the loop researchers log most: a cache written in place each step,
        # attention over t + 1 keys (one key at the first step), argmax
        class TinyLM(nn.Module):
            def __init__(self):
                super().__init__()
                self.emb = nn.Embedding(11, 8)
                self.q, self.k, self.v = nn.Linear(8, 8), nn.Linear(8, 8), nn.Linear(8, 8)
                self.out = nn.Linear(8, 11)

            def forward(self, tok):
                kc, vc = torch.zeros(tok.size(0), 4, 8), torch.zeros(tok.size(0), 4, 8)
                outs = []
                for t in range(4):
                    h = self.emb(tok)
                    kc[:, t] = self.k(h)
                    vc[:, t] = self.v(h)
                    att = torch.softmax((self.q(h).unsqueeze(1) * kc[:, : t + 1]).sum(-1), -1)
                    tok = self.out((att.unsqueeze(-1) * vc[:, : t + 1]).sum(1) + h).argmax(-1)
                    outs.append(tok)
                return torch.stack(outs, 1)

        torch.manual_seed(0)
        model, prompt = TinyLM().eval(), torch.tensor([1, 2])
        report = tl.validate_saved_activations(model, prompt, return_report=True)
        self.assertTrue(report, str(report))
        self.assertIn("normalised over a dimension of size 1", str(report))
        log = tl.log_forward_pass(model, prompt)
        self.assertTrue(log.is_recurrent)
        for address in ("emb", "q", "k", "v", "out"):
            self.assertEqual(log.module_num_passes[address], 4)
        with torch.no_grad():
            tokens = model(prompt)
        argmaxes = [l for l in log if l.layer_type == "argmax"]
        self.assertEqual([l.pass_num for l in argmaxes], [1, 2, 3, 4])
        for step, layer in enumerate(argmaxes):
            self.assertTrue(torch.equal(layer.tensor_contents, tokens[:, step]))


class PackedSequences(unittest.TestCase):
    def test_a_packed_bidirectional_lstm_validates(self):
        # pack_padded_sequence's batch sizes and pad_packed_sequence's lengths
        # depend on the lengths only, and its unsort scatters an inverse
        # permutation over every element of empty_like: proofs, not failures
        from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

        class M(nn.Module):
            def __init__(self):
                super().__init__()
                self.rnn = nn.LSTM(4, 6, batch_first=True, bidirectional=True, num_layers=2)
                self.out = nn.Linear(12, 2)

            def forward(self, x, lengths):
                packed = pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False)
                y, _ = pad_packed_sequence(self.rnn(packed)[0], batch_first=True)
                return self.out(y.sum(1))

        torch.manual_seed(0)
        model, args = M().eval(), [torch.randn(3, 5, 4), torch.tensor([5, 3, 2])]
        report = tl.validate_saved_activations(model, args, return_report=True)
        self.assertTrue(report, str(report))
        text = str(report)
        for reason in ("batch sizes depend on the lengths only",
                       "lengths depend on the batch sizes only", "every element overwritten"):
            self.assertIn(reason, text)
        log = tl.log_forward_pass(model, args)
        with torch.no_grad():
            self.assertTrue(torch.equal(log["out"].tensor_contents, model(*args)))


class Autocast(unittest.TestCase):
    def test_ops_under_autocast_replay_under_it(self):
        # a linear under torch.autocast runs in bfloat16; its replay ran in
        # float32 and validation reported a mismatch (max error inf)
        class M(nn.Module):
            def __init__(self):
                super().__init__()
                self.a, self.b = nn.Linear(8, 8), nn.Linear(8, 2)

            def forward(self, x):
                with torch.autocast("cpu", dtype=torch.bfloat16):
                    h = torch.relu(self.a(x))
                return self.b(h.float())

        torch.manual_seed(0)
        model, x = M().eval(), torch.randn(3, 8)
        report = tl.validate_saved_activations(model, x, return_report=True)
        self.assertTrue(report, str(report))
        self.assertFalse(torch.is_autocast_cpu_enabled())  # the replays put it back
        log = tl.log_forward_pass(model, x)
        self.assertEqual(log["a"].tensor_dtype, torch.bfloat16)
        with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
            self.assertTrue(torch.equal(log["a"].tensor_contents, model.a(x)))


class Scripted(unittest.TestCase):
    def test_resnet18_scripted_logs_as_the_eager_model(self):
        # two independent routes to module calls: Python hooks on the eager
        # model, the TorchScript interpreter's frames on the scripted one
        torch.manual_seed(0)
        model = torchvision.models.resnet18(weights=None).eval()
        scripted = torch.jit.script(model)
        x = torch.rand(1, 3, 32, 32)
        eager = tl.log_forward_pass(model, x, random_seed=0)
        script = tl.log_forward_pass(scripted, x, random_seed=0)
        self.assertEqual(eager.layer_labels, script.layer_labels)
        self.assertEqual(eager.module_num_passes, script.module_num_passes)
        for a, b in zip(eager, script):
            self.assertEqual(a.layer_type, b.layer_type)
            self.assertEqual(a.parent_layers, b.parent_layers)
            self.assertEqual(a.containing_modules_origin_nested,
                             b.containing_modules_origin_nested, a.layer_label)
            # exits: the eager ones are what the calls returned (the module
            # outputs are checked against forward hooks in Resnet18); the
            # TorchScript path also takes the first child's output of a
            # Sequential (`downsample.0`, `layer1.0`) to leave the Sequential
            extra = set(b.module_passes_exited) - set(a.module_passes_exited)
            self.assertLessEqual(set(a.module_passes_exited), set(b.module_passes_exited))
            for frame in extra:
                address = frame.split(":")[0]
                self.assertEqual(eager.module_types[address], "Sequential", a.layer_label)
            self.assertTrue(torch.allclose(a.tensor_contents, b.tensor_contents, atol=1e-5),
                            a.layer_label)
        self.assertIs(tl.validate_saved_activations(scripted, x), True)

    def test_resnet18_traced_has_the_eager_models_module_calls(self):
        # torch.jit.trace gives a module called twice a method per call
        # (`forward`, `forward1`): each block's second relu was in no call
        torch.manual_seed(0)
        model = torchvision.models.resnet18(weights=None).eval()
        x = torch.rand(1, 3, 32, 32)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            traced = torch.jit.trace(model, x)
        eager = tl.log_forward_pass(model, x, random_seed=0)
        trace = tl.log_forward_pass(traced, x, random_seed=0)
        self.assertEqual(eager.module_num_passes, trace.module_num_passes)
        self.assertEqual(trace.module_num_passes["layer1.0.relu"], 2)
        self.assertEqual(len(eager), len(trace))
        for a, b in zip(eager, trace):
            self.assertEqual(a.containing_modules_origin_nested,
                             b.containing_modules_origin_nested, a.layer_label)
            self.assertTrue(torch.allclose(a.tensor_contents, b.tensor_contents, atol=1e-5),
                            a.layer_label)
        self.assertIs(tl.validate_saved_activations(traced, x), True)

    def test_a_scripted_child_has_its_call_and_its_submodules_by_parameters(self):
        # A ScriptModule takes no Python hooks and runs its children in the
        # interpreter: its own calls are announced by global hooks, the calls
        # inside it are found by the parameters the ops read (as in a C++
        # model); a parameter-free child (the ReLU) is not seen, its op is in
        # the scripted module's call.
        scripted = torch.jit.script(nn.Sequential(nn.Linear(3, 3), nn.ReLU()))

        class M(nn.Module):
            def __init__(self):
                super().__init__()
                self.block = nn.Sequential(nn.Linear(3, 3), scripted)

            def forward(self, x):
                return self.block(self.block(x)) * 2

        model = M()
        x = torch.rand(2, 3)
        log = tl.log_forward_pass(model, x)
        self.assertEqual(
            log.module_num_passes, {"block": 2, "block.0": 2, "block.1": 2, "block.1.0": 2})
        linears = [l for l in log if l.layer_type == "linear"]
        self.assertEqual(
            [l.containing_modules_origin_nested for l in linears],
            [["block:1", "block.0:1"], ["block:1", "block.1:1", "block.1.0:1"],
             ["block:2", "block.0:2"], ["block:2", "block.1:2", "block.1.0:2"]])
        relu = [l for l in log if l.layer_type == "relu"]
        self.assertEqual([l.containing_modules_origin_nested for l in relu],
                         [["block:1", "block.1:1"], ["block:2", "block.1:2"]])
        self.assertEqual(relu[0].module_passes_exited, ["block.1:1", "block:1"])  # as exited
        self.assertTrue(torch.equal(log[-1].tensor_contents, model(x)))
        self.assertTrue(tl.validate_saved_activations(model, x))
        # the global hooks are gone: a later call of the scripted module is not announced
        self.assertEqual(len(torch.nn.modules.module._global_forward_pre_hooks), 0)
        self.assertEqual(len(torch.nn.modules.module._global_forward_hooks), 0)

class Threads(unittest.TestCase):
    def test_two_threads_log_two_models_as_one_thread_does(self):
        import threading

        def make(seed):
            torch.manual_seed(seed)
            return nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 5))

        models = [make(0), make(1)]
        x = torch.rand(2, 3, 8, 8)
        reference = [tl.log_forward_pass(m, x) for m in models]
        results, errors = [[], []], []

        def work(i):
            try:
                for _ in range(10):
                    results[i].append(tl.log_forward_pass(models[i], x))
            except Exception as e:  # reported below
                errors.append(e)

        threads = [threading.Thread(target=work, args=(i,)) for i in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        self.assertEqual(errors, [])
        for i in range(2):
            self.assertEqual(len(results[i]), 10)
            for log in results[i]:
                self.assertEqual(log.layer_labels, reference[i].layer_labels)
                self.assertEqual(log.module_num_passes, reference[i].module_num_passes)
                for a, b in zip(log, reference[i]):
                    self.assertEqual(a.containing_modules_origin_nested,
                                     b.containing_modules_origin_nested)
                    self.assertTrue(torch.equal(a.tensor_contents, b.tensor_contents))


class Boom(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(3, 3)
        self.inner = nn.Sequential(nn.ReLU(), nn.Linear(3, 3))
        self.fail = True

    def forward(self, x):
        x = self.inner(self.fc(x))
        if self.fail:
            raise ValueError("boom inside forward")
        return x


class Robustness(unittest.TestCase):
    def test_an_exception_in_forward_leaves_no_hook_and_the_next_log_works(self):
        torch.manual_seed(0)
        model = Boom()
        user = []
        model.fc.register_forward_hook(lambda m, i, o: user.append(1))
        before = hook_state(model)
        with self.assertRaises(ValueError) as ctx:
            tl.log_forward_pass(model, torch.rand(2, 3))
        self.assertIn("boom inside forward", str(ctx.exception))
        self.assertEqual(hook_state(model), before)
        self.assertEqual(len(user), 1)  # the user's own hook ran, and is still there
        model.fail = False
        log = tl.log_forward_pass(model, torch.rand(2, 3))
        self.assertEqual(log.module_num_passes, {"fc": 1, "inner": 1, "inner.0": 1, "inner.1": 1})
        self.assertEqual(hook_state(model), before)
        self.assertEqual(len(user), 2)

    def test_an_exception_caught_inside_forward_keeps_the_nesting(self):
        class Fragile(nn.Module):
            def forward(self, x):
                raise RuntimeError("no")

        class M(nn.Module):
            def __init__(self):
                super().__init__()
                self.fragile = Fragile()
                self.fc = nn.Linear(3, 3)

            def forward(self, x):
                try:
                    x = self.fragile(x)
                except RuntimeError:
                    pass
                return self.fc(x)

        log = tl.log_forward_pass(M(), torch.rand(2, 3))
        self.assertEqual(log["linear_1_1"].containing_modules_origin_nested, ["fc:1"])

    def test_model_and_inputs_are_left_as_they_were(self):
        torch.manual_seed(0)
        model = nn.Sequential(nn.Linear(3, 3), nn.BatchNorm1d(3), nn.ReLU(inplace=True)).train()
        x = torch.rand(4, 3)
        x0 = x.clone()
        state = {k: v.clone() for k, v in model.state_dict().items()}
        tl.log_forward_pass(model, x, layers_to_save=["1"])  # two passes: state restored between
        self.assertTrue(torch.equal(x, x0))
        after = model.state_dict()
        # one forward's worth of batch-norm statistics, as a plain forward would leave
        plain = nn.Sequential(nn.Linear(3, 3), nn.BatchNorm1d(3), nn.ReLU(inplace=True)).train()
        plain.load_state_dict(state)
        plain(x0)
        for k, v in plain.state_dict().items():
            self.assertTrue(torch.equal(after[k], v), k)

    def test_unknown_label_is_a_key_error_naming_near_matches(self):
        log = tl.log_forward_pass(nn.Sequential(nn.Linear(3, 3), nn.ReLU()), torch.rand(2, 3))
        with self.assertRaises(KeyError) as ctx:
            log["linear_1_2"]
        self.assertIn("linear_1_1", str(ctx.exception))
        with self.assertRaises(KeyError):
            log[10]

    def test_bad_arguments_are_clear_errors(self):
        m = nn.Linear(3, 3)
        with self.assertRaises(ValueError):
            tl.log_forward_pass(m, torch.rand(2, 3), vis_opt="sideways")
        with self.assertRaises(NotImplementedError):
            tl.log_forward_pass(m, torch.rand(2, 3), save_function_args=True)
        with self.assertRaises(TypeError):
            tl.log_forward_pass(lambda x: x, torch.rand(2, 3))
        with self.assertRaises(KeyError):
            tl.log_forward_pass(m, torch.rand(2, 3), layers_to_save=["conv2d_1_1"])


    def test_a_nested_tensor_is_a_clear_error_and_the_next_log_works(self):
        # nn.TransformerEncoder's fast path (eval, no gradients, a padding mask)
        # turns the batch into a nested tensor, which has no shape: LibTorch's
        # own message was "Internal error: NestedTensorImpl doesn't support sizes"
        class Encoder(nn.Module):
            def __init__(self, nested):
                super().__init__()
                layer = nn.TransformerEncoderLayer(8, 2, 16, dropout=0.0, batch_first=True)
                self.enc = nn.TransformerEncoder(layer, 2, enable_nested_tensor=nested)

            def forward(self, x, pad):
                with torch.no_grad():
                    return self.enc(x, src_key_padding_mask=pad)

        torch.manual_seed(0)
        x = torch.randn(2, 5, 8)
        pad = torch.tensor([[False] * 5, [False] * 3 + [True] * 2])
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "nested tensors are in prototype stage"
            with self.assertRaisesRegex(RuntimeError, "returned a nested tensor.*"
                                        "enable_nested_tensor=False"):
                tl.log_forward_pass(Encoder(True).eval(), [x, pad])
        model = Encoder(False).eval()
        log = tl.log_forward_pass(model, [x, pad], layers_to_save="all")
        self.assertTrue(torch.equal(log[log.output_layers[0]].tensor_contents, model(x, pad)))
        self.assertIs(tl.validate_saved_activations(model, [x, pad]), True)

class Inputs(unittest.TestCase):
    def test_a_dataclass_output_is_addressed_by_field(self):
        # TorchLens finds tensors in an output object's attributes; without it a
        # dataclass output had no output layer and validation compared nothing
        @dataclasses.dataclass
        class Out:
            logits: torch.Tensor
            hidden: torch.Tensor
            note: str = "x"

        class M(nn.Module):
            def __init__(self):
                super().__init__()
                self.a = nn.Linear(4, 4)

            def forward(self, x):
                h = torch.relu(self.a(x))
                return Out(h.sum(-1), h)

        model, x = M(), torch.rand(2, 4)
        log = tl.log_forward_pass(model, x)
        outputs = [(log[label].input_output_address, log[label].parent_layers)
                   for label in log.output_layers]
        self.assertEqual(outputs, [("output.logits", ["sum_1_3"]), ("output.hidden", ["relu_1_2"])])
        self.assertTrue(log["relu_1_2"].is_output_ancestor)
        with torch.no_grad():
            self.assertTrue(torch.equal(log["output_1"].tensor_contents, model(x).logits))

    def test_list_dict_and_keyword_inputs(self):
        class M(nn.Module):
            def __init__(self):
                super().__init__()
                self.fc = nn.Linear(3, 3)

            def forward(self, xs, d, *, scale, mask=None, note="text"):
                y = self.fc(xs[0] + xs[1]) * d["w"]
                if mask is not None:
                    y = y * mask
                return {"y": y * scale, "note": note}

        torch.manual_seed(0)
        model = M()
        xs = [torch.rand(2, 3), torch.rand(2, 3)]
        d = {"w": torch.rand(2, 3)}
        mask = torch.rand(1, 3)
        log = tl.log_forward_pass(model, [xs, d], {"scale": 2.0, "mask": mask})
        self.assertEqual(log.input_layers, ["input_1", "input_2", "input_3", "input_4"])
        self.assertEqual([log[k].input_output_address for k in log.input_layers],
                         ["input.0.0", "input.0.1", "input.1.w", "input.mask"])
        self.assertTrue(torch.equal(log["input_4"].tensor_contents, mask))
        out = model(xs, d, scale=2.0, mask=mask)["y"]
        self.assertTrue(torch.equal(log[-1].tensor_contents, out))
        self.assertEqual(log[-1].input_output_address, "output.y")
        self.assertEqual(log["fc"].parent_layers, ["add_1_1"])


class Saving(unittest.TestCase):
    def test_key_list_saves_exactly_those_layers_with_the_same_values(self):
        torch.manual_seed(0)
        model = torchvision.models.resnet18(weights=None).eval()
        x = torch.rand(1, 3, 32, 32)
        full = tl.log_forward_pass(model, x)
        some = tl.log_forward_pass(model, x, layers_to_save=["conv2d_1_1", "layer2.0", 5])
        saved = some.layers_with_saved_activations
        self.assertEqual(saved, ["conv2d_1_1", some.layer_labels[5], some["layer2.0"].layer_label])
        for label in saved:
            self.assertTrue(torch.equal(some[label].tensor_contents, full[label].tensor_contents))
        self.assertIsNone(some["conv2d_2_5"].tensor_contents)

    def test_seeded_randomness_is_recorded_and_reproduced(self):
        model = nn.Sequential(nn.Linear(8, 8), nn.Dropout(0.5)).train()
        x = torch.rand(4, 8)
        a = tl.log_forward_pass(model, x, random_seed=7)
        b = tl.log_forward_pass(model, x, random_seed=7)
        self.assertEqual(a.random_seed_used, 7)
        self.assertTrue(torch.equal(a[-1].tensor_contents, b[-1].tensor_contents))
        c = tl.log_forward_pass(model, x)
        d = tl.log_forward_pass(model, x, random_seed=c.random_seed_used)
        self.assertTrue(torch.equal(c[-1].tensor_contents, d[-1].tensor_contents))
        torch.manual_seed(7)
        self.assertTrue(torch.equal(model(x), a[-1].tensor_contents))

    def test_a_freed_log_leaves_its_memory_to_the_next_one(self):
        torch.manual_seed(0)
        model = torchvision.models.resnet18(weights=None).eval()
        x = torch.rand(1, 3, 64, 64)
        outputs, _ = hook_outputs(model, x)
        tl.release_capture_memory()
        # one intra-op thread: the same allocations in the same order in both captures
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            with torch.no_grad():
                log = tl.log_forward_pass(model, x)
                first = tl.capture_memory_stats()
                self.assertGreater(first["live_bytes"], 0)
                del log
                freed = tl.capture_memory_stats()
                self.assertGreater(freed["cached_bytes"], 0)
                log = tl.log_forward_pass(model, x)
                again = tl.capture_memory_stats()
        finally:
            torch.set_num_threads(threads)
        # the second log's blocks all came from the first's
        self.assertEqual(again["fresh_blocks"], first["fresh_blocks"])
        self.assertGreater(again["reused_blocks"], freed["reused_blocks"])
        for address in ("conv1", "layer1.0.conv2", "layer4.1", "fc"):
            self.assertTrue(torch.equal(log[address].tensor_contents, outputs[address][0]))
        # a plain forward allocates outside the pool
        with torch.no_grad():
            model(x)
        self.assertEqual(tl.capture_memory_stats()["fresh_blocks"], again["fresh_blocks"])
        del log
        self.assertGreater(tl.release_capture_memory(), 0)
        self.assertEqual(tl.capture_memory_stats()["cached_bytes"], 0)

    def test_postfunc_and_detach(self):
        m = nn.Linear(3, 3)
        log = tl.log_forward_pass(m, torch.rand(2, 3), activation_postfunc=lambda t: t.sum(),
                                  detach_saved_tensors=True)
        self.assertEqual(log["linear_1_1"].tensor_contents.shape, ())
        self.assertFalse(log["linear_1_1"].tensor_contents.requires_grad)


class Views(unittest.TestCase):
    def test_validate_saved_activations(self):
        torch.manual_seed(0)
        model = torchvision.models.resnet18(weights=None).eval()
        x = torch.rand(1, 3, 32, 32)
        self.assertIs(tl.validate_saved_activations(model, x), True)
        report = tl.validate_saved_activations(model, x, return_report=True)
        self.assertTrue(report)
        self.assertGreater(report["layers_checked"], 60)
        self.assertEqual(report["failures"], [])

    def test_models_that_change_their_own_parameters_validate(self):
        # MoCo's key encoder gets new data inside forward (`p.data = ...`), a
        # weight is halved through `.data` between two reads, and nn.Embedding
        # with max_norm renormalises its rows in place: each op re-executes on
        # the parameter as it read it, and the model is left as it was found.
        class Momentum(nn.Module):
            def __init__(self):
                super().__init__()
                self.q, self.k = nn.Linear(4, 3), nn.Linear(4, 3)

            def forward(self, x):
                with torch.no_grad():
                    for pq, pk in zip(self.q.parameters(), self.k.parameters()):
                        pk.data = pk.data * 0.9 + pq.data * 0.1
                return (self.q(x) * self.k(x)).sum(-1)

        class Halve(nn.Module):
            def __init__(self):
                super().__init__()
                self.emb = nn.Embedding(10, 4, max_norm=1.0)
                self.fc = nn.Linear(4, 4)

            def forward(self, idx):
                e = self.emb(idx)
                a = self.fc(e)
                self.fc.weight.data.mul_(0.5)
                return a + self.fc(e)

        torch.manual_seed(0)
        for model, x in ((Momentum(), torch.randn(2, 4)),
                         (Halve(), torch.tensor([[1, 2, 3], [3, 4, 1]]))):
            before = {k: v.clone() for k, v in model.state_dict().items()}
            report = tl.validate_saved_activations(model, x, return_report=True)
            self.assertTrue(report, str(report))
            for k, v in model.state_dict().items():
                self.assertTrue(torch.equal(v, before[k]), k)
        # the log's values are the forward's: rows looked up have norm <= 1,
        # and the second read of fc.weight sees it halved
        model = Halve()
        w0, e0 = model.fc.weight.detach().clone(), model.emb.weight.detach().clone()
        x = torch.tensor([[1, 2, 3], [3, 4, 1]])
        log = tl.log_forward_pass(model, x, layers_to_save="all")
        norms = e0.norm(dim=-1, keepdim=True)
        e = nn.functional.embedding(x, torch.where(norms > 1.0, e0 / (norms + 1e-7), e0))
        lin = nn.functional.linear
        expected = lin(e, w0, model.fc.bias) + lin(e, w0 * 0.5, model.fc.bias)
        self.assertTrue(torch.allclose(log["output_1"].tensor_contents, expected, atol=1e-6))

    def test_show_model_graph_writes_dot_and_renders(self):
        model = nn.Sequential(nn.Linear(3, 3), nn.ReLU(), nn.Linear(3, 1))
        with tempfile.TemporaryDirectory() as d:
            path = os.path.join(d, "graph.gv")
            drawing = tl.show_model_graph(model, torch.rand(2, 3), vis_outpath=path,
                                          vis_fileformat="svg")
            with open(path) as f:
                dot = f.read()
            self.assertTrue(dot.startswith("digraph"))
            for label in ("linear_1_1", "relu_1_2", "linear_2_3"):
                self.assertIn(label, dot)
            if tl.render_available():
                self.assertEqual(drawing, path + ".svg")
                with open(drawing) as f:
                    self.assertIn("<svg", f.read())
            rolled = os.path.join(d, "rolled.gv")
            tl.log_forward_pass(model, torch.rand(2, 3), vis_opt="rolled", vis_outpath=rolled,
                                vis_nesting_depth=1, vis_fileformat="svg")
            with open(rolled) as f:
                self.assertTrue(f.read().startswith("digraph"))


if __name__ == "__main__":
    unittest.main(verbosity=1)
