"""Registers the control domain's recipe kinds, evaluators, report sections and frontiers."""

from poise.control.lipschitz import kinds  # noqa: F401
