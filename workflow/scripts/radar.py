"""Radar chart of one model's headline metric across protocols and datasets."""

from medtransfer.runtime import log_to_file
from medtransfer.reporting.figures import plot_radar

log_to_file(snakemake.log[0])
plot_radar(cells=snakemake.input.cells, png=snakemake.output.png, pdf=snakemake.output.pdf,
           model=snakemake.wildcards.model)
