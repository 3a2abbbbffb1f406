"""Neo-style compilation: a traced PyTorch model -> the fastest backend that keeps its numbers."""
