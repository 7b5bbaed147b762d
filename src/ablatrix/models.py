"""Models: a registry of constructors and the declarative `convnet` that covers the studies.

A constructor (a class or a factory) gets the dataset's `input_shape` (C, H, W) and `num_classes`
only if its signature has parameters of those names: a researcher's module whose `__init__` takes
no arguments, its sizes written inside, registers as it is. Its other keyword parameters and their
defaults *are* its schema: the grid loader rejects keys the signature does not name and fills in
defaults, so the run id of a cell changes exactly when the built model would.
"""
from __future__ import annotations

import inspect
from typing import Any, Callable, Sequence

import torch
from torch import nn

from .errors import AblatrixError
from .registry import Registry

Shape = tuple[int, int, int]
MODELS: Registry[Callable[..., nn.Module]] = Registry("model")
ACTIVATIONS: Registry[type[nn.Module]] = Registry("activation")
for _name, _cls in {"relu": nn.ReLU, "gelu": nn.GELU, "silu": nn.SiLU, "elu": nn.ELU,
                    "leaky_relu": nn.LeakyReLU, "tanh": nn.Tanh}.items():
    ACTIVATIONS.register(_name)(_cls)


SUPPLIED = ("input_shape", "num_classes")  # passed to a constructor whose signature names them


def register_model(name: str) -> Callable[[Callable[..., nn.Module]], Callable[..., nn.Module]]:
    """Register a constructor of an `nn.Module` under `name`: any of `ctor()`,
    `ctor(num_classes, ...)`, `ctor(input_shape, num_classes, *, field=default, ...)`."""
    return MODELS.register(name)


def _fields(ctor: Callable[..., nn.Module]) -> dict[str, inspect.Parameter]:
    """The constructor's keyword parameters that a grid may set: all but those ablatrix supplies."""
    return {p.name: p for p in inspect.signature(ctor).parameters.values()
            if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD) and p.name not in SUPPLIED}


def resolve_params(name: str, params: dict[str, Any]) -> dict[str, Any]:
    """The model's full keyword parameters: `params` checked against the signature, defaults filled."""
    ctor = MODELS.lookup(name)
    signature = inspect.signature(ctor)
    accepted = _fields(ctor)
    takes_any = any(p.kind is p.VAR_KEYWORD for p in signature.parameters.values())
    unknown = sorted(set(params) - set(accepted)) if not takes_any else []
    if unknown:
        raise AblatrixError(f"model {name!r} has no parameter {unknown[0]!r}; "
                            f"its parameters: {', '.join(accepted)}")
    resolved = {k: p.default for k, p in accepted.items() if p.default is not p.empty}
    resolved.update(params)
    missing = [k for k in accepted if k not in resolved]
    if missing:
        raise AblatrixError(f"model {name!r} needs parameter {missing[0]!r}")
    return resolved


def param_defaults(name: str) -> dict[str, Any]:
    """The default of every keyword parameter of model `name` that has one."""
    return {k: p.default for k, p in _fields(MODELS.lookup(name)).items() if p.default is not p.empty}


def create_model(name: str, input_shape: Sequence[int], num_classes: int, **params: Any) -> nn.Module:
    """Build a registered model for inputs of `input_shape` (C, H, W) and `num_classes` outputs
    (each passed if the constructor asks for it by name)."""
    ctor = MODELS.lookup(name)
    named = inspect.signature(ctor).parameters
    supplied = {k: v for k, v in (("input_shape", tuple(input_shape)), ("num_classes", num_classes)) if k in named}
    return ctor(**supplied, **resolve_params(name, params))


def check_model(model: nn.Module, input_shape: Sequence[int], num_classes: int) -> int:
    """Run one dry forward pass on zeros and return the parameter count; fail clearly if it breaks."""
    was_training = model.training
    model.eval()  # BatchNorm in train mode cannot take the batch of one used here
    try:
        with torch.no_grad():
            out = model(torch.zeros(1, *input_shape))
    except Exception as exc:  # a user's module may fail in any way; report it, don't crash
        raise AblatrixError(f"forward pass on input {tuple(input_shape)} fails: "
                            f"{type(exc).__name__}: {str(exc).splitlines()[0]}") from exc
    finally:
        model.train(was_training)
    if tuple(out.shape) != (1, num_classes):
        raise AblatrixError(f"model outputs shape {tuple(out.shape)[1:]}, expected ({num_classes},)")
    return sum(p.numel() for p in model.parameters())


def _per_block(name: str, value: Any, n: int, blocks: str = "conv blocks") -> list:
    """A setting given once for every block (or FC layer), or as a list with one value per block."""
    if isinstance(value, (list, tuple)):
        if len(value) != n:
            raise AblatrixError(f"{name} has {len(value)} values but there are {n} {blocks}")
        return list(value)
    return [value] * n


def _require(ok: bool, name: str, value: Any, allowed: str) -> None:
    if not ok:
        raise AblatrixError(f"{name} = {value!r} is not allowed; expected {allowed}")


def _is_int(v: Any, low: int) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v >= low


def _is_rate(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and 0 <= v < 1


def _shrink(size: int, kernel: int, stride: int, padding: int) -> int:
    return (size + 2 * padding - kernel) // stride + 1


DROPOUTS = {"dropout": nn.Dropout, "dropout2d": nn.Dropout2d}
POOLS = {"max": nn.MaxPool2d, "avg": nn.AvgPool2d, "none": None}
HEADS = {"flatten": None, "avg": nn.AdaptiveAvgPool2d, "max": nn.AdaptiveMaxPool2d}
INITS = {"default": (), "kaiming": (nn.Conv2d, nn.Linear), "kaiming-conv": (nn.Conv2d,)}  # He-normal layers


@register_model("convnet")
class ConvNet(nn.Module):
    """Conv blocks, a flatten or global-pool head, FC blocks, a linear classifier.

    Conv block i: Conv(conv[i], kernel, stride, padding) -> [BatchNorm2d] -> activation ->
    [Dropout | Dropout2d] -> [MaxPool | AvgPool]. Then the head, [Dropout(head_dropout)] on its
    flat features, and FC block j: Linear(fc[j]) -> [BatchNorm1d] -> activation -> [Dropout].
    Per-block settings (and fc_batchnorm, fc_dropout per FC layer) take one value for all blocks or
    a list. init "kaiming" draws every conv and linear weight He-normal (fan in) with zero biases;
    "kaiming-conv" only the conv layers, leaving linear layers at torch's default. With
    `conv = []` this is an MLP on the flattened input. Conv biases are kept under BatchNorm so
    parameter counts match the published models this suite reproduces.
    """

    def __init__(self, input_shape: Shape, num_classes: int, *,
                 conv: Sequence[int] = (16, 32), kernel: int | Sequence[int] = 3,
                 stride: int | Sequence[int] = 1, padding: int | Sequence[int] = 1,
                 batchnorm: bool = True, activation: str = "relu",
                 dropout: float | Sequence[float] = 0.0, dropout_kind: str = "dropout",
                 pool: str | Sequence[str] = "max", pool_kernel: int | Sequence[int] = 2,
                 pool_stride: int | Sequence[int] | None = None,
                 pool_padding: int | Sequence[int] = 0, head: str = "flatten",
                 fc: Sequence[int] = (), fc_batchnorm: bool | Sequence[bool] | None = None,
                 fc_dropout: float | Sequence[float] = 0.0, head_dropout: float = 0.0,
                 init: str = "default") -> None:
        super().__init__()
        _require(isinstance(batchnorm, bool), "batchnorm", batchnorm, "true or false")
        for name, widths in (("conv", conv), ("fc", fc)):
            _require(isinstance(widths, (list, tuple)) and all(_is_int(w, 1) for w in widths),
                     name, widths, "a list of positive integers")
        act = ACTIVATIONS.lookup(activation)
        _require(dropout_kind in DROPOUTS, "dropout_kind", dropout_kind, " or ".join(DROPOUTS))
        _require(head in HEADS, "head", head, " or ".join(HEADS))
        _require(init in INITS, "init", init, " or ".join(INITS))
        _require(_is_rate(head_dropout), "head_dropout", head_dropout, "a number in [0, 1)")
        n = len(conv)
        blocks = zip(conv, *(_per_block(k, v, n) for k, v in (
            ("kernel", kernel), ("stride", stride), ("padding", padding), ("dropout", dropout),
            ("pool", pool), ("pool_kernel", pool_kernel), ("pool_stride", pool_stride),
            ("pool_padding", pool_padding))))

        channels, height, width = input_shape
        features: list[nn.Module] = []
        for i, (out, k, s, p, rate, pool_kind, pk, ps, pp) in enumerate(blocks, start=1):
            _require(_is_int(k, 1), f"kernel (block {i})", k, "an integer >= 1")
            _require(_is_int(s, 1), f"stride (block {i})", s, "an integer >= 1")
            _require(_is_int(p, 0), f"padding (block {i})", p, "an integer >= 0")
            _require(_is_rate(rate), f"dropout (block {i})", rate, "a number in [0, 1)")
            _require(pool_kind in POOLS, f"pool (block {i})", pool_kind, " or ".join(POOLS))
            height, width = _shrink(height, k, s, p), _shrink(width, k, s, p)
            if height < 1 or width < 1:
                raise AblatrixError(f"conv block {i}: a {k}x{k} convolution (padding {p}) shrinks "
                                    f"the feature map to nothing on input {tuple(input_shape)}")
            features += [nn.Conv2d(channels, out, k, s, p)]
            features += [nn.BatchNorm2d(out)] if batchnorm else []
            features += [act()]
            features += [DROPOUTS[dropout_kind](rate)] if rate > 0 else []
            if POOLS[pool_kind] is not None:
                ps = pk if ps is None else ps
                _require(_is_int(pk, 1), f"pool_kernel (block {i})", pk, "an integer >= 1")
                _require(_is_int(ps, 1), f"pool_stride (block {i})", ps, "an integer >= 1")
                _require(_is_int(pp, 0) and 2 * pp <= pk, f"pool_padding (block {i})", pp,
                         "an integer from 0 to half the pool kernel")
                height, width = _shrink(height, pk, ps, pp), _shrink(width, pk, ps, pp)
                if height < 1 or width < 1:
                    raise AblatrixError(f"conv block {i}: {pool_kind} pool (kernel {pk}, stride {ps}) "
                                        f"shrinks the feature map to nothing on input "
                                        f"{tuple(input_shape)}")
                features += [POOLS[pool_kind](pk, ps, pp)]
            channels = out
        self.features = nn.Sequential(*features)
        if HEADS[head] is None:
            self.head = nn.Flatten()
            flat = channels * height * width
        else:
            self.head = nn.Sequential(HEADS[head](1), nn.Flatten())
            flat = channels

        layers: list[nn.Module] = [nn.Dropout(head_dropout)] if head_dropout > 0 else []
        for j, (out, rate, bn) in enumerate(zip(
                fc, _per_block("fc_dropout", fc_dropout, len(fc), "FC layers"),
                _per_block("fc_batchnorm", batchnorm if fc_batchnorm is None else fc_batchnorm, len(fc),
                           "FC layers")), 1):
            _require(_is_rate(rate), f"fc_dropout (layer {j})", rate, "a number in [0, 1)")
            _require(isinstance(bn, bool), f"fc_batchnorm (layer {j})", bn, "true or false")
            layers += [nn.Linear(flat, out)]
            layers += [nn.BatchNorm1d(out)] if bn else []
            layers += [act()]
            layers += [nn.Dropout(rate)] if rate > 0 else []
            flat = out
        layers.append(nn.Linear(flat, num_classes))
        self.classifier = nn.Sequential(*layers)
        if init != "default":
            for m in self.modules():
                if isinstance(m, INITS[init]):
                    nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
                    nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.head(self.features(x)))
