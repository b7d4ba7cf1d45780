"""Finetune one model on one dataset and evaluate it on the test split."""

from medtransfer.protocols.finetune import evaluate_finetune
from medtransfer.runtime import log_to_file, set_threads

log_to_file(snakemake.log[0])
set_threads(snakemake.threads)
evaluate_finetune(
    weights=snakemake.input.weights, cache=snakemake.input.cache, index=snakemake.input.index,
    rows=snakemake.output.rows, predictions=snakemake.output.predictions,
    model=snakemake.wildcards.model, dataset=snakemake.wildcards.dataset,
    precision=snakemake.params.precision, device=snakemake.params.device,
    deterministic=snakemake.params.deterministic, full_cache=snakemake.input.get("full_cache"),
    seed=snakemake.params.seed, metric=snakemake.params.metric, **snakemake.params.settings,
)
