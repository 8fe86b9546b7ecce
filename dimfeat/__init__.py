"""dimfeat: learned crystal feature vectors from a Site-Net encoder trained by Deep InfoMax.

Public names: :class:`DeepInfoMaxFeaturizer` (scikit-learn transformer and matminer featuriser),
:class:`SiteNetRegressor` (the encoder fine-tuned with a regression head, a scikit-learn
regressor), :class:`LargeCellWarning` (structures larger than ``max_atoms``, one warning per call)
and ``__version__``. Baselines live in :mod:`dimfeat.baselines`, datasets in
:mod:`dimfeat.datasets`. Both estimators are imported on first use, so that the training core
(:mod:`dimfeat.training`, the ``dimfeat train`` command on a cached input file) runs with only
torch, numpy and safetensors installed.
"""

from typing import TYPE_CHECKING

from dimfeat._version import __version__
from dimfeat._warnings import LargeCellWarning

if TYPE_CHECKING:
    from dimfeat.featurizer import DeepInfoMaxFeaturizer
    from dimfeat.regressor import SiteNetRegressor

__all__ = ["DeepInfoMaxFeaturizer", "LargeCellWarning", "SiteNetRegressor", "__version__"]


def __getattr__(name: str):
    if name == "DeepInfoMaxFeaturizer":
        from dimfeat.featurizer import DeepInfoMaxFeaturizer

        return DeepInfoMaxFeaturizer
    if name == "SiteNetRegressor":
        from dimfeat.regressor import SiteNetRegressor

        return SiteNetRegressor
    raise AttributeError(f"module 'dimfeat' has no attribute {name!r}")
