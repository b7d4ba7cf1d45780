"""Radar chart of one model's headline metric across protocols and datasets."""

from medtransfer.reporting.figures import plot_radar
from medtransfer.runtime import log_to_file

log_to_file(snakemake.log[0])
plot_radar(cells=snakemake.input.cells, png=snakemake.output.png, pdf=snakemake.output.pdf,
           model=snakemake.wildcards.model)
