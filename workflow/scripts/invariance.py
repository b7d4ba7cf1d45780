"""Synthetic-transform invariance of one model on one dataset: one rows/predictions file per transform."""

from medtransfer.protocols.invariance import evaluate_invariance
from medtransfer.runtime import log_to_file, set_threads

log_to_file(snakemake.log[0])
set_threads(snakemake.threads)
settings = snakemake.params.settings
names = snakemake.params.transforms  # the order of the rule's outputs
evaluate_invariance(
    weights=snakemake.input.weights, full_cache=snakemake.input.full, index=snakemake.input.index,
    out_rows=dict(zip(names, snakemake.output.rows)),
    out_predictions=dict(zip(names, snakemake.output.predictions)), model=snakemake.wildcards.model,
    dataset=snakemake.wildcards.dataset, size=snakemake.params.size,
    transforms={name: settings["transforms"][name] for name in names}, n_images=settings["n_images"],
    covariance=settings["covariance"], ridge=settings["ridge"],
    covariance_images=settings["covariance_images"], batch_size=settings["batch_size"],
    n_bootstrap=settings["n_bootstrap"], seed=snakemake.params.seed, device=snakemake.params.device,
)
