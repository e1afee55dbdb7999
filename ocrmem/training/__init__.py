"""Adapter-only training: the HF Trainer (trainer), its patches of transformers and DeepSpeed (patches),
projector alignment (align), the gradient-flow check (gradcheck) and the trained text baselines (baselines).
"""
