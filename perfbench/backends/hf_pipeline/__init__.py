"""transformers `pipeline("text-generation")`: the high-level API many users time, with its overhead
measured against `model.generate` on the same inputs."""
