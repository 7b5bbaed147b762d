"""Packed training: B cells that share every shape trained as one fused model (after HFTA, MLSys 2021).

A grid's cells often differ only in seed, dropout rate, learning rate or weight decay. Their B
`convnet`s are fused operator by operator: member b's channels are the b-th block of a grouped
convolution's channels (groups = B), BatchNorm normalises B x C channels (each channel alone, as
before), linear layers are batched matrix products, and the optimiser is elementwise, so one step
is B independent steps, each with its member's learning rate and weight decay. One kernel launch
then does B runs' work, which is what a GPU wants from networks this small.

Each member behaves as its own run: it starts from the weights its plain run would start from
(built with its seed, then copied in), draws its batches from its own seeded order, keeps its own
BatchNorm statistics, history, early stopping and best weights, and is tested through the same
code as a plain run. A member that stops (patience, or a non-finite loss) is frozen: its learning
rate becomes 0 and its weights were already saved. Dropout masks are drawn for the pack, so a
member with dropout matches its plain run in distribution, not bit for bit.
"""
from __future__ import annotations

import hashlib
import json
import math
from dataclasses import asdict
from typing import Any, Callable, Sequence

import torch
from torch import nn

from .config import RunConfig
from .data import DATASETS, Splits
from .errors import AblatrixError
from .evaluation import EVAL_BATCH, Execution
from .loop import Member, Members, copy_state
from .models import _per_block, create_model

# What members of one pack may differ in: none of it changes a shape or the batch schedule.
MEMBER_MODEL_PARAMS = ("dropout", "fc_dropout", "head_dropout", "init")
MEMBER_TRAIN_FIELDS = ("lr", "weight_decay", "momentum", "patience", "restore_best")
PACKED_OPTIMIZERS = ("adam", "adamw", "sgd")  # those PackedOptimizer computes
AUTO_PACK_CAP = 32  # `--pack auto` on a GPU: at most this many members per pack
POOLS = (nn.MaxPool2d, nn.AvgPool2d, nn.AdaptiveMaxPool2d, nn.AdaptiveAvgPool2d)


def pack_key(config: RunConfig) -> str | None:
    """Cells with equal keys can train in one pack; None for a cell that never packs.

    Only the built-in `convnet` is fused (a registered custom module is trained unpacked), only
    with eval-mode evaluation (the other modes are a reproduction aid and a diagnosis, for single runs),
    and only with the optimisers PackedOptimizer computes, without extra arguments or a schedule.
    """
    if (config.model.name != "convnet" or config.train.eval_mode != "eval"
            or config.train.optimizer not in PACKED_OPTIMIZERS or config.train.optimizer_args
            or config.train.schedule != "none" or config.train.warmup_epochs):
        return None
    model = {k: v for k, v in config.model.params.items() if k not in MEMBER_MODEL_PARAMS}
    train = {k: v for k, v in asdict(config.train).items() if k not in MEMBER_TRAIN_FIELDS}
    return json.dumps([config.dataset, model, train], sort_keys=True, default=list)


def pack_id(configs: Sequence[RunConfig]) -> str:
    """A pack's identity: its members' trainings in order (its checkpoint is only for the same pack)."""
    return "pack-" + hashlib.sha256(" ".join(c.training_id for c in configs).encode()).hexdigest()[:12]


def pack_size(config: RunConfig, device: torch.device) -> int:
    """`--pack auto`: 1 on CPU, where a fused step costs about what its members' plain steps do
    (benchmarks/packed.py: 7.3x one plain step for 8 members), so packs gain only per-run overhead;
    on CUDA as many members as fit in half the free memory, at most AUTO_PACK_CAP, from one
    member's parameters and its activations per sample."""
    if device.type != "cuda":
        return 1
    if not torch.cuda.is_available():  # a Ray driver without a GPU, sending packs to GPU workers
        raise AblatrixError("--pack auto measures free GPU memory where the run starts, and this machine "
                            "has no GPU: give --pack a number")
    info = DATASETS[config.dataset]
    model = create_model(config.model.name, info.input_shape, len(info.classes), **config.model.params)
    outputs: list[int] = []
    hooks = [m.register_forward_hook(lambda m, i, out: outputs.append(out.numel()))
             for m in model.modules() if not list(m.children())]
    with torch.no_grad():
        model.eval()(torch.zeros(1, *info.input_shape))
    for hook in hooks:
        hook.remove()
    weights = sum(p.numel() for p in model.parameters())
    # fp32 weights, gradients and two Adam moments; per sample, each activation kept for the
    # backward pass, its gradient, and an autocast copy.
    per_member = 4 * (4 * weights + 3 * sum(outputs) * config.train.batch_size)
    free, _ = torch.cuda.mem_get_info(device)
    return max(1, min(AUTO_PACK_CAP, int(0.5 * free // per_member)))


class PackedDropout(nn.Module):
    """Dropout with one rate per member; `member_dim` is where the members sit in the input."""

    def __init__(self, rates: Sequence[float], spatial: bool) -> None:
        super().__init__()
        self.register_buffer("rates", torch.tensor(rates, dtype=torch.float32), persistent=False)
        self.spatial = spatial  # Dropout2d: one draw per (sample, channel), not per element

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training:
            return x
        members = len(self.rates)
        if x.dim() == 4:  # conv features: (N, B*C, H, W), member b owns the b-th block of channels
            rates = self.rates.repeat_interleave(x.shape[1] // members).view(1, -1, 1, 1)
            shape = (x.shape[0], x.shape[1], 1, 1) if self.spatial else x.shape
        else:  # flat features: (B, N, F)
            rates, shape = self.rates.view(-1, 1, 1), x.shape
        keep = (torch.rand(shape, device=x.device) >= rates).to(x.dtype)
        return x * keep / (1 - rates).to(x.dtype)


class PackedLinear(nn.Module):
    """B linear layers as one batched matrix product: (B, N, in) -> (B, N, out)."""

    def __init__(self, layers: Sequence[nn.Linear]) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.stack([layer.weight.detach().t() for layer in layers]).contiguous())
        self.bias = nn.Parameter(torch.stack([layer.bias.detach() for layer in layers]).unsqueeze(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.baddbmm(self.bias, x, self.weight)

    def member(self, b: int) -> dict[str, torch.Tensor]:
        return {"weight": self.weight[b].t(), "bias": self.bias[b, 0]}


class PackedBatchNorm1d(nn.BatchNorm1d):
    """B BatchNorm1d layers as one over B x F features; input and output (B, N, F)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        members, n, features = x.shape
        out = super().forward(x.transpose(0, 1).reshape(n, members * features))
        return out.view(n, members, features).transpose(0, 1)


def _fused_conv(layers: Sequence[nn.Conv2d]) -> nn.Conv2d:
    first = layers[0]
    conv = nn.Conv2d(first.in_channels * len(layers), first.out_channels * len(layers), first.kernel_size,
                     first.stride, first.padding, groups=len(layers))
    conv.weight.data.copy_(torch.cat([layer.weight.detach() for layer in layers]))
    conv.bias.data.copy_(torch.cat([layer.bias.detach() for layer in layers]))
    return conv


def _fused_norm(layers: Sequence[nn.modules.batchnorm._BatchNorm], kind: type) -> nn.Module:
    first = layers[0]
    norm = kind(first.num_features * len(layers), first.eps, first.momentum)
    for name in ("weight", "bias", "running_mean", "running_var"):
        getattr(norm, name).data.copy_(torch.cat([getattr(layer, name).detach() for layer in layers]))
    norm.num_batches_tracked.copy_(first.num_batches_tracked)
    return norm


def _without_dropout(modules: nn.Module) -> list[nn.Module]:
    return [m for m in modules if not isinstance(m, (nn.Dropout, nn.Dropout2d))]


class PackedConvNet(nn.Module):
    """B `convnet`s of one shape as one module: input (N, B*C, H, W), logits (B, N, classes)."""

    def __init__(self, members: Sequence[nn.Module], params: Sequence[dict[str, Any]]) -> None:
        super().__init__()
        self.size = len(members)
        spatial = params[0]["dropout_kind"] == "dropout2d"
        n_conv, n_fc = len(params[0]["conv"]), len(params[0]["fc"])
        conv_rates = list(zip(*(_per_block("dropout", p["dropout"], n_conv) for p in params)))
        fc_rates = list(zip(*(_per_block("fc_dropout", p["fc_dropout"], n_fc, "FC layers") for p in params)))

        def dropout(rates: Sequence[float], spatial: bool = False) -> list[nn.Module]:
            return [PackedDropout(rates, spatial)] if any(rates) else []

        # Walk the members' layers side by side (their dropout layers differ with their rates, so
        # those are left out of the walk and placed from the rates: after each activation).
        features: list[nn.Module] = []
        block = 0
        for layers in zip(*(_without_dropout(m.features) for m in members)):
            if isinstance(layers[0], nn.Conv2d):
                features.append(_fused_conv(layers))
            elif isinstance(layers[0], nn.BatchNorm2d):
                features.append(_fused_norm(layers, nn.BatchNorm2d))
            elif isinstance(layers[0], POOLS):
                features.append(layers[0])
            else:  # the block's activation
                features += [layers[0], *dropout(conv_rates[block], spatial)]
                block += 1
        self.features = nn.Sequential(*features)
        self.pool = members[0].head[0] if isinstance(members[0].head, nn.Sequential) else None
        classifier: list[nn.Module] = dropout([p["head_dropout"] for p in params])
        layer = 0
        for layers in zip(*(_without_dropout(m.classifier) for m in members)):
            if isinstance(layers[0], nn.Linear):
                classifier.append(PackedLinear(layers))
            elif isinstance(layers[0], nn.BatchNorm1d):
                classifier.append(_fused_norm(layers, PackedBatchNorm1d))
            else:
                classifier += [layers[0], *dropout(fc_rates[layer])]
                layer += 1
        self.classifier = nn.Sequential(*classifier)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.features(x)
        if self.pool is not None:
            x = self.pool(x)
        # Member b's flat features are its channels' block, in the order its plain flatten uses.
        x = x.reshape(x.shape[0], self.size, -1).transpose(0, 1)
        return self.classifier(x)

    def copy_member_into(self, b: int, model: nn.Module) -> None:
        """Write member b's weights and BatchNorm statistics into its plain model."""
        plain = [m for m in model.modules() if isinstance(m, (nn.Conv2d, nn.BatchNorm2d, nn.Linear, nn.BatchNorm1d))]
        fused = [m for m in self.modules() if isinstance(m, (nn.Conv2d, nn.BatchNorm2d, PackedLinear, nn.BatchNorm1d))]
        with torch.no_grad():
            for target, source in zip(plain, fused):
                if isinstance(source, PackedLinear):
                    tensors = source.member(b)
                else:
                    width = source.weight.shape[0] // self.size
                    names = [n for n in ("weight", "bias", "running_mean", "running_var") if hasattr(source, n)]
                    tensors = {n: getattr(source, n)[b * width:(b + 1) * width] for n in names}
                    if isinstance(source, nn.modules.batchnorm._BatchNorm):
                        target.num_batches_tracked.copy_(source.num_batches_tracked)
                for name, value in tensors.items():
                    getattr(target, name).copy_(value.reshape(getattr(target, name).shape))


class PackedOptimizer(torch.optim.Optimizer):
    """Adam, AdamW or SGD as torch computes them, with a learning rate and weight decay per member.

    Every fused parameter's first dimension holds the members (conv weights in blocks of output
    channels), so `param.unflatten(0, (B, -1))` puts member b at index b, whatever the memory format.
    """

    def __init__(self, params: Sequence[nn.Parameter], kind: str, lr: torch.Tensor, weight_decay: torch.Tensor,
                 momentum: torch.Tensor, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8) -> None:
        super().__init__(params, {})
        self.kind, self.betas, self.eps = kind, betas, eps
        self.lr, self.weight_decay, self.momentum = lr, weight_decay, momentum
        self.active = torch.ones_like(lr)  # 0 freezes a member that stopped

    @torch.no_grad()
    def step(self, closure: Callable[[], Any] | None = None) -> None:
        members = len(self.lr)
        for group in self.param_groups:
            for param in group["params"]:
                if param.grad is None:
                    continue
                w, g = param.unflatten(0, (members, -1)), param.grad.unflatten(0, (members, -1))
                shape = (members,) + (1,) * (w.dim() - 1)
                lr, decay = (self.lr * self.active).view(shape), self.weight_decay.view(shape)
                state = self.state[param]
                if self.kind == "sgd":  # torch's SGD: decay into the gradient, momentum buffer from step 1
                    g = g + decay * w
                    if "buffer" not in state:
                        state["buffer"] = g.clone()
                    else:
                        state["buffer"].mul_(self.momentum.view(shape)).add_(g)
                    w.sub_(lr * state["buffer"])
                    continue
                if self.kind == "adamw":  # decoupled decay
                    w.mul_(1 - lr * decay)
                else:
                    g = g + decay * w
                if not state:
                    state.update(step=0, exp_avg=torch.zeros_like(w), exp_avg_sq=torch.zeros_like(w))
                state["step"] += 1
                beta1, beta2 = self.betas
                state["exp_avg"].lerp_(g, 1 - beta1)
                state["exp_avg_sq"].mul_(beta2).addcmul_(g, g, value=1 - beta2)
                bias1, bias2 = 1 - beta1 ** state["step"], 1 - beta2 ** state["step"]
                denom = (state["exp_avg_sq"].sqrt() / math.sqrt(bias2)).add_(self.eps)
                w.sub_((lr / bias1) * state["exp_avg"] / denom)


def _member_losses(logits: torch.Tensor, y: torch.Tensor, weight: torch.Tensor | None) -> torch.Tensor:
    """Each member's mean cross-entropy (weighted mean with class weights, as torch's mean is)."""
    members, n, classes = logits.shape
    losses = nn.functional.cross_entropy(logits.reshape(-1, classes), y.reshape(-1), weight=weight,
                                         reduction="none").view(members, n)
    return losses.sum(1) / weight[y].sum(1) if weight is not None else losses.mean(1)


def _evaluate_members(model: PackedConvNet, x: torch.Tensor, y: torch.Tensor,
                      execution: Execution) -> tuple[list[float], list[float]]:
    """Validation loss and accuracy of every member, all on the same images."""
    model.eval()
    loss = torch.zeros(model.size, device=x.device)
    correct = torch.zeros(model.size, device=x.device)
    with torch.inference_mode(), execution.autocast(x.device):
        batch = EVAL_BATCH.get(x.device.type, EVAL_BATCH["cpu"])
        for start in range(0, len(x), batch):
            xb, yb = x[start:start + batch], y[start:start + batch]
            logits = model(execution.layout(xb.repeat(1, model.size, 1, 1))).float()
            loss += nn.functional.cross_entropy(logits.flatten(0, 1), yb.repeat(model.size),
                                                reduction="none").view(model.size, -1).sum(1)
            correct += (logits.argmax(-1) == yb).sum(1)
    return (loss / len(y)).tolist(), (correct / len(y)).tolist()


class Packed(Members):
    """B `convnet` cells of one pack key as one fused model, a member each: each starts from the
    weights its plain run starts from, draws its own batches (the loop seeds an order per member)
    and is frozen once it stops (its learning rate becomes 0; the loop saved its weights)."""

    def __init__(self, members: Sequence[Member], data: Splits, device: torch.device, execution: Execution) -> None:
        configs = [m.config for m in members]
        keys = {pack_key(c) for c in configs}
        if len(keys) != 1 or None in keys:
            raise ValueError("a pack takes cells that share one pack key")
        super().__init__(members, data, device, execution)
        self.plain = []
        for config in configs:  # each member starts where its plain run would
            torch.manual_seed(config.seed)
            self.plain.append(create_model(config.model.name, tuple(data.train_x.shape[1:]), data.num_classes,
                                           **config.model.params).to(device))
        self.model = PackedConvNet(self.plain, [c.model.params for c in configs]).to(device)
        if execution.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
            self.plain = [m.to(memory_format=torch.channels_last) for m in self.plain]
        torch.manual_seed(configs[0].seed)  # the pack's dropout masks and augmentation

        def per_member(field: str) -> torch.Tensor:
            return torch.tensor([float(getattr(c.train, field)) for c in configs], device=device)

        self.optimizer = PackedOptimizer(list(self.model.parameters()), configs[0].train.optimizer, per_member("lr"),
                                         per_member("weight_decay"), per_member("momentum"))
        self.step_model = torch.compile(self.model) if execution.compile else self.model

    def forward(self, idx: torch.Tensor, active: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        size, shape = len(self.members), self.data.train_x.shape[1:]
        x = self.augment(self.data.train_x[idx].flatten(0, 1)).view(size, -1, *shape)
        x = self.execution.layout(x.transpose(0, 1).reshape(idx.shape[1], size * shape[0], *shape[1:]))
        y = self.data.train_y[idx]
        with self.execution.autocast(self.device):
            logits = self.step_model(x).float()
            losses = _member_losses(logits, y, self.weight)
        # A stopped or diverged member adds nothing (where, not a product: NaN * 0 is NaN).
        objective = torch.where(active, losses, torch.zeros_like(losses)).sum()
        return objective, losses.detach(), (logits.argmax(-1) == y).sum(1)

    def validate(self) -> list[dict[str, tuple[float, float]]]:
        losses, accuracies = _evaluate_members(self.step_model, self.data.val_x, self.data.val_y, self.execution)
        return [{"eval": pair} for pair in zip(losses, accuracies)]

    def snapshot(self, b: int) -> dict[str, torch.Tensor]:
        self.model.copy_member_into(b, self.plain[b])
        return copy_state(self.plain[b])

    def freeze(self, b: int) -> None:
        self.optimizer.active[b] = 0

    def load(self, b: int, state: dict[str, torch.Tensor]) -> tuple[nn.Module, nn.Module]:
        self.plain[b].load_state_dict(state)
        return self.plain[b], self.plain[b]
