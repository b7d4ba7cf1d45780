"""Write a seeded random LPIPS backbone in torchvision's file format (demo stand-in)."""

from medtransfer.protocols.reconstruct import write_demo_lpips_weights
from medtransfer.runtime import log_to_file

log_to_file(snakemake.log[0])
write_demo_lpips_weights(snakemake.output.weights, snakemake.params.net, seed=snakemake.params.seed)
