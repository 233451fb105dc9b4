"""LEAF inside other trainers, each an optional extra at the edge of the package:
``leafrl.integrations.trl`` (a ``trl.GRPOTrainer`` subclass, ``leafrl[trl]``)."""
