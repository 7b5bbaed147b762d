"""The model builder: one declarative spec -> the nn.Module it describes, shapes checked up front."""
from __future__ import annotations

import pandas as pd
import pytest
import torch
from torch import nn

from ablatrix.errors import AblatrixError
from ablatrix.models import MODELS, check_model, create_model, register_model, resolve_params

DIGITS = (1, 8, 8)


def layer_types(model: nn.Module) -> list[type]:
    return [type(m) for m in model.modules() if not isinstance(m, (nn.Sequential, nn.Flatten))][1:]


@pytest.mark.parametrize("params, expected", [
    # BatchNorm on: after every conv and every FC linear
    (dict(conv=[4], fc=[8], batchnorm=True),
     [nn.Conv2d, nn.BatchNorm2d, nn.ReLU, nn.MaxPool2d, nn.Linear, nn.BatchNorm1d, nn.ReLU, nn.Linear]),
    # BatchNorm off everywhere
    (dict(conv=[4], fc=[8], batchnorm=False),
     [nn.Conv2d, nn.ReLU, nn.MaxPool2d, nn.Linear, nn.ReLU, nn.Linear]),
    # BatchNorm in conv blocks only
    (dict(conv=[4], fc=[8], batchnorm=True, fc_batchnorm=False),
     [nn.Conv2d, nn.BatchNorm2d, nn.ReLU, nn.MaxPool2d, nn.Linear, nn.ReLU, nn.Linear]),
    # plain dropout sits after the activation, before the pool
    (dict(conv=[4], batchnorm=False, dropout=0.25),
     [nn.Conv2d, nn.ReLU, nn.Dropout, nn.MaxPool2d, nn.Linear]),
    # spatial dropout when asked for
    (dict(conv=[4], batchnorm=False, dropout=0.25, dropout_kind="dropout2d"),
     [nn.Conv2d, nn.ReLU, nn.Dropout2d, nn.MaxPool2d, nn.Linear]),
    # dropout per block, pooling per block
    (dict(conv=[4, 4], batchnorm=False, dropout=[0.1, 0.0], pool=["max", "none"]),
     [nn.Conv2d, nn.ReLU, nn.Dropout, nn.MaxPool2d, nn.Conv2d, nn.ReLU, nn.Linear]),
    # FC dropout after the FC activation
    (dict(conv=[], fc=[8, 8], batchnorm=False, fc_dropout=0.5),
     [nn.Linear, nn.ReLU, nn.Dropout, nn.Linear, nn.ReLU, nn.Dropout, nn.Linear]),
    # dropout on the flat features before the first FC layer, then after the FC activation
    (dict(conv=[4], batchnorm=False, fc=[8], head_dropout=0.25, fc_dropout=0.25),
     [nn.Conv2d, nn.ReLU, nn.MaxPool2d, nn.Dropout, nn.Linear, nn.ReLU, nn.Dropout, nn.Linear]),
    # global average pooling head, GELU activation
    (dict(conv=[4], batchnorm=False, head="avg", activation="gelu", pool="avg"),
     [nn.Conv2d, nn.GELU, nn.AvgPool2d, nn.AdaptiveAvgPool2d, nn.Linear]),
])
def test_built_layers_follow_the_spec(params, expected):
    """Each axis (BN, dropout kind and place, pooling, head) shows up as the layers it names."""
    assert layer_types(create_model("convnet", DIGITS, 10, **params)) == expected


@pytest.mark.parametrize("depth", [0, 1, 2, 3])
def test_conv_depth_and_mlp(depth):
    """`conv` with N widths gives N conv layers; no widths gives an MLP on the flattened input."""
    model = create_model("convnet", DIGITS, 10, conv=[8] * depth)
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert len(convs) == depth
    if depth == 0:
        assert model.classifier[0].in_features == 64
    assert model(torch.zeros(2, *DIGITS)).shape == (2, 10)


# Published parameter counts of the architectures the suite reproduces, built from the spec alone.
@pytest.mark.parametrize("shape, classes, params, count", [
    ((3, 53, 52), 9, dict(conv=[32, 64, 128], pool_kernel=3, pool_stride=3, pool_padding=1,
                          head="max", init="kaiming-conv"), 94_857),
    ((3, 32, 32), 10, dict(conv=[16, 32, 64], batchnorm=False, fc=[500], head_dropout=0.25, fc_dropout=0.25),
     541_094),
    ((1, 28, 28), 10, dict(conv=[32, 64, 128], dropout=0.3, dropout_kind="dropout2d",
                           pool_padding=[0, 0, 1], fc=[512], fc_batchnorm=False, fc_dropout=0.3),
     1_147_338),
    ((1, 28, 28), 10, dict(conv=[], fc=[256, 128, 64]), 243_658),
    # small-cnn study: "with BN" (BN2d on every conv, BN1d on both FC), and its two 2-conv models,
    # which have no conv BN and a BatchNorm1d on one FC layer only (after FC 48, resp. FC 128).
    ((1, 28, 28), 10, dict(conv=[6, 12, 24], padding=[1, 0, 0], pool=["max", "max", "none"],
                           dropout=0.75, fc=[128, 48]), 59_734),
    ((1, 28, 28), 10, dict(conv=[6, 12], padding=[1, 0], batchnorm=False, dropout=0.75, fc=[128, 48],
                           fc_batchnorm=[False, True]), 62_922),
    ((1, 28, 28), 10, dict(conv=[6, 12], padding=[1, 0], batchnorm=False, dropout=0.75, fc=[128],
                           fc_batchnorm=[True]), 57_690),
])
def test_study_architectures_have_their_published_parameter_count(shape, classes, params, count):
    """The wafer, CIFAR-10, MNIST/Fashion CNN, MLP and small-CNN studies' models come out parameter-exact."""
    assert check_model(create_model("convnet", shape, classes, **params), shape, classes) == count


@pytest.mark.parametrize("params, message", [
    (dict(conv=[4, 4, 4, 4]), "conv block 4: max pool"),
    (dict(conv=[4], kernel=11, padding=0), "conv block 1: a 11x11 convolution"),
    (dict(conv=[4, 4], pool_kernel=[2, 5]), "conv block 2: max pool (kernel 5"),
])
def test_shrinking_stack_is_rejected_naming_the_block(params, message):
    """A stack whose feature map shrinks to nothing fails before training, naming the block."""
    with pytest.raises(AblatrixError, match="shrinks the feature map to nothing") as err:
        create_model("convnet", DIGITS, 10, **params)
    assert message in str(err.value)


@pytest.mark.parametrize("params, message", [
    (dict(dropout=1.0), r"dropout \(block 1\) = 1.0 is not allowed; expected a number in \[0, 1\)"),
    (dict(dropout=-0.1), r"dropout \(block 1\) = -0.1"),
    (dict(fc=[8], fc_dropout=1.5), r"fc_dropout \(layer 1\) = 1.5"),
    (dict(conv=[4, 4], padding=[1, 1, 1]), "padding has 3 values but there are 2 conv blocks"),
    (dict(fc=[8, 8], fc_batchnorm=[True]), "fc_batchnorm has 1 values but there are 2 FC layers"),
    (dict(fc=[8], fc_batchnorm=["yes"]), r"fc_batchnorm \(layer 1\) = 'yes'"),
    (dict(conv=[0]), "conv = \\[0\\] is not allowed"),
    (dict(activation="swish"), "unknown activation 'swish'; choose from: elu, gelu"),
    (dict(pool="min"), "pool \\(block 1\\) = 'min'"),
    (dict(batchnorm="yes"), "batchnorm = 'yes'"),
    (dict(head_dropout=1.0), r"head_dropout = 1.0"),
    (dict(init="xavier"), "init = 'xavier' is not allowed; expected default or kaiming or kaiming-conv"),
    (dict(pool_kernel=2, pool_padding=2), "pool_padding \\(block 1\\) = 2"),
])
def test_bad_values_are_rejected(params, message):
    """Out-of-range or unknown settings raise a one-line AblatrixError naming the setting."""
    with pytest.raises(AblatrixError, match=message):
        create_model("convnet", DIGITS, 10, **params)


@pytest.mark.parametrize("init, reinitialised", [
    ("kaiming", (nn.Conv2d, nn.Linear)),
    ("kaiming-conv", (nn.Conv2d,)),  # the wafer study's: linear layers keep torch's default
])
def test_kaiming_init(init, reinitialised):
    """A kaiming init zeroes the biases of exactly the layers it re-initialises, and only those."""
    torch.manual_seed(0)
    model = create_model("convnet", DIGITS, 10, conv=[4], fc=[8], init=init)
    for m in model.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            assert (torch.count_nonzero(m.bias) == 0) == isinstance(m, reinitialised), m


@pytest.fixture
def custom_model():
    @register_model("test-linear")
    class Linear(nn.Module):
        def __init__(self, input_shape, num_classes, *, hidden: int = 5, broken: bool = False):
            super().__init__()
            self.net = nn.Sequential(nn.Flatten(), nn.Linear(torch.Size(input_shape).numel(), hidden),
                                     nn.ReLU(), nn.Linear(hidden, num_classes + broken))

        def forward(self, x):
            return self.net(x)
    yield "test-linear"
    del MODELS["test-linear"]


def test_registered_model_params_come_from_its_signature(custom_model):
    """A registered module's keyword parameters are its schema: defaults filled, unknown refused."""
    assert resolve_params(custom_model, {}) == {"hidden": 5, "broken": False}
    assert resolve_params(custom_model, {"hidden": 7})["hidden"] == 7
    with pytest.raises(AblatrixError, match="has no parameter 'width'; its parameters: hidden, broken"):
        resolve_params(custom_model, {"width": 3})
    assert check_model(create_model(custom_model, DIGITS, 10, hidden=3), DIGITS, 10) == 64 * 3 + 3 + 3 * 10 + 10


def test_check_model_rejects_wrong_output(custom_model):
    """A module whose output does not match the class count is refused before training."""
    with pytest.raises(AblatrixError, match=r"outputs shape \(11,\), expected \(10,\)"):
        check_model(create_model(custom_model, DIGITS, 10, broken=True), DIGITS, 10)


def test_check_model_reports_a_failing_forward(custom_model):
    """A forward pass that raises inside torch becomes one AblatrixError line."""
    model = create_model(custom_model, DIGITS, 10)
    with pytest.raises(AblatrixError, match=r"forward pass on input \(3, 8, 8\) fails: RuntimeError"):
        check_model(model, (3, 8, 8), 10)


def test_unknown_model_lists_choices():
    """An unknown model name lists the registered ones."""
    with pytest.raises(AblatrixError, match="unknown model 'resnet'; choose from: convnet"):
        create_model("resnet", DIGITS, 10)


NOTEBOOK_MODELS = '''
import torch
from torch import nn
import torch.nn.functional as F
from ablatrix import register_model


@register_model("notebook-net")
class NotebookNet(nn.Module):
    """As a notebook writes it: sizes inside, no constructor arguments, log-probabilities out."""
    def __init__(self):
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(64, 32), nn.Linear(32, 10)

    def forward(self, x):
        return F.log_softmax(self.fc2(F.relu(self.fc1(x.flatten(1)))), dim=1)


@register_model("classes-only")
def classes_only(num_classes, hidden: int = 16):
    return nn.Sequential(nn.Flatten(), nn.Linear(64, hidden), nn.ReLU(), nn.Linear(hidden, num_classes))
'''
THREE_CLASSES = '''
from torch import nn
from ablatrix import register_model


@register_model("three-classes")
class ThreeClasses(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(64, 3)

    def forward(self, x):
        return self.fc(x.flatten(1))
'''


def test_a_no_argument_module_and_a_factory_of_only_num_classes_train_and_report(write_grid, tmp_path):
    """A notebook's model class with no constructor arguments (log_softmax output) and a factory that
    asks only for num_classes, train and report as the grid's models."""
    from ablatrix.cli import main
    (tmp_path / "notebook.py").write_text(NOTEBOOK_MODELS)
    grid = write_grid('name = "nb"\nplugins = ["notebook.py"]\ndatasets = ["digits"]\nseeds = [0]\n'
                      '[train]\nepochs = 3\npatience = 0\n[model]\nname = "notebook-net"\n'
                      '[variants.small]\nmodel = {name = "classes-only"}\n[axes]\n')
    try:
        assert main(["run", str(grid), "--results", str(tmp_path / "res")]) == 0
        assert main(["report", str(grid), "--results", str(tmp_path / "res"), "--format", "csv"]) == 0
    finally:  # other tests list the registered models
        for name in ("notebook-net", "classes-only"):
            MODELS.pop(name, None)
    runs = pd.read_csv(tmp_path / "res" / "nb" / "runs.csv")
    assert list(runs["variant"]) == ["base", "small"] and (runs["status"] == "done").all()
    assert list(runs["params"]) == [64 * 32 + 32 + 32 * 10 + 10, 64 * 16 + 16 + 16 * 10 + 10]
    assert (runs["test_accuracy"] > 0.4).all()  # chance is 0.1


def test_a_no_argument_module_with_the_wrong_class_count_is_one_line(write_grid, tmp_path, capsys):
    """Its output is checked against the dataset as for any model: exit 2, one line, nothing trained."""
    from ablatrix.cli import main
    (tmp_path / "three.py").write_text(THREE_CLASSES)
    grid = write_grid('name = "nb"\nplugins = ["three.py"]\ndatasets = ["digits"]\nseeds = [0]\n'
                      '[model]\nname = "three-classes"\n')
    try:
        assert main(["run", str(grid), "--results", str(tmp_path / "res")]) == 2
    finally:
        MODELS.pop("three-classes", None)
    err = capsys.readouterr().err
    assert "model outputs shape (3,), expected (10,)" in err and err.count("\n") == 1
    assert not (tmp_path / "res").exists()
