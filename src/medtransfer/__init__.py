"""medtransfer: transfer of self-supervised ImageNet models to medical imaging."""

__version__ = "0.1.0"
