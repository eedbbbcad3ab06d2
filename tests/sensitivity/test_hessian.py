"""Hutchinson traces against exact Hessians, and the Hessian sensitivity table's shape."""

from __future__ import annotations

import math
import statistics

import pytest
import torch

from trtq.sensitivity.hessian import LayerTrace, differentiable_wrt, hutchinson_traces, own_inputs


class TinyMLP(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc1 = torch.nn.Linear(6, 12)
        self.fc2 = torch.nn.Linear(12, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(torch.tanh(self.fc1(x)))


def _tiny_problem(seed: int = 0):
    torch.manual_seed(seed)
    model = TinyMLP().double()
    batches = [(torch.randn(16, 6, dtype=torch.float64), torch.randint(0, 5, (16,))) for _ in range(3)]

    def loss_fn(batch):
        x, y = batch
        return torch.nn.functional.cross_entropy(model(x), y)

    return model, batches, loss_fn


def _exact_block_traces(model, batches, loss_fn) -> dict[str, float]:
    """tr(H_ll) of the Hessian averaged over the batches, from the full Hessian (a few hundred weights)."""
    names = ["fc1.weight", "fc2.weight"]
    params = dict(model.named_parameters())
    traces = {}
    for name in names:
        original = params[name].detach().clone()

        def loss_of(w, name=name):
            total = 0.0
            for x, y in batches:
                out = torch.func.functional_call(model, {**dict(model.named_parameters()), name: w}, (x,))
                total = total + torch.nn.functional.cross_entropy(out, y)
            return total / len(batches)

        hessian = torch.autograd.functional.hessian(loss_of, original)
        traces[name] = float(hessian.reshape(original.numel(), original.numel()).diagonal().sum())
    return traces


@pytest.mark.parametrize("layers", [["fc1.weight", "fc2.weight"], ["fc2.weight"]])
def test_hutchinson_matches_exact_trace_on_tiny_mlp(layers):
    model, batches, loss_fn = _tiny_problem()
    exact = _exact_block_traces(model, batches, loss_fn)
    assert exact["fc1.weight"] > 0 and exact["fc2.weight"] > 0
    with differentiable_wrt(model, layers) as params:
        run = hutchinson_traces(loss_fn, params, batches, tolerance=1e-9, max_iterations=3000, seed=0)
    assert run.iterations == 3000  # the tolerance is unreachable: every probe ran
    assert set(run.traces) == set(layers)
    for name, stats in run.traces.items():
        assert stats.iterations == 3000
        assert stats.numel == dict(model.named_parameters())[name].numel()
        # Unbiased: within 4 standard errors of the exact trace of the batch-averaged Hessian,
        # and 3000 probes make that standard error small enough for the check to mean something.
        standard_error = statistics.stdev(stats.samples) / math.sqrt(stats.iterations)
        assert standard_error < 0.06 * exact[name], name
        assert abs(stats.trace - exact[name]) < 4 * standard_error, name
        assert stats.mean_trace == pytest.approx(stats.trace / stats.numel)


def test_hutchinson_is_exact_for_a_diagonal_hessian():
    # loss = sum(c * w^2) has H = diag(2c): v^T H v = sum(2c v^2) = tr(H) for every Rademacher v.
    weight = torch.randn(7, 5, dtype=torch.float64, requires_grad=True)
    coefficients = torch.rand(7, 5, dtype=torch.float64) + 0.5
    run = hutchinson_traces(lambda _: (coefficients * weight**2).sum(), {"w": weight}, [None],
                            tolerance=1e-6, max_iterations=10)
    stats = run.traces["w"]
    assert stats.trace == pytest.approx(float(2 * coefficients.sum()), rel=1e-12)
    # Two identical estimates: zero relative change, converged at the minimum of two probes.
    assert stats.converged and stats.iterations == 2 and stats.relative_change == 0.0


def test_layers_stop_independently_and_record_their_iterations():
    model, batches, loss_fn = _tiny_problem(1)
    with differentiable_wrt(model, ["fc1.weight", "fc2.weight"]) as params:
        run = hutchinson_traces(loss_fn, params, batches, tolerance=0.2, max_iterations=40, seed=3)
    for stats in run.traces.values():
        assert 3 <= stats.iterations <= 40  # min_iterations defaults to the number of batches
        assert stats.converged == (stats.relative_change < 0.2)
    assert any(stats.converged for stats in run.traces.values())
    assert run.iterations == max(s.iterations for s in run.traces.values())


def test_same_seed_same_estimates_and_flags_restored():
    model, batches, loss_fn = _tiny_problem(2)
    flags = {n: p.requires_grad for n, p in model.named_parameters()}
    results = []
    for _ in range(2):
        with differentiable_wrt(model, ["fc2.weight"]) as params:
            results.append(hutchinson_traces(loss_fn, params, batches, max_iterations=5, seed=7))
        assert {n: p.requires_grad for n, p in model.named_parameters()} == flags
    assert results[0].traces["fc2.weight"].samples == results[1].traces["fc2.weight"].samples


def test_layer_trace_relative_change_and_channels():
    stats = LayerTrace(numel=4)
    ones = torch.ones(2, 2)
    stats.add_probe(ones, torch.tensor([[1.0, 2.0], [3.0, 4.0]]))   # sample 10, channels (4, 6)
    assert math.isinf(stats.relative_change)
    stats.add_probe(-ones, -torch.tensor([[2.0, 2.0], [4.0, 4.0]]))  # sample 12: running mean 10 -> 11
    assert stats.samples == [10.0, 12.0]
    assert stats.relative_change == pytest.approx(1 / 11)
    assert stats.mean_trace == pytest.approx(11 / 4)
    # Channel j's mean: (sum of its diagonal samples / probes) / rows = (4 + 6) / 2 / 2 and (6 + 6) / 2 / 2.
    assert stats.channel_mean_traces.tolist() == pytest.approx([2.5, 3.0])


def _exact_input_hessian_diagonals(model, batches, layer: str) -> torch.Tensor:
    """diag of the Hessian of the loss w.r.t. `layer`'s input, per batch, from the full Hessian."""
    module = dict(model.named_modules())[layer]
    diagonals = []
    for x, y in batches:
        captured = {}
        handle = module.register_forward_pre_hook(lambda m, args: captured.update(h=args[0].detach()))
        model(x)
        handle.remove()

        def loss_of(h, x=x, y=y):
            replaced = module.register_forward_pre_hook(lambda m, args: (h,))
            try:
                return torch.nn.functional.cross_entropy(model(x), y)
            finally:
                replaced.remove()

        h = captured["h"]
        hessian = torch.autograd.functional.hessian(loss_of, h)
        diagonals.append(hessian.reshape(h.numel(), h.numel()).diagonal().reshape(h.shape))
    return torch.stack(diagonals)


def test_input_traces_match_exact_hessians_in_total_and_per_channel():
    model, batches, loss_fn = _tiny_problem(4)
    with differentiable_wrt(model, ["fc1.weight"]) as params, own_inputs(model, ["fc1", "fc2"]) as captured:
        def loss_and_inputs(batch):
            captured.clear()
            return loss_fn(batch), {f"{name}:input": x for name, x in captured.items()}

        run = hutchinson_traces(loss_and_inputs, params, batches, tolerance=1e-9, max_iterations=3000, seed=1)
    assert set(run.traces) == {"fc1.weight", "fc1:input", "fc2:input"}
    for layer in ("fc1", "fc2"):
        stats = run.traces[f"{layer}:input"]
        diagonals = _exact_input_hessian_diagonals(model, batches, layer)  # [batch, tokens, channels]
        assert stats.numel == diagonals[0].numel() and stats.iterations == 3000
        exact_trace = float(diagonals.sum(dim=(1, 2)).mean())
        standard_error = statistics.stdev(stats.samples) / math.sqrt(stats.iterations)
        assert standard_error < 0.1 * abs(exact_trace), layer  # precise enough for the check to mean something
        assert abs(stats.trace - exact_trace) < 4 * standard_error, layer
        # The channels partition the trace.
        channels = stats.channel_mean_traces
        assert channels.shape == (diagonals.shape[-1],)
        assert float(channels.sum()) * (stats.numel // channels.numel()) == pytest.approx(stats.trace)


def test_channel_traces_are_exact_for_a_diagonal_hessian():
    # loss = sum(c * x^2) over a [batch, tokens, channels] input: H = diag(2c), so every probe gives
    # v * Hv = 2c exactly, and channel j's mean trace is 2c[..., j] averaged over batch and tokens.
    x = torch.randn(2, 5, 3, dtype=torch.float64, requires_grad=True)
    coefficients = torch.rand(2, 5, 3, dtype=torch.float64) * torch.tensor([1.0, 10.0, 100.0], dtype=torch.float64)
    run = hutchinson_traces(lambda _: (coefficients * x**2).sum(), {"x": x}, [None], tolerance=1e-6,
                            max_iterations=4, min_iterations=4)
    stats = run.traces["x"]
    assert stats.iterations == 4
    assert stats.channel_mean_traces.tolist() == pytest.approx((2 * coefficients).mean(dim=(0, 1)).tolist(), rel=1e-12)


def test_each_layer_gets_its_own_input_node():
    # Two layers read one tensor; each one's input Hessian is that of perturbing its input alone.
    torch.manual_seed(5)
    left, right = torch.nn.Linear(4, 3).double(), torch.nn.Linear(4, 3).double()
    model = torch.nn.ModuleDict({"left": left, "right": right})
    x = torch.randn(8, 4, dtype=torch.float64)

    def loss_fn(_):
        return (torch.tanh(left(x)) * torch.sigmoid(right(x))).sum()

    with own_inputs(model, ["left", "right"]) as captured:
        def loss_and_inputs(batch):
            captured.clear()
            return loss_fn(batch), dict(captured)

        run = hutchinson_traces(loss_and_inputs, {}, [None], tolerance=1e-9, max_iterations=4000, seed=2)

    def perturbed(module, h):
        with own_inputs(model, []):
            handle = module.register_forward_pre_hook(lambda m, args: (h,))
            try:
                return loss_fn(None)
            finally:
                handle.remove()

    for name, module in (("left", left), ("right", right)):
        exact = torch.autograd.functional.hessian(lambda h, module=module: perturbed(module, h), x)
        exact_trace = float(exact.reshape(x.numel(), x.numel()).diagonal().sum())
        stats = run.traces[name]
        standard_error = statistics.stdev(stats.samples) / math.sqrt(stats.iterations)
        assert abs(stats.trace - exact_trace) < 4 * standard_error, name
    # The two differ, so neither estimate is of the shared tensor's Hessian.
    assert abs(run.traces["left"].trace - run.traces["right"].trace) > 8 * standard_error
