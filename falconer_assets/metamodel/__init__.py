"""The metamodel: NTE pre-training of the proxy base on labelled offline data (one module per source in
:mod:`.sources`), and the base-model names users give (:mod:`.base_model`). Pure Python, no Dagster."""
