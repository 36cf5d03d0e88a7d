"""The public loss functions: checks, dispatch and result wrapping, one module per loss."""
