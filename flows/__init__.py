"""Prefect orchestration of the OCR-MEM pipeline (flows/pipeline.py) and its deployment (flows/deploy.py)."""
