"""Classic crystals built with pymatgen, shared by conftest.py and the regeneration script.

Lattice constants are experimental room-temperature values (Å); every structure is ordered.
"""

from __future__ import annotations

from pymatgen.core import Lattice, Structure


def cscl() -> Structure:
    """Caesium chloride, Pm-3m, 2 atoms (already primitive)."""
    return Structure(Lattice.cubic(4.123), ["Cs", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]])


def nacl() -> Structure:
    """Rock salt, Fm-3m, conventional cubic cell of 8 atoms (primitive: 2)."""
    return Structure.from_spacegroup(
        "Fm-3m", Lattice.cubic(5.640), ["Na", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]]
    )


def si() -> Structure:
    """Diamond-structure silicon, Fd-3m, conventional cubic cell of 8 atoms (primitive: 2)."""
    return Structure.from_spacegroup("Fd-3m", Lattice.cubic(5.431), ["Si"], [[0, 0, 0]])


def srtio3() -> Structure:
    """Cubic perovskite strontium titanate, Pm-3m, 5 atoms."""
    return Structure(
        Lattice.cubic(3.905),
        ["Sr", "Ti", "O", "O", "O"],
        [[0, 0, 0], [0.5, 0.5, 0.5], [0.5, 0.5, 0], [0.5, 0, 0.5], [0, 0.5, 0.5]],
    )


def zno() -> Structure:
    """Wurtzite zinc oxide, P6_3mc, 4 atoms."""
    return Structure.from_spacegroup(
        "P6_3mc",
        Lattice.hexagonal(3.250, 5.207),
        ["Zn", "O"],
        [[1 / 3, 2 / 3, 0.0], [1 / 3, 2 / 3, 0.3819]],
    )


#: Builders by name, in a fixed order.
CRYSTALS = {"CsCl": cscl, "NaCl": nacl, "Si": si, "SrTiO3": srtio3, "ZnO": zno}
