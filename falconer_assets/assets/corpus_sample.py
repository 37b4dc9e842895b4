"""Stage 2a, generator (paper 3.5): one ``<corpus>/corpus_sample`` asset per corpus folder."""

import dagster as dg
from dagster_duckdb import DuckDBResource

from falconer_assets.assets.keys import corpus_sample_key
from falconer_assets.automation import on_missing
from falconer_assets.generator.sampling import sample_size, sample_with_split
from falconer_assets.resources.workspace import Workspace
from falconer_assets.versions import digest
from falconer_assets.warehouse.store import write_corpus_sample


class SampleConfig(dg.Config):
    """How much of the corpus the LLM annotates (paper 3.5: about 5%) and the held-out share."""

    fraction: float = 0.05
    min_docs: int = 40
    max_docs: int = 200
    heldout_fraction: float = 0.25
    seed: int = 0


DESCRIPTION = """Seeded sample of corpus {corpus!r} with a train/held-out split (paper 3.5: about 5%).

Writes `corpus_sample` (corpus, doc_id, split) and `corpus_rejects` (bad input lines, each with
file, line number and reason). It does not depend on any instruction, and new corpus files do
not re-sample it (they are mined with the current proxy): it is only materialized when missing,
or by hand. Data version: hash of the sampled (id, split) set."""


def corpus_sample_asset(corpus: str) -> dg.AssetsDefinition:
    """The ``<corpus>/corpus_sample`` asset of one corpus folder (keys are per corpus, so one each)."""

    @dg.asset(key=corpus_sample_key(corpus), group_name="generator", kinds={"duckdb"},
              automation_condition=on_missing(), description=DESCRIPTION.format(corpus=corpus))
    def corpus_sample(context: dg.AssetExecutionContext, config: SampleConfig, workspace: Workspace,
                      warehouse: DuckDBResource) -> dg.MaterializeResult:
        data = workspace.corpus(corpus)
        if not data.docs:
            raise dg.Failure(f"corpus {corpus!r} has no valid documents ({len(data.rejects)} rejected)")
        n = sample_size(len(data.docs), config.fraction, config.min_docs, config.max_docs)
        chosen = sample_with_split([d.id for d in data.docs], n, config.heldout_fraction, config.seed)
        for r in data.rejects[:20]:
            context.log.warning(f"rejected {r.source}:{r.line_no} (id={r.record_id}): {r.reason}")
        with warehouse.get_connection() as conn:
            write_corpus_sample(conn, corpus, chosen, data.rejects)
        n_heldout = sum(s == "heldout" for _, s in chosen)
        return dg.MaterializeResult(metadata={
            "corpus_docs": len(data.docs), "corpus_rejects": len(data.rejects), "sampled": len(chosen),
            "train": len(chosen) - n_heldout, "heldout": n_heldout, "seed": config.seed, "fraction": config.fraction,
        }, data_version=dg.DataVersion(digest(chosen)))

    return corpus_sample
