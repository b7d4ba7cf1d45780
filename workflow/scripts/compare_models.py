"""Paired comparison of every model against the best on one (protocol, dataset, setting)."""

from medtransfer.common import log_to_file, set_threads
from medtransfer.compare import compare_models

log_to_file(snakemake.log[0])
set_threads(snakemake.threads)
models = snakemake.params.models
compare_models(
    predictions=dict(zip(models, snakemake.input.predictions)),
    rows_meta=dict(zip(models, snakemake.input.rows)), out=snakemake.output.rows,
    protocol=snakemake.wildcards.protocol, dataset=snakemake.wildcards.dataset,
    n_bootstrap=snakemake.params.n_bootstrap, seed=snakemake.params.seed,
)
