"""The Deep InfoMax objective: classifier heads, Jensen-Shannon and KL terms, false samples.

Paper section 2.5-2.7 and SPEC section 3. Two independent DIM problems are solved in parallel:

* **local**: a site's local environment ``z`` (``mu_local`` plus learned noise) against its pairwise
  interactions: ``c = [f_j, d_ij]``, the neighbour's standardised site features and the
  distance (SPEC; ``local_constituent="neighbour"``, the default), or ``c = [f_i, f_j, d_ij]``
  with the centre's features too (``"bond"``), pairs weighted by ``(d_ij + 1)^-2`` normalised
  over the environment;
* **global**: a crystal vector ``z`` (``mu_global`` plus noise) against the crystal's local
  environments ``c = mu_local``, read through ``detach()`` so that the global loss never trains the
  local encoder (the paper's Fig. 4).

Scores are ``u_z(z) . u_c(c)``; the Jensen-Shannon loss of a true pair and a false one is
``softplus(-score(z, c)) + softplus(score(z, c'))`` (low = true pairs score high). It is averaged
over the constituents of each set and over the kinds of false sample in use:

``other``        constituents of another crystal of the batch, drawn uniformly from all of them;
``polymorph``    this crystal's species on another crystal's geometry;
``composition``  this crystal's geometry with another crystal's species;
``permutation``  this crystal's species shuffled among its own sites (global DIM only).

Synthetic crystals relabel the unique sites of a geometry and propagate the labels to every
supercell image, so they stay periodic. Their local environments, needed by the global loss, are
computed by the local encoder without gradient.

The KL term is ``mean(mu^2 + s - ln s) - 1`` with ``s = exp(logvar)`` the noise variance (paper
eqn 4, shifted so that its minimum is 0). Loss = alpha * JS + beta * KL for each part.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from dimfeat.encoder import EncoderConfig, SiteNetEncoder, mlp
from dimfeat.inputs import Batch

__all__ = ["FALSE_SAMPLE_KINDS", "DIMHeads", "DeepInfoMaxLoss", "LossTerms"]

#: Kinds of false sample; ``permutation`` applies to the global objective only.
FALSE_SAMPLE_KINDS = ("other", "polymorph", "composition", "permutation")


class DIMHeads(nn.Module):
    """The four projection MLPs (one hidden layer of 64, output 128) of the DIM classifiers."""

    def __init__(
        self,
        config: EncoderConfig,
        hidden: int = 64,
        out: int = 128,
        local_constituent: str = "neighbour",
    ) -> None:
        super().__init__()
        n_features = len(config.site_features) * (2 if local_constituent == "bond" else 1)
        self.local_z = mlp([config.local_dim, hidden, out], final_activation=False)
        self.local_c = mlp([n_features + 1, hidden, out], final_activation=False)
        self.global_z = mlp([config.global_dim, hidden, out], final_activation=False)
        self.global_c = mlp([config.local_dim, hidden, out], final_activation=False)


@dataclass
class LossTerms:
    """The loss of one batch and its parts (scalars)."""

    loss: torch.Tensor
    local_dim: torch.Tensor
    global_dim: torch.Tensor
    local_kl: torch.Tensor
    global_kl: torch.Tensor

    def as_floats(self) -> dict[str, float]:
        """Detached Python floats, for logging."""
        return {k: float(v.detach()) for k, v in self.__dict__.items()}


def _kl(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    return (mu.pow(2) + logvar.exp() - logvar - 1.0).mean()


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

    def donors(self) -> torch.Tensor:
        """For each crystal, another crystal of the batch, uniformly."""
        b = self.batch.n_crystals
        step = torch.randint(1, b, (b,), generator=self.g, device=self.device)
        return (torch.arange(b, device=self.device) + step) % b

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
    alpha, beta : float, default=1.0, 0.1
        Weights of the Jensen-Shannon and KL terms.
    false_samples : tuple of str, default=FALSE_SAMPLE_KINDS
        Kinds of false sample in use; ``("other",)`` is the paper's ablation without synthetic
        samples (Fig. 11).
    local_constituent : {"neighbour", "bond"}, default="neighbour"
        What a local constituent holds: ``[f_j, d_ij]`` or ``[f_i, f_j, d_ij]``.
    """

    def __init__(
        self,
        config: EncoderConfig,
        alpha: float = 1.0,
        beta: float = 0.1,
        false_samples: tuple[str, ...] = FALSE_SAMPLE_KINDS,
        local_constituent: str = "neighbour",
    ) -> None:
        super().__init__()
        if local_constituent not in ("neighbour", "bond"):
            raise ValueError(
                f"local_constituent must be 'neighbour' or 'bond', got {local_constituent!r}"
            )
        self.local_constituent = local_constituent
        unknown = set(false_samples) - set(FALSE_SAMPLE_KINDS)
        if unknown or not false_samples:
            raise ValueError(
                f"false_samples must be a non-empty subset of {FALSE_SAMPLE_KINDS}, "
                f"got {false_samples!r}"
            )
        if set(false_samples) == {"permutation"}:
            raise ValueError(
                "false_samples=('permutation',) leaves the local DIM loss without false samples "
                "(permutation applies to the global loss only); add 'other', 'polymorph' or "
                "'composition'"
            )
        self.heads = DIMHeads(config, local_constituent=local_constituent)
        self.alpha = alpha
        self.beta = beta
        self.false_samples = tuple(false_samples)

    # -- local ----------------------------------------------------------------------------------
    def _pair_constituents(
        self, encoder: SiteNetEncoder, site: torch.Tensor, neighbours: torch.Tensor, d: torch.Tensor
    ) -> torch.Tensor:
        parts = [encoder.site_features(neighbours), d.unsqueeze(-1)]
        if self.local_constituent == "bond":
            f_i = encoder.site_features(site).unsqueeze(1).expand(-1, neighbours.shape[1], -1)
            parts.insert(0, f_i)
        return self.heads.local_c(torch.cat(parts, dim=-1))

    @staticmethod
    def _pair_weights(d: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        w = (d + 1.0).pow(-2) * mask
        return w / w.sum(dim=1, keepdim=True).clamp_min(1e-12)

    def _local_js(
        self, encoder: SiteNetEncoder, batch: Batch, uz: torch.Tensor, sampler: _Sampler
    ) -> torch.Tensor:
        b = batch
        true = self._pair_constituents(encoder, b.site_species, b.neighbour_species, b.distances)
        score = torch.einsum("sd,smd->sm", uz, true)
        loss = (F.softplus(-score) * self._pair_weights(b.distances, b.mask)).sum(1)

        false_terms = []
        for kind in self.false_samples:
            if kind == "permutation":
                continue
            if kind == "other":
                rows = sampler.other_rows(b.crystal_index)
                site, neigh = b.site_species[rows], b.neighbour_species[rows]
            elif kind == "polymorph":  # donor geometry, own species
                donors = sampler.donors()[b.crystal_index]
                rows = sampler.row_of(donors)
                site, neigh = _relabelled(b, rows, sampler.shifted_source(b.crystal_index))
            else:  # composition: own geometry, donor species
                rows = torch.arange(len(b.site_species), device=uz.device)
                donors = sampler.donors()[b.crystal_index]
                site, neigh = _relabelled(b, rows, sampler.shifted_source(donors))
            d, mask = b.distances[rows], b.mask[rows]
            false = self._pair_constituents(encoder, site, neigh, d)
            score = torch.einsum("sd,smd->sm", uz, false)
            false_terms.append((F.softplus(score) * self._pair_weights(d, mask)).sum(1))
        return (loss + torch.stack(false_terms).mean(0)).mean()

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
                owner, rows, relabel = self._synthetic(kind, b, sampler)
                site, neigh = _relabelled(b, rows, relabel)
                with torch.no_grad():
                    mu, _ = encoder.encode_local(site, neigh, b.distances[rows], b.mask[rows])
                false_uc = self.heads.global_c(mu)
                # A shuffle or relabelling that changed no species is a copy of the true crystal
                # (e.g. an element): such crystals get no false sample of this kind.
                changed = (neigh != b.neighbour_species[rows]).any(1).float()
                valid = (_segment_mean(changed, owner, n_crystals) > 0).float()
            score = (uz[owner] * false_uc).sum(-1)
            term = _segment_mean(F.softplus(score), owner, n_crystals)
            false_sum = false_sum + term * valid
            false_count = false_count + valid
        return (loss + false_sum / false_count.clamp_min(1)).mean()

    @staticmethod
    def _synthetic(kind: str, b: Batch, sampler: _Sampler):
        """Owner crystal, geometry rows and relabelling of one kind of synthetic crystal."""
        device = b.site_species.device
        if kind == "polymorph":  # each crystal's species on its donor's geometry
            donors = sampler.donors()
            counts = b.n_sites[donors]
            owner = torch.repeat_interleave(torch.arange(b.n_crystals, device=device), counts)
            start = torch.repeat_interleave(torch.cumsum(counts, 0) - counts, counts)
            rows = b.site_offset[donors][owner] + torch.arange(len(owner), device=device) - start
            return owner, rows, sampler.shifted_source(owner)
        owner = b.crystal_index
        rows = torch.arange(len(owner), device=device)
        if kind == "composition":  # own geometry, donor's species
            return owner, rows, sampler.shifted_source(sampler.donors()[owner])
        return owner, rows, _PermutationRelabel(b.site_offset[owner], sampler.permutation())

    def forward(
        self, encoder: SiteNetEncoder, batch: Batch, generator: torch.Generator
    ) -> LossTerms:
        """Loss of one batch (needs at least two crystals)."""
        if batch.n_crystals < 2:
            raise ValueError("a Deep InfoMax batch needs at least 2 crystals to draw false samples")
        sampler = _Sampler(batch, generator)
        mu_l, logvar_l = encoder.encode_local(
            batch.site_species, batch.neighbour_species, batch.distances, batch.mask
        )
        local_js = self._local_js(
            encoder, batch, self.heads.local_z(_noisy(mu_l, logvar_l, generator)), sampler
        )
        local = mu_l.detach()
        mu_g, logvar_g = encoder.encode_global(local, batch.crystal_index, batch.n_crystals)
        global_js = self._global_js(
            encoder, batch, self.heads.global_z(_noisy(mu_g, logvar_g, generator)), local, sampler
        )
        local_kl, global_kl = _kl(mu_l, logvar_l), _kl(mu_g, logvar_g)
        loss = self.alpha * (local_js + global_js) + self.beta * (local_kl + global_kl)
        return LossTerms(loss, local_js, global_js, local_kl, global_kl)


@dataclass
class _PermutationRelabel:
    """Species of site ``u`` of crystal ``c`` = species of row ``perm[offset_c + u]``."""

    offset: torch.Tensor
    perm: torch.Tensor

    def rows(self, local_site: torch.Tensor) -> torch.Tensor:
        expand = (slice(None),) + (None,) * (local_site.dim() - 1)
        return self.perm[self.offset[expand] + local_site]
