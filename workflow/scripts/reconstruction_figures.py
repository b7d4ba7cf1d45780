"""One dataset's reconstruction grid (originals, then one column per model) and LPIPS plot."""

from medtransfer.protocols.reconstruct import plot_grid, plot_lpips
from medtransfer.results import Predictions
from medtransfer.runtime import log_to_file

log_to_file(snakemake.log[0])
# Each predictions file names its model; the images file sits beside it in the same order.
models = [Predictions.load(p).model for p in snakemake.input.predictions]
plot_grid(dict(zip(models, snakemake.input.images)), snakemake.output.grid, snakemake.output.grid_pdf)
plot_lpips(dict(zip(models, snakemake.input.predictions)), snakemake.output.lpips, snakemake.output.lpips_pdf)
