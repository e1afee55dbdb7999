"""The data a stage reads and writes: example sources (JSONL, text), the rendered manifest and its typed
rows (manifest), the frozen encoder's feature cache (features) and the training datasets (dataset).
"""
