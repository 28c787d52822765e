"""uigc model tooling: data preparation, tokenizer training, bundle export, evaluation."""
__version__ = "0.1.0"
