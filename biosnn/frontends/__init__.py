"""Front-ends: what turns a model from another tool into biosnn's graph or spec.

- :mod:`biosnn.frontends.torch_graph`: traces a trained ``torch.nn.Module``
  into a :class:`~biosnn.frontends.torch_graph.LayerGraph` (the codings in
  :mod:`biosnn.codings` turn it into a :class:`~biosnn.spec.NetworkSpec`).
- :mod:`biosnn.frontends.nir`: NIR graphs (snnTorch, Norse, SpikingJelly, sinabs, Rockpool, ...)
  to specs and back (``from_nir``, ``run_nir``, ``to_nir``).

YAML specs are read by :mod:`biosnn.spec`.
"""
