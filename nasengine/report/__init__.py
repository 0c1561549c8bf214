"""The report: ``summary.json``, the paper's figures, ``summary.md``, and the data grid of ``nasengine data show``."""
