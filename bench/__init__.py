"""nasengine's benchmarks: each module is one bench, run from the repository root as ``python -m bench.<name>``
(``make bench`` runs them all); what they share is in :mod:`bench.common`."""
