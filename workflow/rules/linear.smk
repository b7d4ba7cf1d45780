# Linear probe (manyshot): logistic regression on frozen features, C selected on a
# seeded train/val split of the training set, refit, test once.


rule linear_probe:
    input:
        features=rules.extract_features.output.features,
    output:
        rows=paths.rows("linear", setting=registry.MANYSHOT),
        predictions=paths.predictions("linear", setting=registry.MANYSHOT),
    params:
        settings=protocol_settings("linear"),
        metric=dataset_metric,
        device=CONFIG["device"],
        seed=CONFIG["seed"],
    log:
        paths.log("linear_probe", "{model}/{dataset}"),
    benchmark:
        paths.benchmark("linear_probe", "{model}/{dataset}")
    threads: 2
    resources:
        mem_mb=sized("linear_probe", "mem_mb"),
        runtime=sized("linear_probe", "runtime"),
    conda:
        "../../envs/torch.yaml"
    script:
        "../scripts/linear_probe.py"
