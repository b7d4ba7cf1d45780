# Invariance: whitened cosine similarity and Mahalanobis distance between the features of
# an image and of its transforms (applied to the whole image from the finetune stage's
# whole-image cache, before the crop), and between two views of one case (multiview, from
# the features stage). Whitening statistics are the features stage's.


rule invariance:
    input:
        weights=rules.convert_weights.output.weights,
        full=rules.cache_full_images.output.full,
        hw=rules.cache_full_images.output.hw,
        index=rules.index_dataset.output.index,
        features=rules.extract_features.output.features,
    output:
        rows=invariance_outputs("rows"),
        predictions=invariance_outputs("predictions"),
    params:
        settings=protocol_settings("invariance"),
        transforms=STUDY.transforms(),
        size=CONFIG["image_size"],
        device=CONFIG["device"],
        seed=CONFIG["seed"],
    log:
        paths.log("invariance", "{model}/{dataset}"),
    benchmark:
        paths.benchmark("invariance", "{model}/{dataset}")
    threads: 1
    resources:
        gpu=gpus,
        mem_mb=sized("invariance", "mem_mb"),
        runtime=sized("invariance", "runtime"),
    conda:
        "../../envs/torch.yaml"
    script:
        "../scripts/invariance.py"


rule multiview_invariance:
    input:
        features=rules.extract_features.output.features,
        index=rules.index_dataset.output.index,
    output:
        rows=paths.rows("invariance", setting="multiview"),
        predictions=paths.predictions("invariance", setting="multiview"),
    params:
        settings=protocol_settings("invariance"),
        seed=CONFIG["seed"],
    log:
        paths.log("multiview_invariance", "{model}/{dataset}"),
    benchmark:
        paths.benchmark("multiview_invariance", "{model}/{dataset}")
    threads: 1
    resources:
        mem_mb=sized("multiview_invariance", "mem_mb"),
        runtime=sized("multiview_invariance", "runtime"),
    conda:
        "../../envs/torch.yaml"
    script:
        "../scripts/multiview_invariance.py"
