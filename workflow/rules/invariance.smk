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
        "logs/invariance/{model}/{dataset}.log",
    benchmark:
        "benchmarks/invariance/{model}/{dataset}.tsv"
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
        rows=registry.rows_path("invariance", setting="multiview"),
        predictions=registry.predictions_path("invariance", setting="multiview"),
    params:
        settings=protocol_settings("invariance"),
        seed=CONFIG["seed"],
    log:
        "logs/multiview_invariance/{model}/{dataset}.log",
    benchmark:
        "benchmarks/multiview_invariance/{model}/{dataset}.tsv"
    threads: 1
    resources:
        mem_mb=sized("multiview_invariance", "mem_mb"),
        runtime=sized("multiview_invariance", "runtime"),
    conda:
        "../../envs/torch.yaml"
    script:
        "../scripts/multiview_invariance.py"
