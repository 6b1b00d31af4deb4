"""Training: the configuration (``TrainConfig``), data module, Lightning module, callbacks, optimizers and
the ``train`` run."""
