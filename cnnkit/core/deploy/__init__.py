"""Exported files (the format table, writing, running) and MLflow serving."""
