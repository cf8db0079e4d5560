"""Arithmetic on a model's weights: between two solutions, the mean of several, and batch-norm
statistics for weights that no run trained as they are.

The cycle-end tools (``clr_dist.cycle_ends``) and the trainer's running average of cycle ends
use these. Averaging is ``torch.optim.swa_utils.AveragedModel``'s and batch norm is recomputed
with ``update_bn``; what this module adds is the distributed part (each rank sees its share of
the images, so the statistics are pooled over ranks) and checks that say which weights do not fit.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import torch
from torch.optim.swa_utils import AveragedModel, update_bn

from clr_dist import dist
from clr_dist.errors import ConfigError

State = dict[str, torch.Tensor]


def check_same_shapes(states: dict[str, State]) -> None:
    """One line naming the first difference when the named states are not of one model."""
    (first, reference), *others = states.items()
    for name, state in others:
        missing, extra = sorted(reference.keys() - state.keys()), sorted(state.keys() - reference.keys())
        if missing or extra:
            what = [f"{len(missing)} tensors of {first} missing (e.g. {missing[0]})"] if missing else []
            what += [f"{len(extra)} not in {first} (e.g. {extra[0]})"] if extra else []
            what = "; ".join(what)
            raise ConfigError(f"{name} and {first} hold different models ({what}); give weights of one model")
        for key, tensor in reference.items():
            if state[key].shape != tensor.shape:
                raise ConfigError(
                    f"{name} and {first} hold different models: {key} is {list(state[key].shape)} in one and "
                    f"{list(tensor.shape)} in the other (another class count or image size?); give weights of one model"
                )


def interpolate(a: State, b: State, alpha: float) -> State:
    """``alpha * a + (1 - alpha) * b`` for every floating tensor (computed in float64, so that
    alpha 1 gives ``a`` and alpha 0 gives ``b`` exactly); integer buffers (batch norm's
    ``num_batches_tracked``) from the nearer end."""
    mixed = {}
    for key, ta in a.items():
        tb = b[key]
        if ta.is_floating_point():
            mixed[key] = (alpha * ta.double() + (1 - alpha) * tb.double()).to(ta.dtype)
        else:
            mixed[key] = ta.clone() if alpha >= 0.5 else tb.clone()
    return mixed


def has_batch_norm(model: torch.nn.Module) -> bool:
    return any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in model.modules())


def recompute_batch_norm(model: torch.nn.Module, batches: Iterable[torch.Tensor], device: torch.device) -> int:
    """Batch-norm statistics of ``model`` for its current weights, pooled over every rank's
    ``batches`` (images only). ``update_bn`` gives each rank the cumulative mean of its own
    batches' statistics; the ranks' results are then averaged, weighted by their batch counts,
    so that every rank holds the statistics one process would compute over the same batches.
    Returns the number of batches over all ranks. Every rank must call."""
    counted = _Counted(batches, device)
    update_bn(counted, model, device=device)
    layers = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    buffers = [getattr(layer, name) for layer in layers for name in ("running_mean", "running_var")]
    if not buffers:
        return 0
    # One reduction for all of them: every buffer weighted by this rank's batches, and the count.
    flat = torch.cat([b.double().flatten() * counted.count for b in buffers] + [buffers[0].new_full((1,), 0).double()])
    flat[-1] = counted.count
    dist.all_reduce_sum(flat)
    count = int(flat[-1].item())
    offset = 0
    for buffer in buffers:
        pooled = flat[offset : offset + buffer.numel()] / max(count, 1)
        buffer.copy_(pooled.view_as(buffer).to(buffer.dtype))
        offset += buffer.numel()
    for layer in layers:
        layer.num_batches_tracked.fill_(count)
    return count


class _Counted:
    """The images of ``batches`` on ``device``, counting how many batches were read."""

    def __init__(self, batches: Iterable, device: torch.device) -> None:
        self.batches, self.device, self.count = batches, device, 0

    def __iter__(self) -> Iterator[torch.Tensor]:
        for batch in self.batches:
            self.count += 1
            images = batch[0] if isinstance(batch, (tuple, list)) else batch
            yield images.to(self.device, torch.float32, non_blocking=True)  # as the weights (DALI may give bf16)


def average(model: torch.nn.Module, states: list[State]) -> AveragedModel:
    """The running mean of ``states`` (each loaded into ``model`` in turn) as an
    ``AveragedModel``. Its floating buffers (batch norm's statistics) are the states' mean too,
    a stand-in until ``recompute_batch_norm`` gives the statistics of the averaged weights."""
    if not states:
        raise ValueError("average() needs at least one state")
    averaged = None
    for state in states:
        model.load_state_dict(state)
        if averaged is None:
            averaged = AveragedModel(model)
        averaged.update_parameters(model)
    for name, buffer in averaged.module.named_buffers():
        if buffer.is_floating_point():
            buffer.copy_(torch.stack([s[name].double() for s in states]).mean(0).to(buffer.dtype))
    return averaged


class Ensemble(torch.nn.Module):
    """A snapshot ensemble (Huang et al. 2017): the mean of its models' softmax. ``forward``
    returns its log, so that cross-entropy on it is the ensemble's NLL and its top-k are the
    ensemble's predictions."""

    def __init__(self, models: list[torch.nn.Module]) -> None:
        super().__init__()
        self.members = torch.nn.ModuleList(models)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        probs = torch.stack([m(images).float().softmax(dim=1) for m in self.members]).mean(dim=0)
        return probs.clamp(min=torch.finfo(probs.dtype).tiny).log()
