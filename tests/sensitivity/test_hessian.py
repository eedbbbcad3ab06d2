"""Hutchinson traces against exact Hessians, and the Hessian sensitivity table's shape."""

from __future__ import annotations

import math
import statistics

import pytest
import torch

from trtq.sensitivity.hessian import LayerTrace, differentiable_wrt, hutchinson_traces


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


def test_layer_trace_relative_change():
    stats = LayerTrace(numel=4)
    stats.add(10.0)
    assert math.isinf(stats.relative_change)
    stats.add(12.0)  # running mean 10 -> 11
    assert stats.relative_change == pytest.approx(1 / 11)
    assert stats.mean_trace == pytest.approx(11 / 4)
