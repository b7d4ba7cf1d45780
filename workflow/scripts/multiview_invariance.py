"""Multi-view invariance of one model on one dataset, from the features stage."""

from medtransfer.protocols.invariance import evaluate_multiview
from medtransfer.runtime import log_to_file, set_threads

log_to_file(snakemake.log[0])
set_threads(snakemake.threads)
settings = snakemake.params.settings
evaluate_multiview(
    features=snakemake.input.features, index=snakemake.input.index, out_rows=snakemake.output.rows,
    out_predictions=snakemake.output.predictions, dataset=snakemake.wildcards.dataset,
    n_images=settings["n_images"], covariance=settings["covariance"], ridge=settings["ridge"],
    covariance_images=settings["covariance_images"],
    n_bootstrap=settings["n_bootstrap"], seed=snakemake.params.seed,
)
