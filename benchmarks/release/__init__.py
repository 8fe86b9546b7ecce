"""Releasing weights and data: the bundled sample, the train-split probe curve that chooses an
epoch, and the bundling of the chosen epoch as a weights folder (docs/training.md)."""
