"""OCR-MEM: long LLM memory from rendered pages through a frozen OCR encoder and a trained projector."""

__version__ = "0.1.0"
