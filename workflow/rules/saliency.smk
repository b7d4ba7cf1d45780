# Saliency: occlusion maps of seeded test images from the decoded cache, attentive
# diffusion rows (compared paired over the images), and per (model, dataset) a heatmap and
# an overlay figure of the first images.


rule saliency:
    input:
        weights=rules.convert_weights.output.weights,
        cache=rules.cache_images.output.cache,
        index=rules.index_dataset.output.index,
        features=rules.extract_features.output.features,
    output:
        rows=paths.rows("saliency", setting="occlusion"),
        predictions=paths.predictions("saliency", setting="occlusion"),
        maps=paths.SALIENCY_MAPS,
    params:
        settings=protocol_settings("saliency"),
        device=CONFIG["device"],
        seed=CONFIG["seed"],
    log:
        paths.log("saliency", "{model}/{dataset}"),
    benchmark:
        paths.benchmark("saliency", "{model}/{dataset}")
    threads: 1
    resources:
        gpu=gpus,
        mem_mb=sized("saliency", "mem_mb"),
        runtime=sized("saliency", "runtime"),
    conda:
        "../../envs/torch.yaml"
    script:
        "../scripts/saliency.py"


rule saliency_figures:
    input:
        maps=saliency_maps,
    output:
        heatmaps=saliency_figure_paths("heatmap"),
        overlays=report(
            saliency_figure_paths("overlay"),
            caption="../report/saliency_overlay.rst",
            category="saliency",
            subcategory="{dataset}",
        ),
    log:
        paths.log("saliency_figures", "{dataset}"),
    benchmark:
        paths.benchmark("saliency_figures", "{dataset}")
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    conda:
        "../../envs/torch.yaml"
    script:
        "../scripts/saliency_figures.py"
