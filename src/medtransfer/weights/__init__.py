"""Model weights: registry, download, conversion to torchvision layout, demo weights."""
