"""Vision robustness: data, models, attacks, adversarial training and robust distillation."""
