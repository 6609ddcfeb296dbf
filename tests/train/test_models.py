"""Encoders, heads and the embedder: shapes, normalisation, freezing, and the paper's SmallAlexNet layout."""

from __future__ import annotations

import pytest
import torch

from contrasphere.train.models import (
    Embedder,
    GlobalBatchNorm,
    ProjectionHead,
    SmallAlexNet,
    build_encoder,
    convert_global_batchnorm,
)


@pytest.mark.parametrize(
    ("name", "kwargs", "shape", "dim"),
    [
        ("small_convnet", {"in_channels": 1, "image_size": 8, "widths": (8, 16)}, (4, 1, 8, 8), 16),
        ("small_alexnet", {"image_size": 32}, (4, 3, 32, 32), 4096),
        ("small_alexnet", {"image_size": 64}, (2, 3, 64, 64), 4096),
    ],
)
def test_encoders_give_their_feature_dim(name, kwargs, shape, dim):
    encoder = build_encoder(name, **kwargs)
    assert encoder.feature_dim == dim
    assert encoder(torch.randn(shape)).shape == (shape[0], dim)


def test_cifar_resnet18_keeps_the_resolution_in_the_stem():
    pytest.importorskip("torchvision")
    net = build_encoder("resnet18_cifar")
    assert net.conv1.stride == (1, 1) and net.conv1.kernel_size == (3, 3) and isinstance(net.maxpool, torch.nn.Identity)
    assert net(torch.randn(2, 3, 32, 32)).shape == (2, 512)


def test_small_alexnet_is_the_papers_layout():
    net = SmallAlexNet(image_size=64)
    convs = [m for m in net.convs.modules() if isinstance(m, torch.nn.Conv2d)]
    assert [c.out_channels for c in convs] == [96, 192, 384, 384, 192]
    assert net.fc[1].in_features == 192 * 7 * 7  # the paper's fc6 input for 64-px crops


def test_embedder_outputs_unit_vectors_and_freezes_its_encoder():
    encoder = build_encoder("small_convnet", in_channels=1, image_size=8, widths=(8,))
    model = Embedder(encoder, ProjectionHead(8, 3, "mlp", 16), frozen_encoder=True)
    z = model(torch.randn(5, 1, 8, 8))
    torch.testing.assert_close(z.norm(dim=1), torch.ones(5))
    z.sum().backward()
    assert all(p.grad is None for p in encoder.parameters())
    assert all(p.grad is not None for p in model.head.parameters())
    with pytest.raises(ValueError, match="head must be"):
        ProjectionHead(8, 3, "deep")
    with pytest.raises(ValueError, match="did you mean small_convnet"):
        build_encoder("small_convnt")


def test_global_batchnorm_is_batchnorm_outside_a_process_group():
    torch.manual_seed(0)
    net = torch.nn.Sequential(
        torch.nn.Conv2d(2, 4, 3), torch.nn.BatchNorm2d(4), torch.nn.Flatten(), torch.nn.BatchNorm1d(16)
    )
    x = torch.randn(6, 2, 4, 4)
    expected = net(x)
    converted = convert_global_batchnorm(net)
    assert isinstance(converted[1], GlobalBatchNorm) and isinstance(converted[3], GlobalBatchNorm)
    torch.testing.assert_close(converted(x), expected)
