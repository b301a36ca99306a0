"""Hyperparameter search over WALS models with keras-tuner (an entry point on top of ``wals2``)."""
