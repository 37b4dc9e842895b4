"""The Dagster assets, one module per asset key (``plan``, ``annotations``, ``proxy_checkpoint``, ``mined``,
``eval``; ``<corpus>/corpus_sample``; the ``task_spec``/``corpus_files`` sources), keys in :mod:`.keys`."""
