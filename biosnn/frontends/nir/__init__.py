"""NIR (Neuromorphic Intermediate Representation) front-end: import, run and export NIR graphs.

``from_nir`` turns a NIR graph (snnTorch, Norse, SpikingJelly, sinabs, Rockpool, ...) into a
:class:`~biosnn.spec.NetworkSpec`, ``run_nir`` simulates it on a backend and returns spikes per
NIR node, ``to_nir`` writes a spec back as a NIR graph.  How the ODEs are stepped is an explicit
:class:`Discretisation` with a preset per producer (:mod:`biosnn.frontends.nir.flavors`).
"""

from biosnn.frontends.nir.exporter import to_nir
from biosnn.frontends.nir.flavors import FLAVORS, PRESETS, Discretisation, detect_flavor
from biosnn.frontends.nir.importer import from_nir
from biosnn.frontends.nir.run import run_nir

__all__ = ["from_nir", "to_nir", "run_nir", "Discretisation", "PRESETS", "FLAVORS", "detect_flavor"]
