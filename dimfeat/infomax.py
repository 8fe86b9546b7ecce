"""The Deep InfoMax objective: classifier heads, Jensen-Shannon and KL terms, false samples.

Paper section 2.5-2.7 and SPEC section 3. Two independent DIM problems are solved in parallel:

* **local**: a site's local environment ``z`` (``mu_local`` plus learned noise) against its pairwise
  interactions: ``c = [f_i, f_j, g(d_ij)]``, the centre's and the neighbour's standardised site
  features and the distance (``local_constituent="bond"``, the default), or ``c = [f_j, g(d_ij)]``
  without the centre (``"neighbour"``), pairs weighted by ``(d_ij + 1)^-2`` normalised
  over the environment. ``g`` is the encoder's fixed distance expansion
  (:meth:`~dimfeat.encoder.SiteNetEncoder.expand_distances`: a Gaussian basis, or the raw
  distance for encoders with the linear distance input);
* **global**: a crystal vector ``z`` (``mu_global`` plus noise) against the crystal's local
  environments ``c = mu_local``, read through ``detach()`` so that the global loss never trains the
  local encoder (the paper's Fig. 4); ``global_trains_local=True`` lets its gradient reach the
  local encoder, through the true crystals' environments and the synthetic false ones'.

Scores are ``u_z(z) . u_c(c)``; the Jensen-Shannon loss of a true pair and a false one is
``softplus(-score(z, c)) + softplus(score(z, c'))`` (low = true pairs score high). It is averaged
over the constituents of each set and over the kinds of false sample in use:

``other``        constituents of another crystal of the batch, drawn uniformly from all of them;
``polymorph``    this crystal's species on another crystal's geometry, taken from a crystal with
                 the same number of unique sites when the batch has one (then the false
                 polymorph has this crystal's stoichiometry, and only geometry tells it apart);
``composition``  this crystal's geometry with another crystal's species;
``permutation``  this crystal's species shuffled among its own sites;
``strain``       this crystal with every distance scaled by one factor, 5-25 % up or down
                 (log-uniform), i.e. the same crystal at another density;
``substitution`` (optional, not in the defaults) this crystal's geometry with each element
                 replaced by one of its 3 nearest elements in the site features
                 (:func:`dimfeat.elements.similar_elements`; Na by K, O by S), the same choice
                 for every site of one element: told apart only by fine chemistry.

``permutation`` and ``strain`` keep the composition exactly, so composition alone cannot reject
them: they are what makes the objective, and so the vector, depend on geometry.

Synthetic crystals relabel the unique sites of a geometry and propagate the labels to every
supercell image, so they stay periodic. Their local environments, needed by the global loss, are
computed by the local encoder without gradient.

The KL term is ``mean(mu^2 + s - ln s) - 1`` with ``s = exp(logvar)`` the noise variance (paper
eqn 4, shifted so that its minimum is 0). Loss = alpha * JS + beta * KL for each part.

**Composition term** (not in the paper; ``composition_weight`` gamma > 0): a linear read-out
``softmax(W z + b)`` of the noisy crystal vector ``z`` must reproduce the crystal's element
fractions ``p`` (of its primitive cell); the term is ``KL(p || softmax(W z + b))``, 0 when exact.
The same-composition false samples make the JS terms spend the vector on geometry; this term keeps
the composition linearly readable in it while they do (see the training docs).
Loss = alpha * (JS_local + JS_global) + beta * (KL_local + KL_global) + gamma * composition.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from dimfeat.elements import MAX_Z, similar_elements
from dimfeat.encoder import EncoderConfig, SiteNetEncoder, mlp
from dimfeat.inputs import Batch

__all__ = [
    "CRITICS",
    "DEFAULT_BETA",
    "DEFAULT_COMPOSITION_WEIGHT",
    "DEFAULT_CRITIC",
    "DEFAULT_GLOBAL_SITES",
    "DEFAULT_LOCAL_CONSTITUENT",
    "DEFAULT_LOCAL_PAIRS",
    "DEFAULT_SYNTHETIC_WEIGHT",
    "FALSE_SAMPLE_KINDS",
    "OPTIONAL_FALSE_SAMPLE_KINDS",
    "DIMHeads",
    "DeepInfoMaxLoss",
    "LossTerms",
    "check_critic",
    "check_false_samples",
    "check_strain_range",
    "check_synthetic_weight",
]

#: Kinds of false sample of the default recipe (see the module docstring).
FALSE_SAMPLE_KINDS = ("other", "polymorph", "composition", "permutation", "strain")

#: Kinds that can be asked for but are not in the default recipe.
OPTIONAL_FALSE_SAMPLE_KINDS = ("substitution",)

#: Number of similar elements a ``substitution`` false sample draws from.
SUBSTITUTES = 3

#: Kinds that relabel the crystal's own geometry row by row (their distances are the batch's).
OWN_GEOMETRY_KINDS = ("composition", "permutation", "substitution")

#: Forms of the projection of the vectors ``z`` in the DIM classifiers (see DIMHeads).
CRITICS = ("mlp", "linear")

#: Defaults of the objective, declared once (DeepInfoMaxLoss, TrainingConfig, the featuriser and
#: the command line read them from here). See the training docs for the measurements behind them.
DEFAULT_BETA = 0.01
DEFAULT_LOCAL_CONSTITUENT = "bond"
DEFAULT_LOCAL_PAIRS = 16
DEFAULT_GLOBAL_SITES = 6

DEFAULT_COMPOSITION_WEIGHT = 0.0
DEFAULT_CRITIC = "mlp"
DEFAULT_SYNTHETIC_WEIGHT = 1.0

#: Default range of the ``strain`` false samples' distance factor: exp(+-U(log 1.05, log 1.25)).
STRAIN_RANGE = (1.05, 1.25)


def check_strain_range(strain_range) -> tuple[float, float]:
    """``strain_range`` as a ``(low, high)`` tuple of floats with ``1 < low <= high``."""
    try:
        low, high = (float(x) for x in strain_range)
    except (TypeError, ValueError) as exc:
        raise ValueError(
            f"strain_range must be two numbers (low, high), got {strain_range!r}"
        ) from exc
    if not 1.0 < low <= high:
        raise ValueError(f"strain_range must satisfy 1 < low <= high, got {strain_range!r}")
    return low, high


def check_false_samples(kinds, name: str = "false_samples") -> tuple[str, ...]:
    """``kinds`` as a tuple, refused unless a usable non-empty subset of the known kinds.

    The known kinds are :data:`FALSE_SAMPLE_KINDS` and :data:`OPTIONAL_FALSE_SAMPLE_KINDS`.

    Raises
    ------
    ValueError
        Naming ``name``, for an unknown kind, no kind, or ``permutation`` alone.
    """
    kinds = tuple(kinds)
    known = FALSE_SAMPLE_KINDS + OPTIONAL_FALSE_SAMPLE_KINDS
    unknown = set(kinds) - set(known)
    if unknown or not kinds:
        raise ValueError(f"{name} must be a non-empty subset of {known}, got {kinds!r}")
    if set(kinds) == {"permutation"}:
        raise ValueError(
            f"{name}=('permutation',) leaves crystals of one element without false "
            "samples (shuffling their species changes nothing); add another kind"
        )
    return kinds


def check_critic(critic: str) -> str:
    """``critic`` itself, refused unless one of :data:`CRITICS`.

    Raises
    ------
    ValueError
        For any other value.
    """
    if critic not in CRITICS:
        raise ValueError(f"critic must be one of {CRITICS}, got {critic!r}")
    return critic


def check_synthetic_weight(weight: float) -> float:
    """``weight`` as a float, refused unless > 0 (see :class:`DeepInfoMaxLoss`).

    Raises
    ------
    ValueError
        For zero, a negative value or NaN.
    """
    if not weight > 0:
        raise ValueError(f"synthetic_weight must be > 0, got {weight}")
    return float(weight)


class DIMHeads(nn.Module):
    """The four projections (output 128) of the DIM classifiers.

    The constituent projections ``local_c`` and ``global_c`` are MLPs with one hidden layer of
    64. The projections of the vectors ``z`` are the same MLPs with ``critic="mlp"`` (the
    paper's), or a single Linear layer with ``critic="linear"``: the score is then linear in
    ``z``, so whatever tells true constituents from false ones must be linearly readable in the
    vector.
    """

    def __init__(
        self,
        config: EncoderConfig,
        hidden: int = 64,
        out: int = 128,
        local_constituent: str = "neighbour",
        composition: bool = False,
        critic: str = DEFAULT_CRITIC,
    ) -> None:
        super().__init__()
        check_critic(critic)
        n_features = len(config.site_features) * (2 if local_constituent == "bond" else 1)
        n_distance = config.n_gaussians if config.distance_expansion == "gaussian" else 1

        def z_projection(n_in: int) -> nn.Sequential:
            sizes = [n_in, hidden, out] if critic == "mlp" else [n_in, out]
            return mlp(sizes, final_activation=False)

        self.local_z = z_projection(config.local_dim)
        self.n_distance = n_distance
        self.local_c = mlp([n_features + n_distance, hidden, out], final_activation=False)
        self.global_z = z_projection(config.global_dim)
        self.global_c = mlp([config.local_dim, hidden, out], final_activation=False)
        if composition:  # linear read-out of element fractions (the composition term)
            self.composition = nn.Linear(config.global_dim, MAX_Z + 1)


@dataclass
class LossTerms:
    """The loss of one batch and its parts (scalars).

    ``local_dim`` and ``global_dim`` here are the local and global *Deep InfoMax terms* (the
    Jensen-Shannon estimates), as in the history keys ``train_local_dim``/``valid_global_dim``
    written to ``config.json``; they are not the layer widths of the same names in
    :class:`dimfeat.encoder.EncoderConfig`. The names are kept because they are on disk.
    """

    loss: torch.Tensor
    local_dim: torch.Tensor
    global_dim: torch.Tensor
    local_kl: torch.Tensor
    global_kl: torch.Tensor
    composition: torch.Tensor

    def as_floats(self) -> dict[str, float]:
        """Detached Python floats, for logging."""
        return {k: float(v.detach()) for k, v in self.__dict__.items()}


def _kl(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    return (mu.pow(2) + logvar.exp() - logvar - 1.0).mean()


def _composition_kl(
    logits: torch.Tensor, site_species: torch.Tensor, crystal_index: torch.Tensor
) -> torch.Tensor:
    """Mean over crystals of KL(element fractions || softmax(logits)); (B, MAX_Z + 1) logits."""
    counts = torch.zeros_like(logits, dtype=torch.float32)
    ones = torch.ones_like(site_species, dtype=counts.dtype)
    counts.index_put_((crystal_index, site_species), ones, accumulate=True)
    p = counts / counts.sum(1, keepdim=True)
    log_q = torch.log_softmax(logits.float(), dim=1)
    return (torch.xlogy(p, p) - p * log_q).sum(1).mean()


def _noisy(mu: torch.Tensor, logvar: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    eps = torch.randn(mu.shape, generator=generator, device=mu.device, dtype=mu.dtype)
    return mu + (0.5 * logvar).exp() * eps


def _segment_mean(values: torch.Tensor, index: torch.Tensor, n: int) -> torch.Tensor:
    total = values.new_zeros(n).index_add_(0, index, values)
    count = values.new_zeros(n).index_add_(0, index, torch.ones_like(values))
    return total / count.clamp_min(1)


class _Sampler:
    """Random choices within a batch (other crystals, donors, relabelling)."""

    def __init__(self, batch: Batch, generator: torch.Generator) -> None:
        self.batch = batch
        self.g = generator
        self.device = batch.site_species.device

    def _uniform(self, n: int) -> torch.Tensor:
        return torch.rand(n, generator=self.g, device=self.device)

    def donors(self, *, same_size: bool = False) -> torch.Tensor:
        """For each crystal, another crystal of the batch, uniformly.

        With ``same_size``, uniformly among the other crystals with as many unique sites, when
        there is one (otherwise among all other crystals).
        """
        b = self.batch.n_crystals
        if not same_size:
            step = torch.randint(1, b, (b,), generator=self.g, device=self.device)
            return (torch.arange(b, device=self.device) + step) % b
        n = self.batch.n_sites
        other = ~torch.eye(b, dtype=torch.bool, device=self.device)
        same = other & (n.unsqueeze(0) == n.unsqueeze(1))
        allowed = torch.where(same.any(1, keepdim=True), same, other)
        keys = torch.rand((b, b), generator=self.g, device=self.device).masked_fill(~allowed, -1)
        return keys.argmax(1)

    def strain(self, strain_range: tuple[float, float] = STRAIN_RANGE) -> torch.Tensor:
        """For each crystal, a distance factor in ``strain_range`` or its inverse (log-uniform)."""
        b = self.batch.n_crystals
        low, high = (math.log(x) for x in strain_range)
        size = low + (high - low) * self._uniform(b)
        sign = torch.where(self._uniform(b) < 0.5, -1.0, 1.0)
        return torch.exp(sign * size)

    def choice(self, k: int) -> torch.Tensor:
        """For each crystal, an integer in ``[0, k)``, uniformly."""
        b = self.batch.n_crystals
        return (self._uniform(b) * k).long().clamp_max(k - 1)

    def other_rows(self, crystal: torch.Tensor) -> torch.Tensor:
        """For each entry of ``crystal``, a site row of any other crystal, uniformly."""
        off, n = self.batch.site_offset[crystal], self.batch.n_sites[crystal]
        total = self.batch.site_species.shape[0]
        r = (self._uniform(len(crystal)) * (total - n)).long().clamp_max(total - n - 1)
        return r + (r >= off) * n

    def row_of(self, crystal: torch.Tensor) -> torch.Tensor:
        """For each entry of ``crystal``, one of its site rows, uniformly."""
        n = self.batch.n_sites[crystal]
        pick = (self._uniform(len(crystal)) * n).long().clamp_max(n - 1)
        return self.batch.site_offset[crystal] + pick

    def shifted_source(self, species_crystal: torch.Tensor) -> _Relabel:
        """Relabel sites ``u`` with species of site ``(u + shift) mod n`` of another crystal."""
        n = self.batch.n_sites[species_crystal]
        shift = (self._uniform(len(species_crystal)) * n).long()
        return _Relabel(self.batch.site_offset[species_crystal], n, shift)

    def subset(self, owner: torch.Tensor, k: int) -> torch.Tensor:
        """Indices of at most ``k`` entries per owner, uniformly without replacement."""
        keys = owner.to(torch.float64) + self._uniform(len(owner)).to(torch.float64) * 0.5
        order = torch.argsort(keys)
        counts = torch.bincount(owner, minlength=self.batch.n_crystals)
        start = torch.cumsum(counts, 0) - counts
        rank = torch.arange(len(owner), device=self.device) - start[owner[order]]
        return torch.sort(order[rank < k]).values

    def permutation(self) -> torch.Tensor:
        """A random permutation of the site rows within each crystal (flat row indices)."""
        keys = (
            self.batch.crystal_index.to(torch.float64)
            + self._uniform(self.batch.crystal_index.shape[0]).to(torch.float64) * 0.5
        )
        return torch.argsort(keys)


@dataclass
class _Relabel:
    """Species of a geometry's site ``u`` = species of flat row ``offset + (u + shift) % n``."""

    offset: torch.Tensor
    n: torch.Tensor
    shift: torch.Tensor

    def rows(self, local_site: torch.Tensor) -> torch.Tensor:
        expand = (slice(None),) + (None,) * (local_site.dim() - 1)
        return self.offset[expand] + (local_site + self.shift[expand]) % self.n[expand]


def _relabelled(
    batch: Batch, rows: torch.Tensor, relabel: _Relabel
) -> tuple[torch.Tensor, torch.Tensor]:
    """Site and neighbour species of geometry rows ``rows`` after relabelling."""
    centre = rows - batch.site_offset[batch.crystal_index[rows]]
    site_species = batch.site_species[relabel.rows(centre)]
    neighbour = batch.site_species[relabel.rows(batch.neighbour_site[rows])]
    neighbour = neighbour.masked_fill(~batch.mask[rows], 0)
    return site_species, neighbour


class DeepInfoMaxLoss(nn.Module):
    """Local and global Deep InfoMax loss of a :class:`~dimfeat.encoder.SiteNetEncoder`.

    Parameters
    ----------
    config : EncoderConfig
        Architecture of the encoder the heads attach to.
    alpha, beta : float, default=1.0, 0.01
        Weights of the Jensen-Shannon and KL terms (the paper's beta is 0.1; 0.01 keeps more of
        the geometry, see the training docs).
    false_samples : tuple of str, default=FALSE_SAMPLE_KINDS
        Kinds of false sample in use; ``("other",)`` is the paper's ablation without synthetic
        samples (Fig. 11).
    local_false_samples : tuple of str or None, default=None
        Kinds used by the local loss only (``None``: ``false_samples``); the global loss always
        uses ``false_samples``. The paper uses ``permutation`` in the global loss only, i.e.
        ``local_false_samples=("other", "polymorph", "composition")``.
    critic : {"mlp", "linear"}, default="mlp"
        Projection of the local and crystal vectors in the classifiers (see :class:`DIMHeads`):
        the paper's MLP, or a Linear layer, which makes the scores linear in the vectors.
    local_constituent : {"neighbour", "bond"}, default="bond"
        What a local constituent holds: ``[f_j, d_ij]`` or ``[f_i, f_j, d_ij]``.
    local_pairs : int or None, default=16
        Score this many pairs per environment, drawn in proportion to the pair weights, instead
        of every pair (``None``): an unbiased estimate of the local loss at a fraction of the
        cost.
    global_sites : int or None, default=6
        Represent each synthetic false crystal of the global loss by at most this many of its
        sites, drawn at random (``None``: all of them); its score is a mean over sites, so the
        estimate stays unbiased while the local encoder runs on fewer sites.
    composition_weight : float, default=0.0
        Weight gamma of the composition term (see the module docstring); 0 leaves it out.
    synthetic_weight : float, default=1.0
        Weight of each synthetic kind of false sample (every kind but ``other``) relative to
        ``other`` in the mean over kinds, in both losses. 1 weighs every kind alike; smaller
        values move the objective toward the paper's ablation (``other`` only), which keeps
        more of what small models need for formation energy and band gap and less of the
        structure (see the training docs). Must be > 0.
    strain_range : (float, float), default=(1.05, 1.25)
        The ``strain`` false samples scale every distance by a factor drawn log-uniformly from
        ``[low, high]`` or its inverse; ``1 < low <= high``.
    global_trains_local : bool, default=False
        Let the global loss train the local encoder too (the paper's recipe, False, reads the
        local environments through ``detach()`` and encodes the synthetic false crystals'
        environments without gradient).
    """

    def __init__(
        self,
        config: EncoderConfig,
        alpha: float = 1.0,
        beta: float = DEFAULT_BETA,
        false_samples: tuple[str, ...] = FALSE_SAMPLE_KINDS,
        local_constituent: str = DEFAULT_LOCAL_CONSTITUENT,
        local_pairs: int | None = DEFAULT_LOCAL_PAIRS,
        global_sites: int | None = DEFAULT_GLOBAL_SITES,
        composition_weight: float = DEFAULT_COMPOSITION_WEIGHT,
        local_false_samples: tuple[str, ...] | None = None,
        critic: str = DEFAULT_CRITIC,
        synthetic_weight: float = DEFAULT_SYNTHETIC_WEIGHT,
        strain_range: tuple[float, float] = STRAIN_RANGE,
        global_trains_local: bool = False,
    ) -> None:
        super().__init__()
        self.strain_range = check_strain_range(strain_range)
        self.global_trains_local = bool(global_trains_local)
        self.critic = check_critic(critic)
        self.synthetic_weight = check_synthetic_weight(synthetic_weight)
        if not composition_weight >= 0:
            raise ValueError(f"composition_weight must be >= 0, got {composition_weight}")
        self.composition_weight = float(composition_weight)
        if global_sites is not None and global_sites < 1:
            raise ValueError(f"global_sites must be a positive integer or None, got {global_sites}")
        self.global_sites = global_sites
        if local_pairs is not None and local_pairs < 1:
            raise ValueError(f"local_pairs must be a positive integer or None, got {local_pairs}")
        self.local_pairs = local_pairs
        if local_constituent not in ("neighbour", "bond"):
            raise ValueError(
                f"local_constituent must be 'neighbour' or 'bond', got {local_constituent!r}"
            )
        self.local_constituent = local_constituent
        self.false_samples = check_false_samples(false_samples)
        self.local_false_samples = (
            self.false_samples
            if local_false_samples is None
            else check_false_samples(local_false_samples, "local_false_samples")
        )
        self.heads = DIMHeads(
            config,
            local_constituent=local_constituent,
            composition=composition_weight > 0,
            critic=critic,
        )
        self.alpha = alpha
        self.beta = beta
        # not saved with the heads: a function of the shipped element table
        substitutes = torch.from_numpy(similar_elements(SUBSTITUTES))
        self.register_buffer("substitutes", substitutes, persistent=False)

    # -- local ----------------------------------------------------------------------------------
    def _pair_scores(
        self,
        encoder: SiteNetEncoder,
        q: tuple[torch.Tensor, torch.Tensor],
        site: torch.Tensor,
        neighbours: torch.Tensor,
        distance_part: torch.Tensor,
    ) -> torch.Tensor:
        """Scores ``u_z(z_s) . u_c(c_sm)`` of every pair, without materialising ``u_c(c)``.

        ``u_c`` ends in a Linear layer ``W h + b``, so ``u_z . u_c = (W^T u_z) . h + u_z . b``;
        ``q`` holds ``(W^T u_z, u_z . b)``. The first layer of ``u_c`` acts on the concatenated
        constituent ``[f_i, f_j, g(d)]``; its weight is split so that the species parts are
        looked up per element and the distance part (``distance_part``, from
        :meth:`_distance_part`) is computed once per set of distances.
        """
        first = self.heads.local_c[0]
        n_f = encoder.element_features.shape[1]
        w = first.weight
        table = encoder.element_features
        h = distance_part + (table @ w[:, self._f_j].T)[neighbours] + first.bias
        if self.local_constituent == "bond":
            h = h + (table @ w[:, :n_f].T)[site].unsqueeze(1)
        h = self.heads.local_c[1:-1](h)
        qz, qb = q
        return torch.einsum("sd,smd->sm", qz, h) + qb.unsqueeze(1)

    def _distance_part(self, expanded: torch.Tensor) -> torch.Tensor:
        """The distance block of ``u_c``'s first layer applied to ``g(d)``: (S, M, hidden)."""
        w = self.heads.local_c[0].weight
        return expanded @ w[:, self._f_j.stop :].T

    @property
    def _f_j(self) -> slice:
        n_f = self.heads.local_c[0].in_features - self.heads.n_distance
        start = n_f // 2 if self.local_constituent == "bond" else 0
        return slice(start, n_f)

    @staticmethod
    def _pair_weights(d: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        w = (d + 1.0).pow(-2) * mask
        return w / w.sum(dim=1, keepdim=True).clamp_min(1e-12)

    def _local_js(
        self,
        encoder: SiteNetEncoder,
        batch: Batch,
        uz: torch.Tensor,
        sampler: _Sampler,
        expanded: torch.Tensor,
    ) -> torch.Tensor:
        b = batch
        last = self.heads.local_c[-1]
        q = (uz @ last.weight, uz @ last.bias)
        own = self._distance_part(expanded)
        all_rows = torch.arange(len(b.site_species), device=uz.device)
        loss = self._pair_term(
            encoder, q, sampler, b.site_species, b.neighbour_species, b.distances, b.mask,
            _rows_part(own, all_rows, identity=True), true=True,
        )  # fmt: skip

        false_sum = torch.zeros_like(loss)
        false_count = torch.zeros_like(loss)
        for kind in self.local_false_samples:
            rows, site, neigh, d = self._false_environments(kind, b, sampler)
            if kind == "strain":  # new distances: their own distance part

                def part(idx, d=d):
                    d = d if idx is None else d.gather(1, idx)
                    return self._distance_part(encoder.expand_distances(d))
            else:  # distances of batch rows: reuse theirs
                part = _rows_part(own, rows, identity=kind in OWN_GEOMETRY_KINDS)

            term = self._pair_term(encoder, q, sampler, site, neigh, d, b.mask[rows], part)
            valid = self._changed(kind, b, rows, site, neigh) * self._kind_weight(kind)
            false_sum = false_sum + term * valid
            false_count = false_count + valid
        # a weighted mean over the kinds; where no kind applies, false_sum is 0 too
        return (loss + false_sum / false_count.clamp_min(1e-12)).mean()

    def _kind_weight(self, kind: str) -> float:
        """Weight of a kind of false sample in the mean over kinds."""
        return 1.0 if kind == "other" else self.synthetic_weight

    def _pair_term(self, encoder, q, sampler, site, neigh, d, mask, part, *, true=False):
        """Weighted mean over an environment's pairs of ``softplus(-+score)``, per row.

        With ``local_pairs = K`` the weighted sum over all pairs is replaced by the mean over
        K pairs drawn in proportion to their weights (an unbiased estimate, at a fraction of
        the cost of scoring every pair).
        """
        weights = self._pair_weights(d, mask)
        sign = -1.0 if true else 1.0
        if self.local_pairs is None:
            score = self._pair_scores(encoder, q, site, neigh, part(None))
            return (F.softplus(sign * score) * weights).sum(1)
        idx = torch.multinomial(weights, self.local_pairs, replacement=True, generator=sampler.g)
        score = self._pair_scores(encoder, q, site, neigh.gather(1, idx), part(idx))
        return F.softplus(sign * score).mean(1)

    # -- global ---------------------------------------------------------------------------------
    def _global_js(
        self,
        encoder: SiteNetEncoder,
        batch: Batch,
        uz: torch.Tensor,
        local: torch.Tensor,
        sampler: _Sampler,
    ) -> torch.Tensor:
        b, n_crystals = batch, batch.n_crystals
        uc = self.heads.global_c(local)
        score = (uz[b.crystal_index] * uc).sum(-1)
        loss = _segment_mean(F.softplus(-score), b.crystal_index, n_crystals)

        false_sum = torch.zeros_like(loss)
        false_count = torch.zeros_like(loss)
        for kind in self.false_samples:
            if kind == "other":
                owner = b.crystal_index
                false_uc = uc[sampler.other_rows(owner)]
                valid = torch.ones_like(loss)
            else:
                owner, rows, site, neigh, d = self._synthetic(kind, b, sampler)
                # A shuffle or relabelling that changed no species is a copy of the true crystal
                # (e.g. an element): such crystals get no false sample of this kind.
                changed = self._changed(kind, b, rows, site, neigh)
                valid = (_segment_mean(changed, owner, n_crystals) > 0).float()
                if self.global_sites is not None:
                    keep = sampler.subset(owner, self.global_sites)
                    owner, rows, site, neigh, d = (t[keep] for t in (owner, rows, site, neigh, d))
                with torch.set_grad_enabled(self.global_trains_local and torch.is_grad_enabled()):
                    mu, _ = encoder.encode_local(site, neigh, d, b.mask[rows])
                false_uc = self.heads.global_c(mu)
            score = (uz[owner] * false_uc).sum(-1)
            term = _segment_mean(F.softplus(score), owner, n_crystals)
            valid = valid * self._kind_weight(kind)
            false_sum = false_sum + term * valid
            false_count = false_count + valid
        return (loss + false_sum / false_count.clamp_min(1e-12)).mean()

    # -- false samples --------------------------------------------------------------------------
    @staticmethod
    def _changed(
        kind: str, b: Batch, rows: torch.Tensor, site: torch.Tensor, neigh: torch.Tensor
    ) -> torch.Tensor:
        """1.0 for the rows of a false sample that differ from the true environment, else 0.0.

        Only a relabelling of the crystal's own geometry (``composition``, ``permutation``) can
        reproduce the true environment; the other kinds always differ.
        """
        if kind not in ("composition", "permutation"):
            return torch.ones(rows.shape[0], device=rows.device)
        same_centre = site == b.site_species[rows]
        same_neighbours = (neigh == b.neighbour_species[rows]).all(1)
        return (~(same_centre & same_neighbours)).float()

    def _false_environments(
        self, kind: str, b: Batch, sampler: _Sampler
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Geometry rows, centre species, neighbour species and distances of false environments.

        There is one false environment per site row of the
        batch, in row order; :meth:`_synthetic` builds whole false crystals for the global loss.
        """
        device = b.site_species.device
        all_rows = torch.arange(len(b.site_species), device=device)
        if kind == "other":
            rows = sampler.other_rows(b.crystal_index)
            return rows, b.site_species[rows], b.neighbour_species[rows], b.distances[rows]
        if kind == "polymorph":  # donor geometry, own species
            donors = sampler.donors(same_size=True)[b.crystal_index]
            rows = sampler.row_of(donors)
            site, neigh = _relabelled(b, rows, sampler.shifted_source(b.crystal_index))
            return rows, site, neigh, b.distances[rows]
        if kind == "composition":  # own geometry, donor species
            donors = sampler.donors()[b.crystal_index]
            site, neigh = _relabelled(b, all_rows, sampler.shifted_source(donors))
            return all_rows, site, neigh, b.distances
        if kind == "permutation":  # own geometry, own species shuffled among the sites
            relabel = _PermutationRelabel(b.site_offset[b.crystal_index], sampler.permutation())
            site, neigh = _relabelled(b, all_rows, relabel)
            return all_rows, site, neigh, b.distances
        if kind == "substitution":  # own geometry, each element replaced by a similar one
            pick = sampler.choice(SUBSTITUTES)[b.crystal_index]
            site = self.substitutes[b.site_species, pick]
            neigh = self.substitutes[b.neighbour_species, pick.unsqueeze(1)]
            return all_rows, site, neigh.masked_fill(~b.mask, 0), b.distances
        if kind == "strain":  # own crystal at another density
            factor = sampler.strain(self.strain_range)[b.crystal_index].unsqueeze(1)
            return all_rows, b.site_species, b.neighbour_species, b.distances * factor
        raise KeyError(kind)

    def _synthetic(self, kind: str, b: Batch, sampler: _Sampler):
        """Owner crystal, geometry rows, species and distances of one kind of false crystal."""
        if kind != "polymorph":
            rows, site, neigh, d = self._false_environments(kind, b, sampler)
            return b.crystal_index, rows, site, neigh, d
        # each crystal's species on the whole geometry of its donor
        device = b.site_species.device
        donors = sampler.donors(same_size=True)
        counts = b.n_sites[donors]
        owner = torch.repeat_interleave(torch.arange(b.n_crystals, device=device), counts)
        start = torch.repeat_interleave(torch.cumsum(counts, 0) - counts, counts)
        rows = b.site_offset[donors][owner] + torch.arange(len(owner), device=device) - start
        site, neigh = _relabelled(b, rows, sampler.shifted_source(owner))
        return owner, rows, site, neigh, b.distances[rows]

    def forward(
        self, encoder: SiteNetEncoder, batch: Batch, generator: torch.Generator
    ) -> LossTerms:
        """Loss of one batch (needs at least two crystals)."""
        if batch.n_crystals < 2:
            raise ValueError("a Deep InfoMax batch needs at least 2 crystals to draw false samples")
        sampler = _Sampler(batch, generator)
        expanded = encoder.expand_distances(batch.distances)  # the local critic's pair inputs
        mu_l, logvar_l = encoder.encode_local(
            batch.site_species, batch.neighbour_species, batch.distances, batch.mask
        )
        uz_local = self.heads.local_z(_noisy(mu_l, logvar_l, generator))
        local_js = self._local_js(encoder, batch, uz_local, sampler, expanded)
        local = mu_l if self.global_trains_local else mu_l.detach()
        mu_g, logvar_g = encoder.encode_global(local, batch.crystal_index, batch.n_crystals)
        z_global = _noisy(mu_g, logvar_g, generator)
        uz_global = self.heads.global_z(z_global)
        global_js = self._global_js(encoder, batch, uz_global, local, sampler)
        local_kl, global_kl = _kl(mu_l, logvar_l), _kl(mu_g, logvar_g)
        loss = self.alpha * (local_js + global_js) + self.beta * (local_kl + global_kl)
        if self.composition_weight > 0:
            composition = _composition_kl(
                self.heads.composition(z_global), batch.site_species, batch.crystal_index
            )
            loss = loss + self.composition_weight * composition
        else:
            composition = torch.zeros_like(loss)
        return LossTerms(loss, local_js, global_js, local_kl, global_kl, composition)


def _rows_part(own: torch.Tensor, rows: torch.Tensor, *, identity: bool):
    """Distance parts of geometry rows ``rows`` of ``own`` (S, M, D), for :meth:`_pair_term`.

    ``part(None)`` gives every pair of those rows, ``part(idx)`` the pairs ``idx`` (S, K);
    ``identity`` says that ``rows`` is every row in order, so no copy is needed.
    """

    def part(idx: torch.Tensor | None) -> torch.Tensor:
        if idx is None:
            return own if identity else own[rows]
        return own[rows.unsqueeze(1), idx]

    return part


@dataclass
class _PermutationRelabel:
    """Species of site ``u`` of crystal ``c`` = species of row ``perm[offset_c + u]``."""

    offset: torch.Tensor
    perm: torch.Tensor

    def rows(self, local_site: torch.Tensor) -> torch.Tensor:
        expand = (slice(None),) + (None,) * (local_site.dim() - 1)
        return self.perm[self.offset[expand] + local_site]
