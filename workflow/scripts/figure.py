"""One model x dataset heatmap per protocol, from the table (PNG and PDF)."""

from medtransfer.reporting.figures import plot_protocol
from medtransfer.runtime import log_to_file

log_to_file(snakemake.log[0])
plot_protocol(
    table=snakemake.input.table, out=snakemake.output.figure, pdf=snakemake.output.pdf,
    protocol=snakemake.wildcards.protocol, metric=snakemake.params.metric,
)
