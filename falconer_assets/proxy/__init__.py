"""The NTE proxy (paper sections 3.3, 3.6): the next-tokens-extraction codec, the token classifier with
its training loop and recipes, and the offline base encoders. No Dagster."""
