"""VGGFace2 SE-ResNet-50 weights: the port's pickle loads into timm and computes the same features.

The reference network below is written independently of timm, from the Caffe model's description
(Hu et al., SENet; Cao et al., VGGFace2): a 7x7/2 stem, 3x3/2 max pool with ceil_mode, bottlenecks
with the stride in their first 1x1 conv, SE blocks as 1x1 convs with bias named conv4/conv5, and
the parameter names of the PyTorch port (cydonia999/VGGFace2-pytorch) that users' pickles carry.
"""

from __future__ import annotations

import os
import pickle
from collections import OrderedDict
from pathlib import Path

import numpy as np
import pytest
import timm
import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from torch import Tensor, nn

from ferlit.errors import WeightsError
from ferlit.models import VGGFACE2, Normalize, create_model, load_vggface2_weights
from ferlit.models.vggface2 import read_weights

IDENTITIES = 8631  # VGGFace2 training identities: the size of the port's fc


class CaffeSEBottleneck(nn.Module):
    def __init__(self, in_channels: int, planes: int, stride: int) -> None:
        super().__init__()
        out = planes * 4
        self.conv1 = nn.Conv2d(in_channels, planes, 1, stride=stride, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, out, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out)
        self.conv4 = nn.Conv2d(out, out // 16, 1, bias=True)
        self.conv5 = nn.Conv2d(out // 16, out, 1, bias=True)
        self.downsample = None
        if stride != 1 or in_channels != out:
            self.downsample = nn.Sequential(
                nn.Conv2d(in_channels, out, 1, stride=stride, bias=False), nn.BatchNorm2d(out)
            )

    def forward(self, x: Tensor) -> Tensor:
        y = F.relu(self.bn1(self.conv1(x)))
        y = F.relu(self.bn2(self.conv2(y)))
        y = self.bn3(self.conv3(y))
        squeeze = F.adaptive_avg_pool2d(y, 1)
        gate = torch.sigmoid(self.conv5(F.relu(self.conv4(squeeze))))
        shortcut = x if self.downsample is None else self.downsample(x)
        return F.relu(y * gate + shortcut)


class CaffeSEResNet50(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        in_channels = 64
        for index, (planes, blocks, stride) in enumerate(
            [(64, 3, 1), (128, 4, 2), (256, 6, 2), (512, 3, 2)], start=1
        ):
            layer = []
            for b in range(blocks):
                layer.append(CaffeSEBottleneck(in_channels, planes, stride if b == 0 else 1))
                in_channels = planes * 4
            setattr(self, f"layer{index}", nn.Sequential(*layer))
        self.fc = nn.Linear(2048, IDENTITIES)

    def features(self, x: Tensor) -> Tensor:
        """The global-pooled 2048-d embedding before the identity classifier."""
        x = F.max_pool2d(F.relu(self.bn1(self.conv1(x))), 3, stride=2, ceil_mode=True)
        for index in range(1, 5):
            x = getattr(self, f"layer{index}")(x)
        return x.mean(dim=(2, 3))


def randomize(model: nn.Module, seed: int) -> nn.Module:
    """Random weights *and* BN statistics, so that a mixed-up tensor changes the output."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.BatchNorm2d):
                n = module.num_features
                module.weight.copy_(torch.rand(n, generator=generator) * 0.5 + 0.5)
                module.bias.copy_(torch.randn(n, generator=generator) * 0.1)
                module.running_mean.copy_(torch.randn(n, generator=generator) * 0.1)
                module.running_var.copy_(torch.rand(n, generator=generator) + 0.5)
            elif isinstance(module, nn.Conv2d | nn.Linear):
                fan_in = module.weight[0].numel()
                module.weight.copy_(torch.randn(module.weight.shape, generator=generator))
                module.weight.mul_((2.0 / fan_in) ** 0.5)
                if module.bias is not None:
                    module.bias.copy_(torch.randn(module.bias.shape, generator=generator) * 0.1)
    return model.eval()


def write_port_pickle(model: nn.Module, path: Path, protocol: int) -> Path:
    """The port's format: a pickle of name -> numpy array, without BN batch counters."""
    arrays = {
        name: tensor.numpy()
        for name, tensor in model.state_dict().items()
        if not name.endswith("num_batches_tracked")
    }
    with path.open("wb") as f:
        pickle.dump(arrays, f, protocol=protocol)
    return path


def to_port_names(state: dict[str, Tensor]) -> dict[str, Tensor]:
    """timm legacy SENet names -> the port's, spelled out here independently of ferlit's mapping."""
    renamed = {}
    for name, tensor in state.items():
        if name.endswith("num_batches_tracked"):
            continue
        name = name.replace("layer0.", "").replace("se_module.fc1", "conv4")
        renamed[name.replace("se_module.fc2", "conv5").replace("last_linear", "fc")] = tensor
    return renamed


def tiny_senet() -> nn.Module:
    return timm.create_model("legacy_seresnet18", layers=(1, 1, 1, 1), num_classes=7)


def tiny_resnet() -> nn.Module:
    return timm.create_model(
        "seresnet18", channels=(16, 32, 64, 128), layers=(1, 1, 1, 1), num_classes=7
    )


def test_port_pickle_gives_the_caffe_models_features_in_timm(tmp_path: Path) -> None:
    reference = randomize(CaffeSEResNet50(), seed=0)
    # protocol 4 keeps this 170 MB file fast; every protocol is read in the test below
    weights = write_port_pickle(reference, tmp_path / "senet50_ft_weight.pkl", protocol=4)

    net = create_model(pretrained=weights).eval()

    images = torch.randint(0, 256, (1, 3, 64, 64), dtype=torch.uint8)
    bgr = images.flip(1).float() - torch.tensor(VGGFACE2.mean).view(1, 3, 1, 1)
    with torch.no_grad():
        expected = reference.features(bgr)
        features = net.forward_head(net.forward_features(images), pre_logits=True)
    assert features.shape == (1, 2048)
    assert expected.abs().mean() > 0.1
    torch.testing.assert_close(features, expected, atol=1e-5, rtol=1e-5)

    assert net.preprocessing == VGGFACE2
    assert net.backbone.last_linear.weight.shape == (7, 2048)
    report = net.weights_report
    backbone_tensors = (
        len(reference.state_dict())
        - 2
        - sum(name.endswith("num_batches_tracked") for name in reference.state_dict())
    )
    backbone_parameters = sum(p.numel() for p in reference.parameters()) - (2048 + 1) * IDENTITIES
    assert (report.tensors, report.parameters) == (backbone_tensors, backbone_parameters)
    assert report.naming == "vggface2-port"
    assert str(report) == (
        f"loaded {backbone_tensors} tensors ({backbone_parameters / 1e6:.2f}M parameters) from "
        "senet50_ft_weight.pkl (VGGFace2 port names mapped to timm); dropped fc.weight, fc.bias"
    )


@pytest.mark.parametrize("protocol", range(pickle.HIGHEST_PROTOCOL + 1))
def test_pickles_of_every_protocol_are_read(tmp_path: Path, protocol: int) -> None:
    """Protocols 0-2 (the Python 2 era of the port) spell arrays with other globals than 3-5."""
    arrays = OrderedDict(
        [("a", np.arange(6, dtype=np.float32).reshape(2, 3)), ("b", np.arange(4.0).reshape(2, 2).T)]
    )
    path = tmp_path / "w.pkl"
    path.write_bytes(pickle.dumps(arrays, protocol=protocol))
    read = read_weights(path)
    assert list(read) == ["a", "b"]
    np.testing.assert_array_equal(read["a"], arrays["a"])
    np.testing.assert_array_equal(read["b"], arrays["b"])


def test_vggface2_preprocessing_of_a_known_pixel() -> None:
    pixel = torch.tensor([10, 20, 30], dtype=torch.uint8).view(1, 3, 1, 1)
    out = Normalize(VGGFACE2)(pixel)
    expected = torch.tensor([30 - 91.4953, 20 - 103.8827, 10 - 131.0912]).view(1, 3, 1, 1)
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, expected)


class Payload:
    """Pickles as a call of ``function(*args)``: what a malicious weights file carries."""

    def __init__(self, function, *args) -> None:
        self.function, self.args = function, args

    def __reduce__(self):
        return self.function, self.args


@pytest.mark.parametrize(
    ("function", "written_as"),
    [(os.system, f"{os.system.__module__}.system"), (exec, "__builtin__.exec")],
    ids=["os.system", "exec"],
)
def test_a_pickle_with_code_is_refused_without_running_it(
    tmp_path: Path, function, written_as: str
) -> None:
    marker = tmp_path / "pwned"
    command = f"touch {marker}" if function is os.system else f"open({str(marker)!r}, 'w')"
    path = tmp_path / "senet50_ft_weight.pkl"
    with path.open("wb") as f:
        pickle.dump(
            {"conv1.weight": np.zeros((64, 3, 7, 7), np.float32), "x": Payload(function, command)},
            f,
            protocol=2,
        )

    with pytest.raises(WeightsError) as error:
        load_vggface2_weights(tiny_senet(), path)
    assert not marker.exists()
    assert str(error.value) == (
        f"{path}: refused to unpickle the global {written_as}; a "
        "VGGFace2 .pkl may hold only numpy arrays in a dict (anything else could run code)"
    )


def test_a_torch_file_with_code_is_refused_without_running_it(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    path = tmp_path / "weights.pth"
    torch.save({"x": Payload(os.system, f"touch {marker}")}, path)
    with pytest.raises(WeightsError) as error:
        load_vggface2_weights(tiny_resnet(), path)
    assert str(error.value).startswith(
        f"{path}: refused to load (it asks to run {os.system.__module__}.system): ferlit reads "
        "only tensors, numbers, strings and containers"
    )
    assert not marker.exists()


def test_a_pickle_entry_that_is_not_an_array_is_named(tmp_path: Path) -> None:
    path = tmp_path / "w.pkl"
    path.write_bytes(pickle.dumps({"conv1.weight": np.zeros(3, np.float32), "epoch": 12}))
    with pytest.raises(WeightsError, match=r"w\.pkl: entry 'epoch' is a int, expected a tensor"):
        load_vggface2_weights(tiny_senet(), path)
    path.write_bytes(pickle.dumps({"conv1.weight": np.array([print], dtype=object)}))
    with pytest.raises(WeightsError, match=r"refused to unpickle the global builtins\.print"):
        load_vggface2_weights(tiny_senet(), path)
    path.write_bytes(pickle.dumps({"conv1.weight": np.array(["x", 1], dtype=object)}))
    with pytest.raises(
        WeightsError, match=r"entry 'conv1\.weight' is a numpy array of dtype object"
    ):
        load_vggface2_weights(tiny_senet(), path)


def test_a_corrupt_pickle_is_a_weights_error(tmp_path: Path) -> None:
    path = tmp_path / "w.pkl"
    path.write_bytes(pickle.dumps({"a": np.zeros(3)})[:-9])
    with pytest.raises(
        WeightsError, match=r"w\.pkl: unpickle failed \(corrupt, truncated or not a weights file; "
    ):
        load_vggface2_weights(tiny_senet(), path)


def test_port_pickle_with_a_missing_and_a_misshaped_tensor_names_both(tmp_path: Path) -> None:
    arrays = {k: v.numpy() for k, v in to_port_names(tiny_senet().state_dict()).items()}
    del arrays["layer2.0.conv4.bias"]
    arrays["bn1.running_var"] = np.ones(65, np.float32)
    path = tmp_path / "w.pkl"
    path.write_bytes(pickle.dumps(arrays, protocol=2))
    model = tiny_senet()
    before = model.layer1[0].conv1.weight.clone()
    with pytest.raises(WeightsError) as error:
        load_vggface2_weights(model, path)
    assert str(error.value) == (
        f"{path}: does not fit model.backbone legacy_seresnet18: "
        "missing 1: layer2.0.conv4.bias (as layer2.0.se_module.fc1.bias); "
        "mis-shaped 1: bn1.running_var (as layer0.bn1.running_var) file (65,) vs model (64,)"
    )
    assert torch.equal(model.layer1[0].conv1.weight, before), "a failed load must change nothing"


def test_port_pickle_into_another_backbone_is_a_clear_error(tmp_path: Path) -> None:
    weights = tmp_path / "senet50_ft_weight.pkl"
    weights.write_bytes(pickle.dumps({"layer1.0.conv4.weight": np.zeros((16, 256, 1, 1))}))
    with pytest.raises(
        WeightsError, match="load only into model.backbone legacy_seresnet50, not seresnet18"
    ):
        create_model(
            "seresnet18",
            backbone_kwargs=dict(channels=(16, 32, 64, 128), layers=(1, 1, 1, 1)),
            pretrained=weights,
        )


@pytest.mark.parametrize(
    ("file_name", "wrap"),
    [
        ("plain.pth", lambda sd: sd),
        (
            "lightning.ckpt",
            lambda sd: {
                "state_dict": {f"model.backbone.{k}": v for k, v in sd.items()},
                "epoch": 3,
            },
        ),
        ("ddp.pt", lambda sd: {"model": {f"module.{k}": v for k, v in sd.items()}}),
        ("plain.safetensors", lambda sd: sd),
    ],
)
def test_timm_state_dicts_load_whatever_the_wrapper(tmp_path: Path, file_name: str, wrap) -> None:
    source = randomize(tiny_resnet(), seed=1)
    state = {k: v.contiguous() for k, v in source.state_dict().items()}
    path = tmp_path / file_name
    if path.suffix == ".safetensors":
        save_file(wrap(state), path)
    else:
        torch.save(wrap(state), path)

    target = tiny_resnet().eval()
    report = load_vggface2_weights(target, path)

    for name, tensor in target.state_dict().items():
        if not name.startswith("fc."):
            assert torch.equal(tensor, state[name]), name
    assert not torch.equal(target.fc.weight, source.fc.weight), "the head stays new"
    assert report.naming == "timm"
    assert sorted(report.dropped) == ["fc.bias", "fc.weight"]
    assert report.tensors == len(state) - 2


def test_timm_state_dict_with_a_missing_and_an_unexpected_tensor(tmp_path: Path) -> None:
    state = tiny_resnet().state_dict()
    state["layer3.0.se.fc9.weight"] = state.pop("layer3.0.se.fc2.weight")
    path = tmp_path / "w.pth"
    torch.save(state, path)
    with pytest.raises(WeightsError) as error:
        load_vggface2_weights(tiny_resnet(), path)
    assert str(error.value) == (
        f"{path}: does not fit model.backbone seresnet18: missing 1: layer3.0.se.fc2.weight; "
        "unexpected 1: layer3.0.se.fc9.weight"
    )


def test_missing_file_and_unknown_format_name_the_path_and_the_formats(tmp_path: Path) -> None:
    formats = ".pkl (VGGFace2 PyTorch port), .pth/.pt/.ckpt (torch state dict), .safetensors"
    missing = tmp_path / "senet50_ft_weight.pkl"
    with pytest.raises(WeightsError) as error:
        load_vggface2_weights(tiny_senet(), missing)
    assert str(error.value) == f"{missing}: no such weights file; expected {formats}"
    caffe = tmp_path / "senet50_ft.caffemodel"
    caffe.write_bytes(b"\x00")
    with pytest.raises(WeightsError) as error:
        load_vggface2_weights(tiny_senet(), caffe)
    assert str(error.value) == f"{caffe}: unknown weights format '.caffemodel'; expected {formats}"
