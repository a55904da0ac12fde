"""Pure receptive-field geometry: no torch, only Python integers, fractions and numpy.

- :mod:`rflens.geometry.axis`: the periodic per-axis map from unit index to input interval
  (``AxisMap``) and its algebra (composition, unions over paths, alignment).
- :mod:`rflens.geometry.fields`: what rflens knows about one tensor (``TensorField``).
- :mod:`rflens.geometry.chain`: layer chains and their exact integer path counts.
"""
