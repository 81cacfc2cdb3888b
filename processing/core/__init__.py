"""The pure core: the rules of the product, with no I/O (imports no azure.* and no openai)."""
