"""cnnkit: the classic convolutional-network playbook as one command-line toolkit."""

from cnnkit.core.base.version import __version__

__all__ = ["__version__"]
