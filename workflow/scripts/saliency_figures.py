"""Per model of one dataset: a heatmap and an overlay figure of the first saliency maps."""

from medtransfer.protocols.saliency_maps import plot_saliency_figures
from medtransfer.runtime import log_to_file

log_to_file(snakemake.log[0])
# Inputs and outputs are expanded over the study's models in the same order.
plot_saliency_figures(maps=list(snakemake.input.maps), heatmaps=list(snakemake.output.heatmaps),
                      overlays=list(snakemake.output.overlays))
