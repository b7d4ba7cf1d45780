"""Paired comparison of every model against the best on one (protocol, dataset, setting)."""

from medtransfer.reporting.compare import compare_models
from medtransfer.runtime import log_to_file, set_threads

log_to_file(snakemake.log[0])
set_threads(snakemake.threads)
compare_models(
    predictions=list(snakemake.input.predictions), rows=list(snakemake.input.rows),
    out=snakemake.output.rows, protocol=snakemake.wildcards.protocol, dataset=snakemake.wildcards.dataset,
    metric=snakemake.params.metric, n_bootstrap=snakemake.params.n_bootstrap, seed=snakemake.params.seed,
)
