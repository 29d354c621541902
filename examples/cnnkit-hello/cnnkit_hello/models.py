"""LeNet-5: two 5x5 convolutions with subsampling, then three fully connected layers."""

from torch import nn


def lenet5(*, num_classes: int = 10, in_channels: int = 3) -> nn.Module:
    """LeNet-5 for 32x32 inputs (tanh and average pooling as in the paper)."""
    return nn.Sequential(
        nn.Conv2d(in_channels, 6, 5), nn.Tanh(), nn.AvgPool2d(2),
        nn.Conv2d(6, 16, 5), nn.Tanh(), nn.AvgPool2d(2),
        nn.Flatten(),
        nn.Linear(16 * 5 * 5, 120), nn.Tanh(),
        nn.Linear(120, 84), nn.Tanh(),
        nn.Linear(84, num_classes),
    )
