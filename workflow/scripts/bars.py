"""Bar chart of the headline metric with 95% CIs per dataset, for one protocol."""

from medtransfer.reporting.figures import plot_bars
from medtransfer.runtime import log_to_file

log_to_file(snakemake.log[0])
plot_bars(cells=snakemake.input.cells, png=snakemake.output.png, pdf=snakemake.output.pdf,
          protocol=snakemake.wildcards.protocol)
