"""One scatter figure per explanatory measure: transfer against it, a point per model, the fitted line."""

from medtransfer.reporting.correlate import plot_all_correlations
from medtransfer.runtime import log_to_file

log_to_file(snakemake.log[0])
# The outputs are expanded over the measures in the same order.
plot_all_correlations(
    table=snakemake.input.table, outs=dict(zip(snakemake.params.measures, snakemake.output.figures)),
    top1=snakemake.params.top1, headline=snakemake.params.headline, exclude=snakemake.params.exclude,
)
