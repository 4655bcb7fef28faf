"""Robust face super-resolution: degradations, a learned degradation GAN, smooth-feature SR, evaluators."""
