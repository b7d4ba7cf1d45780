# Features: pooled penultimate features of every image, backbone in eval mode, once per
# (model, dataset); every frozen-feature protocol reuses them.


rule extract_features:
    input:
        weights=rules.convert_weights.output.weights,
        cache=rules.cache_images.output.cache,
        index=rules.index_dataset.output.index,
    output:
        features=paths.FEATURES,
    params:
        precision=CONFIG["precision"],
        device=CONFIG["device"],
        deterministic=CONFIG["deterministic"],
        compile=CONFIG["compile"],
        seed=CONFIG["seed"],
    log:
        paths.log("extract_features", "{model}/{dataset}"),
    benchmark:
        paths.benchmark("extract_features", "{model}/{dataset}")
    threads: 8
    resources:
        gpu=gpus,
        mem_mb=sized("extract_features", "mem_mb"),
        runtime=sized("extract_features", "runtime"),
    conda:
        "../../envs/torch.yaml"
    script:
        "../scripts/extract_features.py"
