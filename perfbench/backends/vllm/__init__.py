"""vLLM's offline engine (`LLM.generate`): continuous batching, paged KV cache, CUDA graphs."""
