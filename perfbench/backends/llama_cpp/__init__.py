"""llama.cpp backend: GGUF models in process through llama-cpp-python (llama-bench's pp/tg tests)."""
