"""Exporting runs from the store to the tools a team already uses (MLflow tracking)."""
