"""ProAPO's data layer.

- ``features``: the labelled shots, a held-out slice and the test split as image features (through vlkit's
  shared feature cache), served by :class:`ProAPODataModule`;
- ``prompts``: the template library and the CuPL JSON format of class prompts / descriptions.
"""
