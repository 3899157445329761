"""PyTorch backend on transformers models: eager and torch.compile (reduce-overhead = CUDA graphs)."""
