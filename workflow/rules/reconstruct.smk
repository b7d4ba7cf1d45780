# Reconstruction: how much of an image each model's last feature map keeps. A deep-image-
# prior generator per image is optimised (all images of a (model, dataset) at once) until
# the frozen backbone's feature map of its output matches the original's; the results are
# scored with LPIPS (backbones from torchvision files fetched by download_weights), PSNR
# and SSIM, and drawn.


rule make_demo_lpips_weights:
    output:
        weights=paths.DEMO_LPIPS,
    params:
        net=lpips_net,
        seed=CONFIG["seed"],
    log:
        paths.log("make_demo_lpips_weights", "{net}/{filename}"),
    benchmark:
        paths.benchmark("make_demo_lpips_weights", "{net}/{filename}"),
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
        images=paths.RECONSTRUCTIONS,
    params:
        settings=protocol_settings("reconstruction"),
        device=CONFIG["device"],
        seed=CONFIG["seed"],
    log:
        paths.log("reconstruct", "{model}/{dataset}"),
    benchmark:
        paths.benchmark("reconstruct", "{model}/{dataset}")
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
        rows=paths.rows("reconstruction", setting="dip"),
        predictions=paths.predictions("reconstruction", setting="dip"),
    params:
        settings=protocol_settings("reconstruction"),
        device=CONFIG["device"],
        seed=CONFIG["seed"],
    log:
        paths.log("score_reconstruction", "{model}/{dataset}"),
    benchmark:
        paths.benchmark("score_reconstruction", "{model}/{dataset}")
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
            paths.RECONSTRUCTION_GRID,
            caption="../report/reconstruction_grid.rst",
            category="reconstruction",
            subcategory="{dataset}",
        ),
        grid_pdf=paths.RECONSTRUCTION_GRID_PDF,
        lpips=report(
            paths.RECONSTRUCTION_LPIPS,
            caption="../report/reconstruction_lpips.rst",
            category="reconstruction",
            subcategory="{dataset}",
        ),
        lpips_pdf=paths.RECONSTRUCTION_LPIPS_PDF,
    log:
        paths.log("reconstruction_figures", "{dataset}"),
    benchmark:
        paths.benchmark("reconstruction_figures", "{dataset}"),
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    conda:
        "../../envs/torch.yaml"
    script:
        "../scripts/reconstruction_figures.py"
