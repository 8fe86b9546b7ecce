"""Baseline structure featurisers: matminer's OFM and XRD pattern as scikit-learn transformers,
and composition features (Magpie) computed from structures, to put next to the DIM vector.

matminer's featurisers are close to scikit-learn estimators but not quite: ``transform`` returns a
list and turns failures into NaN rows, ``OrbitalFieldMatrix`` does not store ``period_tag`` and
``XRDPowderPattern`` hides its ``XRDCalculator`` arguments in ``**kwargs`` (both break
:func:`sklearn.base.clone`), and scikit-learn sees no transformer tags on them. The subclasses
here fix that and nothing else: the features are matminer's, and so are ``citations()``,
``implementors()`` and ``feature_labels()``.
"""

from __future__ import annotations

import functools
import traceback
import warnings
from collections.abc import Sequence
from numbers import Integral, Real
from typing import Any

import numpy as np
import pandas as pd
from joblib import Parallel, delayed, effective_n_jobs
from matminer.featurizers.base import BaseFeaturizer
from matminer.featurizers.composition import ElementProperty
from matminer.featurizers.structure import OrbitalFieldMatrix, XRDPowderPattern
from pymatgen.analysis.diffraction.xrd import XRDCalculator
from pymatgen.core import Element
from scipy.stats import gaussian_kde
from sklearn.base import TransformerMixin
from sklearn.utils import TransformerTags
from sklearn.utils._param_validation import Interval, StrOptions

from dimfeat.inputs import as_structure_list, check_geometry, check_structures, to_structure
from dimfeat.progress import progress_bar

__all__ = ["CompositionFeaturizer", "OrbitalFieldMatrixFeaturizer", "XRDPatternFeaturizer"]


class _StructureTransformerMixin(TransformerMixin):
    """The scikit-learn face shared by the baseline featurisers (put first in the bases).

    Deriving from ``TransformerMixin`` here lets scikit-learn wrap ``transform`` for
    ``set_output(transform="pandas")``.
    """

    #: Shadows matminer's read-only ``BaseFeaturizer.n_jobs`` property so that ``n_jobs`` can be
    #: an ordinary ``__init__`` parameter, stored as passed.
    n_jobs: int | None = None
    ignore_errors: bool = False

    def set_n_jobs(self, n_jobs: int | None) -> None:
        """Set ``n_jobs`` (matminer's spelling of ``set_params(n_jobs=...)``)."""
        self.n_jobs = n_jobs

    def fit(self, X: Sequence[Any], y: Any = None, **fit_kwargs: Any) -> Any:
        """Check the parameters and the input; nothing is learned.

        Parameters
        ----------
        X : sequence of structures
            Crystals, e.g. a list or a pandas Series, in any form
            :func:`dimfeat.inputs.to_structure` accepts (``Structure``, ``IStructure``,
            structure dicts, CIF/POSCAR text, file paths, ASE ``Atoms``); only their kinds are
            checked.
        y : None
            Ignored.
        **fit_kwargs : dict
            Ignored (matminer's signature).

        Returns
        -------
        self
        """
        self._validate_params()
        check_structures(X)
        return self

    def transform(self, X: Sequence[Any]) -> np.ndarray:
        """Featurise crystals.

        Parameters
        ----------
        X : sequence of structures of length n
            Crystals, e.g. a list, a 1-D object array or a pandas Series, in any form
            :func:`dimfeat.inputs.to_structure` accepts.

        Returns
        -------
        ndarray of shape (n, n_features), dtype float64
            One row per crystal; a row of NaN for a crystal that failed, when
            ``ignore_errors=True`` (otherwise the failure raises).
        """
        self._validate_params()
        structures = as_structure_list(X)
        rows = self.featurize_many(structures, ignore_errors=self.ignore_errors, pbar=False)
        n_features = len(self.feature_labels())
        return np.asarray(rows, dtype=np.float64).reshape(len(structures), n_features)

    def get_feature_names_out(self, input_features: Any = None) -> np.ndarray:
        """Feature names, matminer's ``feature_labels()``.

        Parameters
        ----------
        input_features : None
            Ignored (the input is a sequence of structures, not named columns).

        Returns
        -------
        ndarray of str objects of shape (n_features,)
        """
        return np.asarray(self.feature_labels(), dtype=object)

    def featurize_many(
        self,
        entries: Any,
        ignore_errors: bool = False,
        return_errors: bool = False,
        pbar: bool | dict = True,
    ) -> list:
        """matminer's ``featurize_many`` on joblib workers (see ``n_jobs``).

        Used by ``transform``, ``featurize_dataframe`` and matminer's other batch methods. Each
        entry is read by :func:`dimfeat.inputs.to_structure` first, so CIF text, paths,
        structure dicts and ASE ``Atoms`` work too; one that is not a crystal fails like any
        other entry, naming its position (a NaN row with ``ignore_errors=True``).
        """
        if return_errors and not ignore_errors:
            raise ValueError("Please set ignore_errors to True to use return_errors.")
        if not isinstance(entries, (tuple, list, np.ndarray, pd.Series, pd.DataFrame)):
            raise TypeError("'entries' must be a list-like object")
        if len(entries) == 0:
            return []
        if isinstance(entries, pd.DataFrame):
            rows = [tuple(row) for row in entries.to_numpy()]
        elif isinstance(entries, pd.Series) or not isinstance(
            entries[0], (tuple, list, np.ndarray)
        ):
            rows = [(entry,) for entry in entries]
        else:
            rows = [tuple(entry) for entry in entries]
        rows = progress_bar(pbar, desc=type(self).__name__, iterable=rows)
        work = functools.partial(
            self._featurize_row, ignore_errors=ignore_errors, return_errors=return_errors
        )
        if effective_n_jobs(self.n_jobs) == 1:
            return [work(k, row) for k, row in enumerate(rows)]
        return Parallel(n_jobs=self.n_jobs)(delayed(work)(k, row) for k, row in enumerate(rows))

    def _featurize_row(
        self, position: int, row: tuple, *, ignore_errors: bool, return_errors: bool
    ) -> list:
        """matminer's ``featurize_wrapper`` on the row, its entry read as a structure first."""
        try:
            structure = _crystal(row[0], position)
        except Exception:
            if not ignore_errors:
                raise
            features = [float("nan")] * len(self.feature_labels())
            return [*features, traceback.format_exc()] if return_errors else features
        return self.featurize_wrapper(
            (structure, *row[1:]), ignore_errors=ignore_errors, return_errors=return_errors
        )

    def __sklearn_tags__(self) -> Any:
        tags = super().__sklearn_tags__()
        # matminer lists BaseEstimator before TransformerMixin, so the mixin's tags are lost.
        tags.transformer_tags = TransformerTags(preserves_dtype=[])
        tags.requires_fit = False
        tags.input_tags.two_d_array = False
        return tags


def _crystal(entry: Any, index: int | None = None) -> Any:
    """The entry as a ``Structure`` with a finite, non-degenerate cell (matminer's featurisers
    crash the process on NaN coordinates, or fail with an unrelated message)."""
    return check_geometry(to_structure(entry, index), index)


@functools.lru_cache(maxsize=2)
def _one_hot_valence_vectors(period_tag: bool) -> dict[int, np.matrix]:
    """matminer's valence-shell vectors for Z = 1..94, computed once per ``period_tag``."""
    helper = OrbitalFieldMatrixFeaturizer(period_tag=period_tag)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*matrix subclass.*")
        return {z: np.matrix(helper.get_ohv(Element.from_Z(z), period_tag)) for z in range(1, 95)}


class OrbitalFieldMatrixFeaturizer(_StructureTransformerMixin, OrbitalFieldMatrix):
    """Orbital field matrix (OFM) of a crystal, flattened: a clone-safe scikit-learn transformer.

    Each element is a one-hot vector of its valence subshell occupations (32 entries, 39 with the
    period); a site's matrix sums the outer products with its Voronoi neighbours, weighted by
    solid angle over distance; the crystal's OFM is the mean over sites. This is matminer's
    :class:`~matminer.featurizers.structure.OrbitalFieldMatrix` with ``flatten=True``;
    ``period_tag`` is stored as passed and the element vectors are built on first use, so
    ``clone``, ``get_params`` and ``set_params`` round trip.

    Parameters
    ----------
    period_tag : bool, default=False
        Append the period to each element vector (39 x 39 = 1521 features instead of
        32 x 32 = 1024; lanthanides count as period 6, actinides as 7).
    n_jobs : int, default=None
        Processes used by ``transform`` and ``featurize_many`` (joblib's loky backend, whose
        workers are reused between calls; ``-1`` means all cores, ``None`` means 1 unless inside
        a ``joblib.parallel_config`` context). matminer's own default is a fresh
        ``multiprocessing.Pool`` over every core for each call, which takes seconds to start
        and costs more than it saves for a few hundred small cells.
    ignore_errors : bool, default=False
        Return a row of NaN for a crystal that fails (matminer's switch) instead of raising.

    Attributes
    ----------
    size : int
        Length of an element vector, 32 or 39 (from ``period_tag``).
    ohvs : dict of int to numpy.matrix of shape (1, size)
        The element vectors for Z = 1..94.
    flatten : bool
        Always True: the matrix comes out as a vector.

    See Also
    --------
    XRDPatternFeaturizer : the other structure baseline.

    Notes
    -----
    Features: ``OFM: {a} - {b}`` for subshell occupations ``a, b`` in ``s^1..s^2``,
    ``p^1..p^6``, ``d^1..d^10``, ``f^1..f^14`` (and ``period 1..7``), row-major over the
    ``size x size`` matrix; values in 1/bohr. As in matminer, the OFM is computed on a 3x3x3
    supercell for the symmetry-distinct sites only (``SpacegroupAnalyzer``, then ``VoronoiNN``
    with ``allow_pathological=True``), which costs from ~0.1 s for a one-site cell to several
    seconds for a 50-site one. Elements beyond Z = 94 fail.

    References
    ----------
    .. [1] T. Lam Pham et al., "Machine learning reveals orbital interaction in materials",
       Sci. Technol. Adv. Mater. 18, 756 (2017). doi:10.1080/14686996.2017.1378060

    Examples
    --------
    >>> from pymatgen.core import Lattice, Structure
    >>> from dimfeat.baselines import OrbitalFieldMatrixFeaturizer
    >>> cscl = Structure(Lattice.cubic(4.12), ["Cs", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]])
    >>> OrbitalFieldMatrixFeaturizer().fit_transform([cscl]).shape
    (1, 1024)
    """

    _parameter_constraints: dict = {  # noqa: RUF012 - scikit-learn's convention
        "period_tag": ["boolean"],
        "n_jobs": [Integral, None],
        "ignore_errors": ["boolean"],
    }

    flatten = True

    def __init__(
        self, period_tag: bool = False, *, n_jobs: int | None = None, ignore_errors: bool = False
    ) -> None:
        # matminer's __init__ builds the element table from period_tag and then forgets it;
        # here it is stored as passed and the table comes from ``ohvs`` on first use.
        self.period_tag = period_tag
        self.n_jobs = n_jobs
        self.ignore_errors = ignore_errors

    @property
    def size(self) -> int:
        return 39 if self.period_tag else 32

    @property
    def ohvs(self) -> dict[int, np.matrix]:
        return _one_hot_valence_vectors(bool(self.period_tag))

    def featurize(self, s: Any) -> np.ndarray:
        """OFM of one crystal, as a vector of length ``size**2``.

        ``s`` may be in any form :func:`dimfeat.inputs.to_structure` accepts.
        """
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*matrix subclass.*")
            return super().featurize(_crystal(s))


class XRDPatternFeaturizer(_StructureTransformerMixin, XRDPowderPattern):
    """Smoothed powder X-ray diffraction pattern: a clone-safe scikit-learn transformer.

    pymatgen's :class:`~pymatgen.analysis.diffraction.xrd.XRDCalculator` gives the peaks
    (intensities scaled to 100); each peak is repeated ``int(intensity)`` times, a Gaussian KDE
    with ``bw_method`` smooths them and the density is read at ``pattern_length`` evenly spaced
    angles over ``two_theta_range``. This is matminer's
    :class:`~matminer.featurizers.structure.XRDPowderPattern`, with the calculator's arguments as
    named parameters (matminer takes them as ``**kwargs``, which ``clone`` loses) and
    ``pattern_length`` stored as passed.

    Parameters
    ----------
    two_theta_range : tuple of (float, float), default=(0, 127)
        First and last diffraction angle 2θ, in degrees.
    bw_method : float or {"scott", "silverman"}, default=0.05
        Bandwidth of :class:`scipy.stats.gaussian_kde`.
    pattern_length : int, default=None
        Number of angles; ``None`` means one per degree, ``two_theta_range[1] -
        two_theta_range[0] + 1`` (128 with the default range).
    wavelength : str or float, default="CuKa"
        X-ray wavelength, a pymatgen key (``"CuKa"``, ``"MoKa"``, ...) or a value in Å.
    symprec : float, default=0
        Symmetry tolerance (Å) used to refine the cell first; 0 means no refinement.
    debye_waller_factors : dict of str to float, default=None
        Debye-Waller factors by element symbol, in Å^2.
    n_jobs : int, default=None
        Processes used by ``transform`` and ``featurize_many`` (joblib's loky backend, whose
        workers are reused between calls; ``-1`` means all cores, ``None`` means 1 unless inside
        a ``joblib.parallel_config`` context). matminer's own default is a fresh
        ``multiprocessing.Pool`` over every core for each call, which takes seconds to start
        and costs more than it saves for a few hundred small cells.
    ignore_errors : bool, default=False
        Return a row of NaN for a crystal that fails (matminer's switch) instead of raising.

    Attributes
    ----------
    xrd_calc : XRDCalculator
        A calculator built from ``wavelength``, ``symprec`` and ``debye_waller_factors``.

    See Also
    --------
    OrbitalFieldMatrixFeaturizer : the other structure baseline.

    Notes
    -----
    Features: ``xrd_0 ... xrd_{pattern_length - 1}``, the smoothed intensity (a probability
    density over 2θ, per degree) at each angle. A few ms to tens of ms per crystal. A crystal
    whose pattern has fewer than two distinct peaks of intensity >= 1 in the range fails (the KDE
    is singular).

    References
    ----------
    .. [1] S. P. Ong et al., "Python Materials Genomics (pymatgen): a robust, open-source python
       library for materials analysis", Comput. Mater. Sci. 68, 314 (2013).
       doi:10.1016/j.commatsci.2012.10.028

    Examples
    --------
    >>> from pymatgen.core import Lattice, Structure
    >>> from dimfeat.baselines import XRDPatternFeaturizer
    >>> cscl = Structure(Lattice.cubic(4.12), ["Cs", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]])
    >>> XRDPatternFeaturizer().fit_transform([cscl]).shape
    (1, 128)
    """

    _parameter_constraints: dict = {  # noqa: RUF012 - scikit-learn's convention
        "two_theta_range": [tuple, list],
        "bw_method": [
            Interval(Real, 0, None, closed="neither"),
            StrOptions({"scott", "silverman"}),
        ],
        "pattern_length": [Interval(Integral, 2, None, closed="left"), None],
        "wavelength": [str, Interval(Real, 0, None, closed="neither")],
        "symprec": [Interval(Real, 0, None, closed="left")],
        "debye_waller_factors": [dict, None],
        "n_jobs": [Integral, None],
        "ignore_errors": ["boolean"],
    }

    def __init__(
        self,
        two_theta_range: tuple[float, float] = (0, 127),
        bw_method: float | str = 0.05,
        pattern_length: int | None = None,
        *,
        wavelength: str | float = "CuKa",
        symprec: float = 0,
        debye_waller_factors: dict[str, float] | None = None,
        n_jobs: int | None = None,
        ignore_errors: bool = False,
    ) -> None:
        self.two_theta_range = two_theta_range
        self.bw_method = bw_method
        self.pattern_length = pattern_length
        self.wavelength = wavelength
        self.symprec = symprec
        self.debye_waller_factors = debye_waller_factors
        self.n_jobs = n_jobs
        self.ignore_errors = ignore_errors

    def _validate_params(self) -> None:
        super()._validate_params()
        low, high = self.two_theta_range
        if not 0 <= low < high <= 180:
            raise ValueError(
                f"two_theta_range must be (low, high) with 0 <= low < high <= 180 degrees, "
                f"got {self.two_theta_range!r}."
            )

    @property
    def xrd_calc(self) -> XRDCalculator:
        return XRDCalculator(
            wavelength=self.wavelength,
            symprec=self.symprec,
            debye_waller_factors=self.debye_waller_factors,
        )

    def _n_angles(self) -> int:
        if self.pattern_length is not None:
            return int(self.pattern_length)
        low, high = self.two_theta_range
        return int(high - low + 1)

    def featurize(self, strc: Any) -> np.ndarray:
        """Smoothed pattern of one crystal, a vector of length ``pattern_length``.

        ``strc`` may be in any form :func:`dimfeat.inputs.to_structure` accepts.
        """
        low, high = self.two_theta_range
        pattern = self.xrd_calc.get_pattern(_crystal(strc), two_theta_range=(low, high))
        hist: list[float] = []
        for angle, intensity in zip(pattern.x, pattern.y, strict=True):
            hist += [angle] * int(intensity)
        kernel = gaussian_kde(hist, bw_method=self.bw_method)
        return kernel(np.linspace(low, high, self._n_angles()))

    def feature_labels(self) -> list[str]:
        return [f"xrd_{i}" for i in range(self._n_angles())]


#: Presets of matminer's :class:`~matminer.featurizers.composition.ElementProperty`.
ELEMENT_PROPERTY_PRESETS = frozenset({"magpie", "deml", "matminer", "matscholar_el", "megnet_el"})


@functools.lru_cache(maxsize=len(ELEMENT_PROPERTY_PRESETS))
def _element_property(preset: str) -> ElementProperty:
    return ElementProperty.from_preset(preset)


class CompositionFeaturizer(_StructureTransformerMixin, BaseFeaturizer):
    """Composition features of a crystal structure: a clone-safe scikit-learn transformer.

    matminer's :class:`~matminer.featurizers.composition.ElementProperty` (Magpie by default:
    minimum, maximum, range, mean, average deviation and mode of 22 element properties, 132
    features) applied to each structure's composition. matminer's own featuriser takes
    compositions, so it cannot sit next to :class:`dimfeat.DeepInfoMaxFeaturizer`, which takes
    structures, in a ``FeatureUnion`` or a ``MultipleFeaturizer``; this one can::

        FeatureUnion([("dim", DeepInfoMaxFeaturizer()), ("magpie", CompositionFeaturizer())])

    Parameters
    ----------
    preset : {"magpie", "deml", "matminer", "matscholar_el", "megnet_el"}, default="magpie"
        matminer's ``ElementProperty.from_preset`` name.
    n_jobs : int, default=None
        Processes used by ``transform`` and ``featurize_many`` (joblib; ``None`` means 1).
    ignore_errors : bool, default=False
        Return a row of NaN for a crystal that fails instead of raising.

    See Also
    --------
    dimfeat.DeepInfoMaxFeaturizer : the learned structure vector to combine these with.

    Notes
    -----
    Feature names are matminer's (``MagpieData mean Electronegativity``, ...); ``citations()``
    and ``implementors()`` are those of the preset. Elements without data for a property give
    NaN, as in matminer.

    Examples
    --------
    >>> from pymatgen.core import Lattice, Structure
    >>> from dimfeat.baselines import CompositionFeaturizer
    >>> cscl = Structure(Lattice.cubic(4.12), ["Cs", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]])
    >>> CompositionFeaturizer().fit_transform([cscl]).shape
    (1, 132)
    """

    _parameter_constraints: dict = {  # noqa: RUF012 - scikit-learn's convention
        "preset": [StrOptions(set(ELEMENT_PROPERTY_PRESETS))],
        "n_jobs": [Integral, None],
        "ignore_errors": ["boolean"],
    }

    def __init__(
        self, preset: str = "magpie", *, n_jobs: int | None = None, ignore_errors: bool = False
    ) -> None:
        self.preset = preset
        self.n_jobs = n_jobs
        self.ignore_errors = ignore_errors

    @property
    def element_property(self) -> ElementProperty:
        """matminer's featuriser of the preset (built once per preset)."""
        self._validate_params()
        return _element_property(self.preset)

    def featurize(self, s: Any) -> list[float]:
        """Composition features of one crystal.

        ``s`` may be in any form :func:`dimfeat.inputs.to_structure` accepts.
        """
        return self.element_property.featurize(to_structure(s).composition)

    def feature_labels(self) -> list[str]:
        return self.element_property.feature_labels()

    def citations(self) -> list[str]:
        return self.element_property.citations()

    def implementors(self) -> list[str]:
        return self.element_property.implementors()
