"""The served portfolio: :mod:`.manifest` reads and validates a portfolio manifest.

Building one (grid, search, pruning, certificate) is offline tooling in
:mod:`palm_middleware.offline.portfolio`, which the serving runtime never imports.
"""
