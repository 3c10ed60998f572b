"""The inverse of a conditional affine autoregressive transform in one pass of its network.

Pyro's ``AffineAutoregressive`` maps x to y_i = mu_i(x_<i) + exp(s_i(x_<i)) x_i with a MADE
network (``ConditionalAutoRegressiveNN``: masked dense layers, ReLU between them, the context
connected to every first-layer unit). Its inverse recovers x one latent dimension at a time,
x_i = (y_i - mu_i) exp(-s_i), and Pyro runs the whole network once per dimension: D passes.

The masks make most of that work repeat itself. A hidden unit depends only on the inputs that
come earlier in the autoregressive order than some position; once those inputs are known, its
value is final. Here every unit is computed exactly once, at the first step where all its inputs
are known, and its contribution is added to the units of the next layer that are still pending
(units sorted by that step, so the pending ones are always a suffix and every slice is a view).
The whole inversion then costs about one pass of the network, plus D small steps, for any
number of rows: the VampPrior inverts all (z, pseudo-input) pairs together this way.

:func:`inverse_plan` reads the schedule off a network's masks once, on the host;
:func:`invert_conditioned` runs it for a batch of rows.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from pyro.distributions.transforms.utils import clamp_preserve_gradients


@dataclass(frozen=True)
class InversePlan:
    """When each unit of a MADE network becomes computable during the inversion.

    ``order`` is the autoregressive order (the network's ``permutation``: step t recovers
    x[order[t]]); ``unit_orders[l]`` sorts hidden layer l's units by the step at which they become
    final, ``new_units[l][t]`` of them at step t; ``output_order`` lists the output rows as
    (mu, s) of order[0], (mu, s) of order[1], ...
    """

    order: tuple[int, ...]
    unit_orders: tuple[torch.Tensor, ...]
    new_units: tuple[tuple[int, ...], ...]
    output_order: torch.Tensor


def _ready_steps(mask: torch.Tensor, ready_in: torch.Tensor) -> torch.Tensor:
    """The step at which each unit of a layer becomes final: the latest step among the inputs its
    mask connects (0 for a unit connected to none of them)."""
    return torch.where(mask.bool(), ready_in.unsqueeze(0), 0).amax(dim=-1)  # (out,)


def inverse_plan(arn: torch.nn.Module) -> InversePlan:
    """The schedule of :func:`invert_conditioned` for a ``ConditionalAutoRegressiveNN``, read from
    host copies of its masks and permutation (on a GPU, one read each, once). Raises
    ``ValueError`` for a network this inversion does not cover (skip connections, outputs other
    than one mean and one log-scale per dimension, an output that depends on its own or a later
    input)."""
    if getattr(arn, "skip_layer", None) is not None or list(arn.param_dims) != [1, 1]:
        raise ValueError("the one-pass inverse covers MADE networks without skip connections and two outputs (mu, s)")
    latent, context = arn.input_dim, arn.context_dim
    order = [int(i) for i in arn.permutation.cpu()]
    position = torch.empty(latent, dtype=torch.long)
    position[torch.tensor(order)] = torch.arange(latent)
    # x[i] is known after step position[i] + 1; the context from the start
    ready = torch.cat([torch.zeros(context, dtype=torch.long), position + 1])
    unit_orders, new_units = [], []
    for layer in arn.layers[:-1]:
        ready = _ready_steps(layer.mask.cpu(), ready)  # units in the network's own order
        unit_orders.append(torch.argsort(ready, stable=True))
        new_units.append(tuple(int((ready == t).sum()) for t in range(latent)))
    output_ready = _ready_steps(arn.layers[-1].mask.cpu(), ready)  # (2 D,)
    for i in range(latent):  # mu_i and s_i may use only what precedes x_i
        if max(int(output_ready[i]), int(output_ready[latent + i])) > int(position[i]):
            raise ValueError("the network's outputs are not autoregressive in its permutation")
    output_order = torch.tensor([row for i in order for row in (i, latent + i)])
    return InversePlan(tuple(order), tuple(unit_orders), tuple(new_units), output_order)


def _sorted_layers(arn: torch.nn.Module, plan: InversePlan) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """The masked weights and biases of every layer, rows and columns in the plan's unit order."""
    layers, previous = [], None
    rows_of = list(plan.unit_orders) + [plan.output_order]
    for layer, rows in zip(arn.layers, rows_of):
        weight = (layer.weight * layer.mask)[rows]
        if previous is not None:
            weight = weight[:, previous]
        layers.append((weight, layer.bias[rows]))
        previous = rows
    return layers


def invert_conditioned(
    arn: torch.nn.Module,
    plan: InversePlan,
    context: torch.Tensor,
    y: torch.Tensor,
    log_scale_min_clip: float,
    log_scale_max_clip: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """x with y = mu(x) + exp(s(x)) x under ``arn`` given ``context``, and sum_i s_i(x), for rows
    of pairs: ``y`` (n, 1 or c, D) against the context (c, F) -> x (n, c, D) and (n, c).

    The same values as Pyro's ``AffineAutoregressive`` inverse (non-stable form) and its
    ``log_abs_det_jacobian``, including the clipping of s with gradients passed through.
    """
    latent = y.shape[-1]
    n, c = y.shape[0], context.shape[0]
    pairs = n * c  # rows (z_j, pseudo-input k) in the order j c + k
    (first_weight, first_bias), *rest = _sorted_layers(arn, plan)
    width = context.shape[-1]
    # units along dim 0 and pairs along dim 1: the units finished at a step are then a contiguous
    # block of rows, split off the pending ones without a copy
    y_rows = y.expand(n, c, latent).reshape(pairs, latent).T.contiguous()  # (D, N)
    # the pending pre-activations; the context's share of the first layer once per pseudo-input
    first_context = F.linear(context, first_weight[:, :width], first_bias).T  # (H_1, c)
    pending = [first_context.unsqueeze(1).expand(-1, n, c).reshape(-1, pairs)]  # (H_1, N)
    pending += [bias.unsqueeze(-1).expand(-1, pairs) for _, bias in rest]  # later layers, output: biases
    done = [0] * len(rest)  # units (outputs) of each later layer already final
    first_done = 0  # units of the first layer already final
    input_weight = first_weight[:, width:]  # (H_1, D), rows sorted
    xs, log_scales = [None] * latent, []
    for t, i in enumerate(plan.order):
        for layer, (weight, _) in enumerate(rest):  # finish the units ready at step t
            new = plan.new_units[layer][t]
            if new:
                ready, pending[layer] = pending[layer].split([new, pending[layer].shape[0] - new])
                start = done[layer - 1] if layer else first_done
                rows = weight[done[layer] :, start : start + new]  # the next layer's pending units
                pending[layer + 1] = torch.addmm(pending[layer + 1], rows, torch.relu(ready))
        first_done += plan.new_units[0][t]
        for layer in range(len(rest) - 1):
            done[layer] += plan.new_units[layer + 1][t]
        done[-1] += 2
        mean, raw_log_scale, pending[-1] = pending[-1].split([1, 1, pending[-1].shape[0] - 2])
        log_scale = clamp_preserve_gradients(raw_log_scale[0], log_scale_min_clip, log_scale_max_clip)
        xs[i] = (y_rows[i] - mean[0]) * torch.exp(-log_scale)  # (N,)
        log_scales.append(log_scale)
        if t + 1 < latent:  # x_i joins the first layer's pending units
            pending[0] = torch.addr(pending[0], input_weight[first_done:, i], xs[i])
    x = torch.stack(xs, dim=-1).reshape(n, c, latent)
    return x, torch.stack(log_scales, dim=-1).sum(-1).reshape(n, c)
