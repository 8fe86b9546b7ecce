"""The Site-Net encoder: one attention block, one head, and the DIM representation heads.

Data flow (SPEC section 2), with ``S`` unique sites in a batch and ``M`` supercell atoms each::

    atomic numbers --table--> site features (9) --Linear/Mish/LayerNorm--> x (64)
    distances --Gaussian basis (n_gaussians)--Linear/Mish/LayerNorm--> e (64)
    bond b_ij = [x_i, x_j, e_ij] (192)
    attention a_ij = softmax_j MLP[64]->1 (b_ij);  values v_ij = MLP[64, 64] (b_ij)
    local environment s_i = sum_j a_ij v_ij (64) -> mu_local, logvar_local (32)
    pre-pooling MLP[64, 128] (mu_local) -> mean over each crystal's sites
        -> post-pooling MLP[64] -> mu_global, logvar_global (128, the crystal vector)

The global part reads ``mu_local`` through :meth:`SiteNetEncoder.encode_global`, which the DIM
objective calls on a detached tensor so that the global loss never trains the local encoder.
"""

from __future__ import annotations

import contextlib
import itertools
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field

import numpy as np
import torch
from torch import nn

from dimfeat._workers import one_thread_in_forked_children
from dimfeat.elements import SITE_FEATURES, element_table, standardisation
from dimfeat.inputs import Batch

__all__ = [
    "DISTANCE_EXPANSIONS",
    "DISTANCE_INPUTS",
    "EncoderConfig",
    "GaussianBasis",
    "SiteNetEncoder",
    "composition_memo",
    "mlp",
    "pair_tables_of",
]

#: Ways to present a distance to the distance embedding.
DISTANCE_EXPANSIONS = ("gaussian", "linear")
#: Whether the bonds see distances: ``"distances"`` (Site-Net) or ``"none"`` (a context
#: encoder whose vector is a function of the composition alone).
DISTANCE_INPUTS = ("distances", "none")

#: (site, atom) pairs per chunk of :meth:`SiteNetEncoder.forward`: each site's local environment
#: depends on its own row only, so a batch with more pairs is encoded a few sites at a time, which
#: bounds the activations (about 2.5 KB per pair) of very large cells. 16,384 pairs keep each
#: activation at 4 MB, in cache; 65,536 (16 MB) made every element-wise pass run at memory speed
#: (docs/reliability.md).
CHUNK_PAIRS = 16_384
#: Above this fraction of distinct bonds among the pairs, the encoder goes pair by pair (see
#: :meth:`SiteNetEncoder._encode_local_distinct_bonds`): finding the distinct bonds costs a sort,
#: a few per cent of encoding the pairs, and encoding them costs gathers that pay only when
#: bonds repeat (a large cell with no symmetry repeats almost none). 0 switches the distinct-bond
#: path off (the benchmarks compare the two paths so).
DISTINCT_BONDS_FRACTION = 0.8
#: Smallest exponent of :class:`GaussianBasis`: ``exp(-87)`` is about 1.6e-38, the bottom of
#: the normal float32 range (a basis value that small adds nothing to the layer's output).
UNDERFLOW_EXPONENT = -87.0
#: Compositions per block of a context encoder (``distance_input="none"``): every block has
#: this many rows (padded), and species padded to a multiple of :data:`COMPOSITION_WIDTH` set
#: by the composition itself, so a composition's vector does not depend on the rest of the call.
COMPOSITION_BLOCK = 32
#: Species of a composition are padded to a multiple of this many (see
#: :data:`COMPOSITION_BLOCK`).
COMPOSITION_WIDTH = 8


@dataclass(frozen=True)
class EncoderConfig:
    """Architecture of :class:`SiteNetEncoder`; saved in every weights folder's ``config.json``.

    Parameters
    ----------
    embed_dim : int, default=64
        Width of the site and distance embeddings.
    attention_hidden : tuple of int, default=(64,)
        Hidden layers of the attention-logit MLP.
    value_hidden : tuple of int, default=(64, 64)
        Layers of the value MLP (its last entry is the local-environment width).
    local_dim : int, default=32
        Width of the local representation ``mu_local``.
    prepool_hidden : tuple of int, default=(64, 128)
        Layers of the pre-pooling MLP.
    postpool_hidden : tuple of int, default=(64,)
        Layers of the post-pooling MLP.
    global_dim : int, default=128
        Length of the crystal vector.
    site_features : tuple of str
        Names of the site features (see :data:`dimfeat.elements.SITE_FEATURES`).
    distance_expansion : {"gaussian", "linear"}, default="gaussian"
        How a distance enters the distance embedding. ``"gaussian"``: a fixed basis of
        ``n_gaussians`` Gaussians with centres evenly spaced on ``[0, distance_cutoff]`` Å and
        a width of one spacing (:class:`GaussianBasis`), then Linear/Mish/LayerNorm.
        ``"linear"``: the paper's single linear input, Linear(1 -> 64)/Mish/LayerNorm. The
        linear form is nearly blind beyond about 4 Å: the LayerNorm divides out the scale of
        ``w * d``, so in the weights bundled before this option the centred embeddings of 5.6 and
        8.0 Å agree to a cosine of 0.96 (``distance_resolution`` in
        ``benchmarks/paper/geometry.py``;
        see the training docs). Weights saved before this option existed use it.
    n_gaussians : int, default=32
        Size of the Gaussian basis.
    distance_cutoff : float, default=8.0
        Last Gaussian centre (Å); farther atoms all look "far".
    distance_input : {"distances", "none"}, default="distances"
        ``"none"``: the bonds are ``[x_i, x_j]`` with no distance embedding, so attention and
        values depend only on the species of sites ``i`` and ``j``; the supercell holds the
        species in the proportions of the composition, so the vector is a function of the
        composition alone. :meth:`SiteNetEncoder.forward` then computes it from the
        composition (:meth:`SiteNetEncoder.encode_composition`), once per distinct composition
        of a call, so that equal compositions give bit-identical vectors. The distance
        settings are then unused. Left out of :meth:`to_dict` at its default, so the configs
        and digests of weights saved before the option are unchanged.
    """

    embed_dim: int = 64
    attention_hidden: tuple[int, ...] = (64,)
    value_hidden: tuple[int, ...] = (64, 64)
    local_dim: int = 32
    prepool_hidden: tuple[int, ...] = (64, 128)
    postpool_hidden: tuple[int, ...] = (64,)
    global_dim: int = 128
    site_features: tuple[str, ...] = field(default=SITE_FEATURES)
    distance_expansion: str = "gaussian"
    n_gaussians: int = 32
    distance_cutoff: float = 8.0
    distance_input: str = "distances"

    def __post_init__(self) -> None:
        if self.distance_input not in DISTANCE_INPUTS:
            raise ValueError(
                f"distance_input must be one of {DISTANCE_INPUTS}, got {self.distance_input!r}"
            )
        if self.distance_expansion not in DISTANCE_EXPANSIONS:
            raise ValueError(
                f"distance_expansion must be one of {DISTANCE_EXPANSIONS}, "
                f"got {self.distance_expansion!r}"
            )
        for name in ("embed_dim", "local_dim", "global_dim", "n_gaussians"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        for name in ("attention_hidden", "value_hidden", "prepool_hidden", "postpool_hidden"):
            widths = tuple(getattr(self, name))
            if not widths or any(
                isinstance(w, bool) or not isinstance(w, int) or w < 1 for w in widths
            ):
                raise ValueError(
                    f"{name} must be one or more positive integer widths, got {list(widths)}"
                )

    def to_dict(self) -> dict:
        """JSON-ready dictionary (tuples become lists; ``distance_input`` only when not
        ``"distances"``)."""
        data = {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}
        if data["distance_input"] == "distances":
            del data["distance_input"]
        return data

    @classmethod
    def from_dict(cls, data: dict) -> EncoderConfig:
        """Inverse of :meth:`to_dict`; unknown keys raise ``TypeError``.

        A dictionary without ``distance_expansion`` was written before the option existed and
        describes the linear distance input.
        """
        data = {"distance_expansion": "linear", **data}
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in data.items()})


class GaussianBasis(nn.Module):
    """Fixed Gaussian expansion of distances: ``exp(-((d - mu_k) / sigma)^2 / 2)``.

    Parameters
    ----------
    n : int
        Number of Gaussians; centres ``mu_k`` evenly spaced on ``[0, cutoff]``.
    cutoff : float
        Last centre (Å); the width ``sigma`` is one spacing.
    """

    def __init__(self, n: int, cutoff: float) -> None:
        super().__init__()
        if n < 2 or not cutoff > 0:
            raise ValueError(f"need n >= 2 Gaussians and cutoff > 0, got {n} and {cutoff}")
        # computed on the CPU, then moved to the default device: on the meta device (the weights
        # check builds the encoder there, allocating nothing) torch's linspace runs a Python
        # shape check that imports sympy, 0.5-0.8 s of a fresh process's first transform
        centres = torch.linspace(0.0, float(cutoff), n, device="cpu")
        self.register_buffer("centres", centres.to(torch.empty(0).device), persistent=False)
        self.width = float(cutoff) / (n - 1)

    def forward(self, distances: torch.Tensor) -> torch.Tensor:
        """(...) distances in Å -> (..., n) basis values (those under ``exp(-87)``, about
        1.6e-38, raised to it; see :data:`UNDERFLOW_EXPONENT`)."""
        # in place after the first step: distances are data, never differentiated. Exponents
        # below UNDERFLOW_EXPONENT are raised to it: their exp is under 1e-38 either way
        # (nothing beside the layer's bias), and the vectorised exp of float32 slows down
        # several fold on arguments past the underflow (48 ms -> 12 ms on 1,000 crystals).
        z = (distances.unsqueeze(-1) - self.centres).div_(self.width)
        return z.square_().mul_(-0.5).clamp_min_(UNDERFLOW_EXPONENT).exp_()


def _mish_inference(x: torch.Tensor) -> torch.Tensor:
    """``x * tanh(softplus(x))`` as ``x (2 / (1 + u^2) - 1)`` with ``u = sigmoid(-x)``, one new
    tensor.

    From ``tanh(log(1 + e)) = ((1 + e)^2 - 1) / ((1 + e)^2 + 1)`` and ``1 / (1 + e) = u``: one
    sigmoid instead of the three transcendental functions of ``torch.nn.functional.mish``, and
    every later step in place. torch's vectorised float32 sigmoid is cheaper than its ``exp``,
    and does not slow down where ``e^x`` overflows or underflows. ``u`` is formed as
    ``sigmoid(x) - 1`` (its sign squares away). The absolute difference from
    ``torch.nn.functional.mish`` is within ``4e-7 |x|`` (tested on [-120, 120]): the sigmoid's
    own rounding and, for very negative ``x``, where Mish is nearly 0, the cancellation of the
    form; large ``x`` and ``+inf`` give ``x`` exactly. For tensors that need no gradient.
    """
    r = torch.sigmoid(x).sub_(1.0).square_().add_(1.0).reciprocal_()  # 1 / (1 + u^2)
    return r.mul_(2.0).sub_(1.0).mul_(x)


class Mish(nn.Module):
    """Mish activation (Misra 2019): ``torch.nn.functional.mish`` when autograd records the
    call (training), and the faster :func:`_mish_inference` otherwise (``transform``,
    validation, ``torch.no_grad`` or inference mode). State-free, like ``torch.nn.Mish``, so
    weights saved with either load into the other."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if torch.is_grad_enabled() and x.requires_grad:
            return nn.functional.mish(x)
        return _mish_inference(x)


def mlp(sizes: list[int] | tuple[int, ...], *, final_activation: bool = True) -> nn.Sequential:
    """Linear -> Mish -> LayerNorm for each consecutive pair of ``sizes``.

    With ``final_activation=False`` the last layer is a plain Linear.
    """
    layers: list[nn.Module] = []
    for k, (n_in, n_out) in enumerate(itertools.pairwise(sizes)):
        layers.append(nn.Linear(n_in, n_out))
        if final_activation or k < len(sizes) - 2:
            layers += [Mish(), nn.LayerNorm(n_out)]
    return nn.Sequential(*layers)


class SiteNetEncoder(nn.Module):
    """Site-Net encoder mapping a :class:`~dimfeat.inputs.Batch` to crystal vectors.

    Parameters
    ----------
    config : EncoderConfig, optional
        Architecture; the paper's by default.
    feature_mean, feature_std : array-like of shape (9,), optional
        Standardisation of the site features; by default the per-element statistics of
        :func:`dimfeat.elements.standardisation`.
    raw_table : array-like of shape (MAX_Z + 1, 9), optional
        Raw element table; by default :func:`dimfeat.elements.element_table`. Loading saved
        weights overwrites the standardised table with the saved one, so saved models do not
        depend on the installed matminer's element data.
    """

    def __init__(
        self,
        config: EncoderConfig | None = None,
        feature_mean: np.ndarray | None = None,
        feature_std: np.ndarray | None = None,
        raw_table: np.ndarray | None = None,
    ) -> None:
        super().__init__()
        one_thread_in_forked_children()  # forked workers must not enter torch's OpenMP pool
        self.config = config = config or EncoderConfig()
        n_features = len(config.site_features)
        if feature_mean is None or feature_std is None:
            feature_mean, feature_std = standardisation()
        raw = element_table() if raw_table is None else np.asarray(raw_table, dtype=np.float64)
        table = (raw - np.asarray(feature_mean)) / np.asarray(feature_std)
        table[0] = 0.0  # padding row
        self.register_buffer("element_features", torch.tensor(table, dtype=torch.float32))
        self.register_buffer("feature_mean", torch.tensor(feature_mean, dtype=torch.float32))
        self.register_buffer("feature_std", torch.tensor(feature_std, dtype=torch.float32))

        d = config.embed_dim
        self.site_embedding = mlp([n_features, d])
        n_bond = 3 * d
        if config.distance_expansion == "gaussian":
            self.distance_basis: nn.Module | None = GaussianBasis(
                config.n_gaussians, config.distance_cutoff
            )
            self.distance_embedding: nn.Module | None = mlp([config.n_gaussians, d])
        else:
            self.distance_basis = None
            self.distance_embedding = mlp([1, d])
        if config.distance_input == "none":  # no distance embedding (the basis has no
            self.distance_embedding = None  # parameters: the DIM critic still reads it)
            n_bond = 2 * d
        self.attention = mlp([n_bond, *config.attention_hidden, 1], final_activation=False)
        self.values = mlp([n_bond, *config.value_hidden])
        env_dim = config.value_hidden[-1]
        self.local_mu = nn.Linear(env_dim, config.local_dim)
        self.local_logvar = nn.Linear(env_dim, config.local_dim)
        self.prepool = mlp([config.local_dim, *config.prepool_hidden])
        self.postpool = mlp([config.prepool_hidden[-1], *config.postpool_hidden])
        self.global_mu = nn.Linear(config.postpool_hidden[-1], config.global_dim)
        self.global_logvar = nn.Linear(config.postpool_hidden[-1], config.global_dim)
        #: Within :func:`composition_memo`: what a context encoder has computed in this call.
        self._memo: _CompositionMemo | None = None

    # -- local part ---------------------------------------------------------------------------
    def expand_distances(self, distances: torch.Tensor) -> torch.Tensor:
        """(...) distances in Å -> (..., n_gaussians) basis, or (..., 1) for the linear input."""
        if self.distance_basis is None:
            return distances.unsqueeze(-1)
        return self.distance_basis(distances)

    def site_features(self, species: torch.Tensor) -> torch.Tensor:
        """Standardised site features of atomic numbers ``species`` (any shape) -> (..., 9)."""
        return self.element_features[species]

    def embed_distances(self, expanded: torch.Tensor) -> torch.Tensor:
        """Distance embedding ``e`` (..., embed_dim) of :meth:`expand_distances` output; a
        zero-width tensor (..., 0) for ``distance_input="none"``, which has none."""
        if self.distance_embedding is None:
            return expanded.new_zeros((*expanded.shape[:-1], 0))
        return self.distance_embedding(expanded)

    def encode_local(
        self,
        site_species: torch.Tensor,
        neighbour_species: torch.Tensor,
        distances: torch.Tensor,
        mask: torch.Tensor,
        *,
        embedded_distances: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Local environments of ``S`` sites.

        Parameters
        ----------
        site_species : LongTensor (S,)
        neighbour_species : LongTensor (S, M)
        distances : FloatTensor (S, M), Å
        mask : BoolTensor (S, M)
        embedded_distances : FloatTensor (S, M, embed_dim), optional
            ``embed_distances(expand_distances(distances))`` when the caller has it already;
            the bonds are then encoded pair by pair. Without it, on the CPU, each distinct bond
            is encoded once (:meth:`_encode_local_distinct_bonds`), with or without autograd.

        Returns
        -------
        mu_local, logvar_local : FloatTensor (S, local_dim)
        """
        if (
            embedded_distances is None
            and self.distance_embedding is not None
            and distances.device.type == "cpu"
            and distances.dtype == torch.float32  # the distance's bits are part of a key
        ):
            found = self._encode_local_distinct_bonds(
                site_species, neighbour_species, distances, mask
            )
            if found is not None:
                return found
        # The site embedding depends only on the element: embed the element table once and
        # gather. The first layers of the attention and value MLPs act on the bond
        # b_ij = [x_i, x_j, e_ij]; their weight splits into three blocks so that the x_i part
        # is computed per site, the x_j part per element, and only the e_ij part per bond.
        # Same function and same parameters as the concatenated form, a fraction of the cost.
        elements = self.site_embedding(self.element_features)  # (Z, d)
        x_i = elements[site_species]  # (S, d)
        if self.distance_embedding is None:  # distance_input="none": bonds [x_i, x_j]
            embedded_distances = None
        elif embedded_distances is None:
            embedded_distances = self.embed_distances(self.expand_distances(distances))
        e_ij = embedded_distances  # (S, M, d)
        logits = _bond_mlp(self.attention, x_i, elements, neighbour_species, e_ij).squeeze(-1)
        logits = logits.masked_fill(~mask, torch.finfo(logits.dtype).min)
        weights = torch.softmax(logits, dim=-1)
        values = _bond_mlp(self.values, x_i, elements, neighbour_species, e_ij)
        environment = torch.einsum("sm,smd->sd", weights, values)
        return self.local_mu(environment), self.local_logvar(environment)

    def _encode_local_distinct_bonds(
        self,
        site_species: torch.Tensor,
        neighbour_species: torch.Tensor,
        distances: torch.Tensor,
        mask: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor] | None:
        """:meth:`encode_local` computing each distinct bond once (on the CPU, in inference and
        in training alike), or ``None`` when more than :data:`DISTINCT_BONDS_FRACTION` of the
        pairs are distinct.

        A bond's attention logit and value are functions of (site species, neighbour species,
        distance) alone, and a crystal repeats these triples: equal distances to symmetric
        neighbours, the pair ``(i, j)`` seen again from ``j``. On 1,000 crystals of the mp36k test
        split 62 % of the (site, atom) pairs are distinct triples, and 43 % distinct distances
        (``python -m benchmarks.perf.distinct_bonds``).
        So the distance embedding runs once per distinct distance (float32 values compared bit
        for bit), the bond MLPs once per distinct triple, and each site's attention-weighted
        sum is one weighted gather-and-sum (``embedding_bag``). The first layer of the attention
        and of the value MLP is one summing gather each, its terms added in :func:`_bond_mlp`'s
        order: the vectors differ from the pair-by-pair path only by the float rounding of a
        different summation order. Under autograd the gradients are those of the pair path too: each
        distinct bond's gradient is the sum over the pairs it stands for.
        """
        if DISTINCT_BONDS_FRACTION <= 0:  # the distinct-bond path switched off
            return None
        n_rows, width = mask.shape
        # the real pairs, row by row, as positions in the flattened (S, M) arrays: 1-d gathers
        # instead of 2-d boolean and advanced indexing
        flat = mask.reshape(-1).nonzero().squeeze(1)
        rows = torch.div(flat, width, rounding_mode="floor")
        z_i = site_species.index_select(0, rows)
        z_j = neighbour_species.reshape(-1).index_select(0, flat)
        bits = distances.reshape(-1).index_select(0, flat).view(torch.int32).long()
        z_bits = max(1, (len(self.element_features) - 1).bit_length())
        key = (bits << (2 * z_bits)) | (z_i << z_bits) | z_j  # equal floats <=> equal bits
        triples, pair_triple = torch.unique(key, return_inverse=True)  # sorted by distance first
        if len(triples) > DISTINCT_BONDS_FRACTION * len(key):
            return None  # too few repeats to pay for the gathers: the pair-by-pair path
        z_mask = (1 << z_bits) - 1
        lengths, triple_length = torch.unique_consecutive(
            triples >> (2 * z_bits), return_inverse=True
        )
        embedded = self.embed_distances(self.expand_distances(lengths.int().view(torch.float32)))
        elements = self.site_embedding(self.element_features)  # (Z, d)
        n_lengths, n_elements = len(lengths), len(elements)
        rows_of_terms = torch.stack(
            [
                triple_length,
                (triples & z_mask) + n_lengths,
                ((triples >> z_bits) & z_mask) + (n_lengths + n_elements),
            ],
            dim=1,
        )

        def first_layer(net: nn.Sequential) -> torch.Tensor:
            """``net[1](net[0](b))`` of each distinct bond ``b``: the first layer's
            e-term[length] + j-term[z_j] + i-term[z_i], added in that order (the order of
            :func:`_bond_mlp`) by one summing gather over the terms' rows stacked in one table,
            then the activation. Contiguous, for the LayerNorm that follows."""
            w_i, w_j, w_e = net[0].weight.split(embedded.shape[-1], dim=1)
            table = torch.cat([embedded @ w_e.T, elements @ w_j.T, elements @ w_i.T + net[0].bias])
            return net[1](nn.functional.embedding_bag(rows_of_terms, table, mode="sum"))

        triple_logits = self.attention[2:](first_layer(self.attention)).squeeze(-1)  # (T,)
        triple_values = self.values[2:](first_layer(self.values))  # (T, env_dim)
        logits = triple_logits.new_full((n_rows * width,), torch.finfo(triple_logits.dtype).min)
        logits = logits.index_copy(0, flat, triple_logits.index_select(0, pair_triple))
        attention = torch.softmax(logits.view(n_rows, width), dim=-1).reshape(-1)
        attention = attention.index_select(0, flat)
        row_starts = torch.zeros(n_rows, dtype=torch.long)
        torch.cumsum(mask.sum(1)[:-1], 0, out=row_starts[1:])
        environment = nn.functional.embedding_bag(  # sum_j a_ij v(triple of ij), fused
            pair_triple, triple_values, row_starts, mode="sum", per_sample_weights=attention
        )
        return self.local_mu(environment), self.local_logvar(environment)

    # -- global part --------------------------------------------------------------------------
    def encode_global(
        self,
        mu_local: torch.Tensor,
        crystal_index: torch.Tensor,
        n_crystals: int,
        site_weight: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Pool local representations into crystal vectors.

        Parameters
        ----------
        mu_local : FloatTensor (S, local_dim)
        crystal_index : LongTensor (S,)
        n_crystals : int
        site_weight : FloatTensor (S,), optional
            Sites each row stands for (:attr:`dimfeat.inputs.Batch.site_weight`); the pooling
            is then the weighted mean, the mean over all of the crystal's sites.

        Returns
        -------
        mu_global, logvar_global : FloatTensor (n_crystals, global_dim)
        """
        h = self.prepool(mu_local).float()  # pool in float32, also under autocast
        if site_weight is None:
            weight = torch.ones_like(h[:, 0])
        else:
            weight = site_weight.float()
            h = h * weight.unsqueeze(1)
        total = h.new_zeros(n_crystals, h.shape[1]).index_add_(0, crystal_index, h)
        count = h.new_zeros(n_crystals).index_add_(0, crystal_index, weight)
        pooled = self.postpool(total / count.clamp_min(1).unsqueeze(1))
        return self.global_mu(pooled), self.global_logvar(pooled)

    def pair_tables(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Attention logits and values of every pair of elements, for ``distance_input="none"``.

        Without distances a bond ``[x_i, x_j]`` depends on the two species alone, so the
        attention and value MLPs need running once per pair of elements, not once per bond.
        The tables always have the same shape, so they are a function of the weights alone.

        Returns
        -------
        logits : FloatTensor (Z, Z)
            Attention logit of site species ``i`` (row) for neighbour species ``j`` (column),
            ``Z`` the rows of the element table (row 0: padding).
        values : FloatTensor (Z, Z, env_dim)
        """
        if self.distance_embedding is not None:
            raise ValueError("pair_tables needs an encoder with distance_input='none'")
        elements = self.site_embedding(self.element_features)  # (Z, d)
        n = elements.shape[0]
        partners = torch.arange(n, device=elements.device).expand(n, n)  # row i: every j
        logits = _bond_mlp(self.attention, elements, elements, partners, None).squeeze(-1)
        values = _bond_mlp(self.values, elements, elements, partners, None)
        return logits, values

    def encode_composition(
        self,
        species: torch.Tensor,
        fractions: torch.Tensor,
        tables: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> torch.Tensor:
        """Crystal vectors of compositions, for ``distance_input="none"``.

        The same function as :meth:`encode_local` then :meth:`encode_global` over a supercell
        that holds the species in these proportions: the softmax over the supercell's atoms
        becomes one over species with ``log(fraction)`` added to the logits, and the pooling a
        mean weighted by the fractions. The bonds' attention logits and values are looked up in
        :meth:`pair_tables`.

        Parameters
        ----------
        species : LongTensor (U, K)
            Atomic numbers of each composition's species, padded with 0.
        fractions : FloatTensor (U, K)
            Atom fraction of each species (0 for padding); each row sums to 1.
        tables : tuple of FloatTensor, optional
            :meth:`pair_tables` when the caller has them already (computed here otherwise).

        Returns
        -------
        mu_global : FloatTensor (U, global_dim)
        """
        if self.distance_embedding is not None:
            raise ValueError("encode_composition needs an encoder with distance_input='none'")
        logit_table, value_table = self.pair_tables() if tables is None else tables
        u, k = species.shape
        flat = species.reshape(-1, 1)  # (U K, 1): the species i of each row
        partners = species.repeat_interleave(k, dim=0)  # (U K, K): the species j of each i
        logits = logit_table[flat, partners]
        weight_j = fractions.repeat_interleave(k, dim=0)
        logits = logits + torch.log(weight_j.clamp_min(1e-30))
        logits = logits.masked_fill(weight_j <= 0, torch.finfo(logits.dtype).min)
        attention = torch.softmax(logits, dim=-1)
        values = value_table[flat, partners]  # (U K, K, env_dim)
        environment = torch.einsum("sm,smd->sd", attention, values)
        h = self.prepool(self.local_mu(environment)).float().reshape(u, k, -1)
        pooled = self.postpool(torch.einsum("uk,ukd->ud", fractions.float(), h))
        return self.global_mu(pooled)

    def forward(self, batch: Batch) -> torch.Tensor:
        """Crystal vectors ``mu_global`` (B, global_dim) of a batch (deterministic, no noise).

        With ``distance_input="none"``, :meth:`encode_composition` of each distinct composition
        of the batch, computed once and copied to its crystals. Otherwise sites are encoded in
        chunks of at most :data:`CHUNK_PAIRS` (site, atom) pairs (at least
        one site each); the rows are independent, so the result does not depend on the chunking.
        """
        if self.distance_embedding is None:
            return self._forward_compositions(batch)
        n_rows, width = batch.neighbour_species.shape
        step = max(1, CHUNK_PAIRS // max(width, 1))
        # Each chunk's rows are copied into one preallocated tensor and the chunk freed: a list
        # of small chunk outputs outliving the pair-sized activations between them fragmented
        # the heap, so a 2,000-atom cell's peak RSS varied from 0.53 to 1.04 GiB between runs
        # (0.53-0.56 GiB with the copies; docs/method.md, "Cost against the atom count").
        mu_local: torch.Tensor | None = None
        for start in range(0, n_rows, step):
            rows = slice(start, start + step)
            part = self.encode_local(
                batch.site_species[rows],
                batch.neighbour_species[rows],
                batch.distances[rows],
                batch.mask[rows],
            )[0]
            if step >= n_rows:
                mu_local = part
                break
            if mu_local is None:
                mu_local = part.new_empty((n_rows, *part.shape[1:]))
            mu_local[rows] = part
            del part
        mu_global, _ = self.encode_global(
            mu_local, batch.crystal_index, batch.n_crystals, batch.site_weight
        )
        return mu_global

    def _forward_compositions(self, batch: Batch) -> torch.Tensor:
        """:meth:`encode_composition` of each crystal's composition, once per distinct one.

        The composition of a crystal is read from its unique sites and their counts
        (``site_weight``), reduced by the greatest common divisor; fractions are ``n / N``
        rounded once, so equal compositions give equal inputs, and equal outputs. Within
        :func:`composition_memo` the pair tables and the vector of each composition are
        computed once for the whole call.
        """
        # read once (another thread may close the scope meanwhile); outside a scope, this call's own
        memo = self._memo or _CompositionMemo()
        keys = _composition_keys(batch, len(self.element_features))
        distinct = list(dict.fromkeys(keys))
        todo = [key for key in distinct if key not in memo.vectors]
        if todo:
            if memo.tables is None:
                memo.tables = self.pair_tables()
            memo.vectors.update(self._encode_keys(todo, memo.tables, batch.site_species.device))
        rows = torch.stack([memo.vectors[key] for key in distinct])
        position = {key: u for u, key in enumerate(distinct)}
        which = torch.tensor([position[key] for key in keys], device=rows.device)
        return rows[which]

    def _encode_keys(
        self, keys: list[tuple], tables: tuple[torch.Tensor, torch.Tensor], device: torch.device
    ) -> dict[tuple, torch.Tensor]:
        """Vectors of reduced compositions ``((Z, n), ...)``, in fixed-shape blocks.

        Each composition goes into a block of :data:`COMPOSITION_BLOCK` rows and species
        padded to a multiple of :data:`COMPOSITION_WIDTH` set by its own species count: floating
        point sums depend on the shapes they run over, and a composition's vector must not
        depend on what else is in the call.
        """
        by_width: dict[int, list[tuple]] = {}
        for key in keys:
            width = -(-len(key) // COMPOSITION_WIDTH) * COMPOSITION_WIDTH
            by_width.setdefault(width, []).append(key)
        out: dict[tuple, torch.Tensor] = {}
        for width, group in by_width.items():
            rows = -(-len(group) // COMPOSITION_BLOCK) * COMPOSITION_BLOCK
            z = np.ones((rows, width), dtype=np.int64)  # padding rows: pure hydrogen
            f = np.zeros((rows, width), dtype=np.float64)
            f[:, 0] = 1.0
            for u, key in enumerate(group):
                total = sum(n for _, n in key)
                z[u] = 0
                f[u] = 0.0
                for j, (zj, n) in enumerate(key):
                    z[u, j], f[u, j] = zj, n / total
            z_t, f_t = torch.from_numpy(z).to(device), torch.from_numpy(f).float().to(device)
            for start in range(0, rows, COMPOSITION_BLOCK):
                block = slice(start, start + COMPOSITION_BLOCK)
                vectors = self.encode_composition(z_t[block], f_t[block], tables)
                for u, key in enumerate(group[block]):
                    out[key] = vectors[u]
        return out


class _CompositionMemo:
    """What a context encoder computed within one :func:`composition_memo` scope."""

    def __init__(self) -> None:
        self.tables: tuple[torch.Tensor, torch.Tensor] | None = None
        self.vectors: dict[tuple, torch.Tensor] = {}


def _context_encoders(module: nn.Module) -> list[SiteNetEncoder]:
    """The context encoders (``distance_input="none"``) in ``module``, in module order."""
    return [
        m
        for m in module.modules()
        if isinstance(m, SiteNetEncoder) and m.distance_embedding is None
    ]


def pair_tables_of(module: nn.Module) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """:meth:`SiteNetEncoder.pair_tables` of every context encoder in ``module``, in module
    order (empty when it has none), for :func:`composition_memo` to start from.

    Parameters
    ----------
    module : torch.nn.Module
        A :class:`SiteNetEncoder`, or a module holding some (a two-channel encoder).

    Returns
    -------
    list of (logits, values)
    """
    with torch.inference_mode():
        return [m.pair_tables() for m in _context_encoders(module)]


@contextlib.contextmanager
def composition_memo(
    module: nn.Module, tables: list[tuple[torch.Tensor, torch.Tensor]] | None = None
) -> Iterator[None]:
    """Within this block, every context encoder (``distance_input="none"``) in ``module``
    computes its pair tables and the vector of each distinct composition once, however many
    batches it sees: the same vectors, bit for bit, as without the block.

    The encoder's weights must not change inside the block (inference only). A block inside
    another one for the same encoder uses the outer one's memo.

    Parameters
    ----------
    module : torch.nn.Module
        A :class:`SiteNetEncoder`, or a module holding some (a two-channel encoder).
    tables : list of (logits, values), optional
        :func:`pair_tables_of` the same module with the same weights, computed earlier (a worker
        process that encodes many chunks with one encoder computes them once).
    """
    encoders = _context_encoders(module)
    if tables is not None and len(tables) != len(encoders):
        raise ValueError(f"got pair tables of {len(tables)} context encoders, not {len(encoders)}")
    opened = []
    for k, m in enumerate(encoders):
        if m._memo is None:
            m._memo = _CompositionMemo()
            m._memo.tables = None if tables is None else tables[k]
            opened.append(m)
    try:
        yield
    finally:
        for m in opened:
            m._memo = None


def _composition_keys(batch: Batch, n_elements: int) -> list[tuple]:
    """Each crystal's reduced composition ``((Z, n), ...)`` (species ascending), read from its
    unique sites and their counts (``site_weight``), divided by their greatest common divisor."""
    species = batch.site_species.cpu().numpy().astype(np.int64)
    crystal = batch.crystal_index.cpu().numpy().astype(np.int64)
    if batch.site_weight is None:
        weight = np.ones(len(species), dtype=np.int64)
    else:
        weight = np.rint(batch.site_weight.cpu().numpy()).astype(np.int64)
    pairs, inverse = np.unique(crystal * n_elements + species, return_inverse=True)
    counts = np.bincount(inverse.reshape(-1), weights=weight).astype(np.int64)
    owner = pairs // n_elements
    starts = np.flatnonzero(np.r_[True, owner[1:] != owner[:-1]])
    if len(starts) != batch.n_crystals:
        raise ValueError(f"{batch.n_crystals - len(starts)} crystal(s) of the batch have no sites")
    counts //= np.repeat(np.gcd.reduceat(counts, starts), np.diff(np.r_[starts, len(counts)]))
    zs, ns = (pairs % n_elements).tolist(), counts.tolist()
    bounds = [*starts.tolist(), len(zs)]
    return [tuple(zip(zs[a:b], ns[a:b], strict=True)) for a, b in itertools.pairwise(bounds)]


def _bond_mlp(
    net: nn.Sequential,
    x_i: torch.Tensor,
    elements: torch.Tensor,
    neighbour_species: torch.Tensor,
    e_ij: torch.Tensor | None,
) -> torch.Tensor:
    """``net([x_i, x_j, e_ij])`` without materialising the (S, M, 3d) bond tensor;
    ``net([x_i, x_j])`` when ``e_ij`` is ``None`` (no distance input)."""
    first: nn.Linear = net[0]
    blocks = first.weight.split(x_i.shape[-1], dim=1)
    w_i, w_j = blocks[0], blocks[1]
    if e_ij is None:
        h = (elements @ w_j.T)[neighbour_species]  # (S, M, hidden), new
    else:
        h = e_ij @ blocks[2].T  # (S, M, hidden): the one new pair-sized tensor, then in place
        h += (elements @ w_j.T)[neighbour_species]
    h += (x_i @ w_i.T + first.bias).unsqueeze(1)
    return net[1:](h)
