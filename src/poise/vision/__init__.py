"""Vision robustness: data, models, attacks, adversarial training and robust distillation."""

# imported inside runs (attacks), preloaded by a sweep's workers before they fork
PRELOAD = ("torchattacks",)
