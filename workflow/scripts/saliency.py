"""Occlusion saliency and attentive diffusion of one model on seeded test images of one dataset."""

from medtransfer.protocols.saliency import evaluate_saliency
from medtransfer.runtime import log_to_file, set_threads

log_to_file(snakemake.log[0])
set_threads(snakemake.threads)
settings = snakemake.params.settings
evaluate_saliency(
    weights=snakemake.input.weights, cache=snakemake.input.cache, index=snakemake.input.index,
    features=snakemake.input.features, out_rows=snakemake.output.rows,
    out_predictions=snakemake.output.predictions, out_maps=snakemake.output.maps,
    model=snakemake.wildcards.model, dataset=snakemake.wildcards.dataset, n_images=settings["n_images"],
    input_size=settings["input_size"], crop_size=settings["crop_size"], window=settings["window"],
    stride=settings["stride"], batch_size=settings["batch_size"], n_bootstrap=settings["n_bootstrap"],
    seed=snakemake.params.seed, device=snakemake.params.device,
)
