"""The model a user builds by name: preprocessing from its weights, a new head, clear option errors."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from ferlit.errors import ConfigError
from ferlit.models import (
    IMAGENET,
    VGGFACE2,
    ExpressionNet,
    Normalize,
    Preprocessing,
    create_model,
    preprocessing_from_timm,
)

TINY = dict(channels=(16, 32, 64, 128), layers=(1, 1, 1, 1))


def tiny(**kwargs) -> ExpressionNet:
    return create_model("seresnet18", backbone_kwargs=TINY, **kwargs)


def images(n: int = 2, size: int = 32) -> torch.Tensor:
    return torch.randint(
        0, 256, (n, 3, size, size), dtype=torch.uint8, generator=torch.Generator().manual_seed(0)
    )


def test_uint8_rgb_images_in_logits_out() -> None:
    net = tiny().eval()
    with torch.no_grad():
        logits = net(images())
        features = net.forward_features(images())
        embedding = net.forward_head(features, pre_logits=True)
        as_float = net(images().float())
    assert logits.shape == (2, 7)
    assert features.shape == (2, 128, 1, 1)
    assert embedding.shape == (2, 128)
    torch.testing.assert_close(as_float, logits)
    assert net.num_classes == 7


def test_eight_classes_with_other() -> None:
    with torch.no_grad():
        assert tiny(num_classes=8).eval()(images()).shape == (2, 8)


def test_without_weights_the_timm_configs_imagenet_preprocessing_is_used() -> None:
    net = tiny()
    assert net.preprocessing == IMAGENET
    assert IMAGENET.channel_order == "RGB"
    assert IMAGENET.mean == pytest.approx((123.675, 116.28, 103.53))
    assert IMAGENET.std == pytest.approx((58.395, 57.12, 57.375))


def test_preprocessing_from_a_timm_config_is_on_the_255_scale() -> None:
    inception = preprocessing_from_timm({"mean": (0.5, 0.5, 0.5), "std": (0.5, 0.5, 0.5)})
    assert inception == Preprocessing("RGB", (127.5, 127.5, 127.5), (127.5, 127.5, 127.5))
    assert preprocessing_from_timm({}) == IMAGENET


def test_imagenet_preprocessing_of_a_known_pixel() -> None:
    pixel = torch.tensor([10, 20, 30], dtype=torch.uint8).view(1, 3, 1, 1)
    expected = torch.tensor(
        [(10 - 123.675) / 58.395, (20 - 116.28) / 57.12, (30 - 103.53) / 57.375]
    ).view(1, 3, 1, 1)
    torch.testing.assert_close(Normalize(IMAGENET)(pixel), expected)


def test_bgr_preprocessing_reverses_the_channels() -> None:
    bgr = Normalize(Preprocessing("BGR", (0.0, 0.0, 0.0), (1.0, 1.0, 1.0)))
    x = torch.arange(12, dtype=torch.uint8).view(1, 3, 2, 2)
    torch.testing.assert_close(bgr(x), x.flip(1).float())


def test_normalize_refuses_images_without_three_channels() -> None:
    with pytest.raises(
        ValueError, match=r"expected images shaped \(N, 3, H, W\), got \(2, 1, 8, 8\)"
    ):
        Normalize(IMAGENET)(torch.zeros(2, 1, 8, 8))


def test_preprocessing_buffers_follow_the_model_but_stay_out_of_the_state_dict() -> None:
    net = tiny().to(torch.float64)
    assert net.normalize.mean.dtype == torch.float64
    assert net.normalize.mean.view(-1).tolist() == pytest.approx(IMAGENET.mean)
    assert all(key.startswith("backbone.") for key in net.state_dict())


def test_head_and_backbone_parameters_split_the_model() -> None:
    net = tiny()
    head, rest = net.head_parameters(), net.backbone_parameters()
    assert [tuple(p.shape) for p in head] == [(7, 128), (7,)]
    assert head[0] is net.backbone.fc.weight
    assert len(head) + len(rest) == len(list(net.parameters()))
    assert not {id(p) for p in head} & {id(p) for p in rest}


def test_dropout_is_off_unless_asked_for() -> None:
    senet = dict(layers=(1, 1, 1, 1))
    assert create_model("legacy_seresnet18", backbone_kwargs=senet).backbone.drop_rate == 0.0
    dropped = create_model("legacy_seresnet18", backbone_kwargs={**senet, "drop_rate": 0.3})
    assert dropped.backbone.drop_rate == 0.3


def test_an_unknown_backbone_names_the_option_and_close_timm_names_first() -> None:
    with pytest.raises(ConfigError) as error:
        create_model("legacy_seresnet5", num_classes=9, pretrained="/nonexistent.pkl")
    message = str(error.value)
    assert message.startswith("model.backbone: 'legacy_seresnet5' is not a timm model name; ")
    assert "close timm names: legacy_seresnet50" in message


def test_bad_num_classes_kwargs_and_preprocessing_name_their_option() -> None:
    with pytest.raises(ConfigError, match=r"^model\.num_classes: num_classes must be 7"):
        tiny(num_classes=6)
    with pytest.raises(ConfigError, match=r"^model\.backbone_kwargs: \{'depth': 3\} not accepted"):
        create_model("seresnet18", backbone_kwargs={"depth": 3})
    with pytest.raises(ConfigError, match=r"^model\.preprocessing: expected one of auto, vggface2"):
        tiny(preprocessing="caffe")


def test_weights_select_vggface2_preprocessing_unless_told_otherwise(tmp_path: Path) -> None:
    trained = tiny().eval()
    weights = tmp_path / "weights.pth"
    torch.save(trained.backbone.state_dict(), weights)  # a plain timm state dict

    net = tiny(pretrained=weights).eval()
    assert net.preprocessing == VGGFACE2
    assert net.weights_report is not None and net.weights_report.naming == "timm"
    assert net.weights_report.preprocessing is None
    with torch.no_grad():
        same = trained.backbone.forward_features(trained.normalize(images()))
        torch.testing.assert_close(net.backbone.forward_features(trained.normalize(images())), same)
    assert not torch.equal(net.backbone.fc.weight, trained.backbone.fc.weight)

    assert tiny(pretrained=weights, preprocessing="imagenet").preprocessing == IMAGENET
    assert tiny(preprocessing="vggface2").preprocessing == VGGFACE2


def test_a_ferlit_checkpoint_as_weights_keeps_its_own_preprocessing(tmp_path: Path) -> None:
    """A from-scratch (ImageNet, RGB) model fine-tuned further must not switch to BGR/VGGFace2."""
    trained = tiny().eval()
    checkpoint = tmp_path / "last.ckpt"
    # ferlit's own checkpoint: ExpressionModule keeps the ExpressionNet as ``net``
    state = {f"net.{k}": v for k, v in trained.state_dict().items()}
    torch.save({"state_dict": state, "hyper_parameters": {"pretrained": None}}, checkpoint)
    net = tiny(pretrained=checkpoint).eval()
    assert net.preprocessing == IMAGENET
    assert net.weights_report.naming == "ferlit-checkpoint"
    with torch.no_grad():
        torch.testing.assert_close(
            net.forward_features(images()), trained.forward_features(images())
        )

    recorded = Preprocessing("BGR", (1.0, 2.0, 3.0), (4.0, 5.0, 6.0))
    ferlit_entry = {"preprocessing": {"channel_order": "BGR", "mean": [1, 2, 3], "std": [4, 5, 6]}}
    torch.save({"state_dict": state, "ferlit": ferlit_entry}, checkpoint)
    assert tiny(pretrained=checkpoint).preprocessing == recorded


def test_set_preprocessing_replaces_the_normalisation_on_the_same_device_and_dtype() -> None:
    net = tiny().to(torch.float64)
    net.set_preprocessing(VGGFACE2)
    assert net.preprocessing == VGGFACE2
    assert net.normalize.mean.dtype == torch.float64
    assert net.normalize.mean.view(-1).tolist() == pytest.approx(VGGFACE2.mean)


def test_check_num_classes_names_the_option() -> None:
    from ferlit.expressions import EXPRESSIONS_8, check_num_classes, class_names

    assert check_num_classes("data.num_classes", 7) == 7 and check_num_classes("x", 8) == 8
    assert class_names(8) == EXPRESSIONS_8
    for bad in (6, 9, True, "7", None):
        with pytest.raises(ConfigError) as error:
            check_num_classes("data.num_classes", bad)
        assert str(error.value) == (
            f"data.num_classes must be 7 (ABAW 2020) or 8 (with Other, ABAW 2022+), got {bad!r}"
        )
