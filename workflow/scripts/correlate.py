"""Correlations across models between transfer scores and the explanatory measures."""

from medtransfer.reporting.correlate import correlate
from medtransfer.runtime import log_to_file

log_to_file(snakemake.log[0])
correlate(
    rows=list(snakemake.input.rows), out=snakemake.output.rows, top1=snakemake.params.top1,
    headline=snakemake.params.headline, n_bootstrap=snakemake.params.settings["n_bootstrap"],
    seed=snakemake.params.seed, exclude=snakemake.params.exclude, same_data=snakemake.params.same_data,
    top1_source=snakemake.params.top1_source,
)
