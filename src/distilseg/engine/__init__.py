"""Training, evaluation, prediction and model artifacts."""
