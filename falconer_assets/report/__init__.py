"""Per-task HTML report: mined spans highlighted in their documents, value counts, eval, training curve.

Pure rendering (no Dagster, no SQL): the ``report`` asset reads the warehouse and the checkpoint
folder and hands the data to :func:`~falconer_assets.report.html.render_report`.
"""
