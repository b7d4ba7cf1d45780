"""Score one model's reconstructions of one dataset: LPIPS (three backbones), PSNR, SSIM."""

from medtransfer.protocols.reconstruct import score
from medtransfer.runtime import log_to_file, set_threads

log_to_file(snakemake.log[0])
set_threads(snakemake.threads)
score(
    reconstructions_npz=snakemake.input.images,
    lpips_weights={net: snakemake.input[net] for net in ("alex", "vgg", "squeeze")},
    out_rows_csv=snakemake.output.rows, out_predictions_npz=snakemake.output.predictions,
    seed=snakemake.params.seed, n_bootstrap=snakemake.params.settings["n_bootstrap"],
    device=snakemake.params.device,
)
