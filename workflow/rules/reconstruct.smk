# Reconstruction: how much of an image each model's last feature map keeps. A deep-image-
# prior generator per image is optimised (all images of a (model, dataset) at once) until
# the frozen backbone's feature map of its output matches the original's; the results are
# scored with LPIPS (backbones from torchvision files fetched by download_weights), PSNR
# and SSIM, and drawn.


rule make_demo_lpips_weights:
    output:
        weights="resources/demo/weights/lpips-{net}/{filename}",
    params:
        net=lpips_net,
        seed=CONFIG["seed"],
    log:
        "logs/make_demo_lpips_weights/{net}/{filename}.log",
    benchmark:
        "benchmarks/make_demo_lpips_weights/{net}/{filename}.tsv",
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    conda:
        "../../envs/torch.yaml"
    script:
        "../scripts/make_demo_lpips_weights.py"


rule reconstruct:
    input:
        weights=rules.convert_weights.output.weights,
        cache=rules.cache_images.output.cache,
        index=rules.index_dataset.output.index,
    output:
        images="results/reconstruction/{model}/{dataset}/images.npz",
    params:
        settings=protocol_settings("reconstruction"),
        device=CONFIG["device"],
        seed=CONFIG["seed"],
    log:
        "logs/reconstruct/{model}/{dataset}.log",
    benchmark:
        "benchmarks/reconstruct/{model}/{dataset}.tsv"
    threads: 1
    resources:
        gpu=gpus,
        mem_mb=sized("reconstruct", "mem_mb"),
        runtime=sized("reconstruct", "runtime"),
    conda:
        "../../envs/torch.yaml"
    script:
        "../scripts/reconstruct.py"


rule score_reconstruction:
    input:
        unpack(lpips_weights),
        images=rules.reconstruct.output.images,
    output:
        rows=registry.rows_path("reconstruction", setting="dip"),
        predictions=registry.predictions_path("reconstruction", setting="dip"),
    params:
        settings=protocol_settings("reconstruction"),
        device=CONFIG["device"],
        seed=CONFIG["seed"],
    log:
        "logs/score_reconstruction/{model}/{dataset}.log",
    benchmark:
        "benchmarks/score_reconstruction/{model}/{dataset}.tsv"
    threads: 1
    resources:
        gpu=gpus,
        mem_mb=sized("score_reconstruction", "mem_mb"),
        runtime=sized("score_reconstruction", "runtime"),
    conda:
        "../../envs/torch.yaml"
    script:
        "../scripts/score_reconstruction.py"


rule reconstruction_figures:
    input:
        unpack(reconstruction_inputs),
    output:
        grid=report(
            "reports/figures/reconstruction/{dataset}_grid.png",
            caption="../report/reconstruction_grid.rst",
            category="reconstruction",
            subcategory="{dataset}",
        ),
        grid_pdf="reports/figures/reconstruction/{dataset}_grid.pdf",
        lpips=report(
            "reports/figures/reconstruction/{dataset}_lpips.png",
            caption="../report/reconstruction_lpips.rst",
            category="reconstruction",
            subcategory="{dataset}",
        ),
        lpips_pdf="reports/figures/reconstruction/{dataset}_lpips.pdf",
    log:
        "logs/reconstruction_figures/{dataset}.log",
    benchmark:
        "benchmarks/reconstruction_figures/{dataset}.tsv",
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    conda:
        "../../envs/torch.yaml"
    script:
        "../scripts/reconstruction_figures.py"
