"""Training: the trainer, its callbacks, optimizers and schedules, MLflow tracking."""
