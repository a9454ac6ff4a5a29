"""Offline tooling: what builds, trains, exports and evaluates a portfolio before it is served.

- :mod:`.portfolio`: grid, lazy search, pruning, gap certificate, report, candidate pools;
- :mod:`.engines`: ONNX export, quantization, LoRA preparation and training, weight soups, the
  shared base model;
- :mod:`.evaluation`: running members on prompts and scoring them; :mod:`.scoring`: the scorers;
- :mod:`.simulate`: simulated users for convergence studies.

The serving runtime (pipeline, policy, routing, stores, engines at inference, manifest) never
imports this package (``tests/test_import_rules.py``): serving needs none of its dependencies.
"""
