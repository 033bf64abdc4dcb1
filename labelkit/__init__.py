"""labelkit: label a few images, let semi-supervised learning do the rest."""

__version__ = "0.1.0"
